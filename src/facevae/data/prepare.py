"""CelebA (folder, zip, CSV variant, torchvision layout) → packed dataset.

Decoding is the cost, so it runs in worker processes, each writing its chunk straight into the
output file; the main process only records which chunks are done, which is what lets an
interrupted preparation pick up where it stopped. JPEGs are decoded at a reduced DCT scale when
that still leaves the crop at least as large as the target (libjpeg's ``draft`` mode), which is
several times cheaper than decoding all 178×218 pixels and then throwing most of them away.

One preparation at a time writes into an output folder (a lock file there names the holder).
The output's disk space is checked and reserved before anything is decoded. Ctrl-C and SIGTERM
stop it cleanly, keeping the finished chunks, and so does a decoder process that dies: each says
how to continue.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps
from tqdm.auto import tqdm

from facevae.common.errors import DatasetError
from facevae.common.files import make_dir, write_json_atomic
from facevae.common.lock import hold
from facevae.data.attributes import PARTITION_NAMES
from facevae.data.celeba_files import Annotations, CelebaLayout, ImageSource, find_layout, read_annotations
from facevae.data.packed import PackedDataset, PackedWriter, disk_full_as_error

CELEBA_CROP = 148
# A face image whose pixels barely vary (blank, one colour) is flagged, not dropped: the user decides.
QUASI_CONSTANT_STD = 2.0
LISTED = 50  # how many problem files the report names; the counts are always complete


@dataclass
class PrepareOptions:
    size: int = 64
    crop: int = CELEBA_CROP
    workers: int = 0  # 0: one per core
    chunk: int = 512
    fast_decode: bool = True

    def describe(self) -> str:
        decode = "reduced-scale JPEG decode" if self.fast_decode else "full JPEG decode"
        return f"centre crop {self.crop}, antialiased bilinear resize to {self.size}x{self.size}, {decode}"


def decode_face(data: bytes, size: int, crop: int = CELEBA_CROP, fast: bool = True) -> np.ndarray:
    """JPEG bytes → centre-cropped, resized uint8 (size, size, 3), upright by its EXIF orientation.

    Raises on an undecodable file, and on one with more pixels than Pillow's decompression-bomb limit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow would only warn, then decode it all
        img = Image.open(io.BytesIO(data))
    with img:
        width, height = img.size
        side = min(crop, width, height)
        if fast:
            img.draft("RGB", (math.ceil(width * size / side), math.ceil(height * size / side)))
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        rgb = to_rgb(ImageOps.exif_transpose(img) if orientation != 1 else img)
    if orientation in (5, 6, 7, 8):  # a quarter turn: the picture is as wide as the file is high
        width, height = height, width
    sx, sy = rgb.width / width, rgb.height / height
    left, top = round((width - side) / 2), round((height - side) / 2)  # torchvision's CenterCrop
    box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, box=box))


# What a transparent pixel shows: the page a cut-out face would be seen on.
TRANSPARENT_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of an image in any mode Pillow reads, its tones kept.

    ``Image.convert("RGB")`` clips wider samples to 255 instead of scaling them, so a mid-grey 16-bit
    PNG (I;16, 32768) comes out white; here 16-bit and 32-bit integer samples and floats are scaled
    (see :func:`_samples_to_uint8`). Transparent pixels (LA, PA, RGBA, P or L or RGB with a
    transparency key) are laid over TRANSPARENT_BACKGROUND instead of showing whatever colour they
    hold; every other mode (1, L, P, CMYK, YCbCr, ...) goes through Pillow's own conversion.
    """
    mode = img.mode
    if mode.startswith("I") or mode.startswith("F"):
        gray = _samples_to_uint8(np.asarray(img), mode)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "RGB" and "transparency" not in img.info:
        return img.copy()  # as convert would: the caller may close ``img`` (its file) before using the result
    if "A" in mode or "a" in mode or "transparency" in img.info:
        page = Image.new("RGBA", img.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(page, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def _samples_to_uint8(samples: np.ndarray, mode: str) -> np.ndarray:
    """One channel of 16-bit (I;16*), 32-bit integer (I) or float (F) samples as uint8, 0 → 0 and full scale → 255.

    Full scale is 65535 for I;16 and for an I image whose values fit in 16 bits (16-bit PGM and TIFF
    open as I); a float image is taken as [0, 1] when it fits there, else as [0, 255], else as 16-bit;
    values beyond all of those (or negative) are stretched from their minimum to their maximum.
    """
    values = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        full = 65535.0
    elif mode.startswith("F") and low >= 0 and high <= 1:
        full = 1.0
    elif mode.startswith("F") and low >= 0 and high <= 255:
        full = 255.0
    elif low >= 0 and high <= 65535:
        full = 65535.0
    else:
        values, full = values - low, max(high - low, 1e-12)
    return np.clip(np.round(values * (255.0 / full)), 0, 255).astype(np.uint8)


# --- worker side ----------------------------------------------------------------------------------
_worker: dict = {}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(source: ImageSource, writer: PackedWriter, options: PrepareOptions) -> None:
    _worker.update(source=source.for_worker(), writer=writer, options=options)


def _init_pool_worker(source: ImageSource, writer: PackedWriter, options: PrepareOptions) -> None:
    # Ctrl-C reaches the whole process group: the main process stops the pool and the workers
    # finish their chunk. SIGTERM gets its default back (a forked worker inherits the main
    # process's handler), so that the pool can still stop a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _stop_with_main_process()
    _init_worker(source, writer, options)


def _stop_with_main_process() -> None:
    """On Linux, a worker whose main process is killed outright (SIGKILL, the OOM killer) is killed too.

    It would otherwise wait forever for work: its siblings keep the task pipe open.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os._exit(1)


def _process_chunk(task: tuple[int, list[str | None]]):
    """Decode one chunk into its rows of the output; returns the problems found."""
    start, names = task
    source: ImageSource = _worker["source"]
    writer: PackedWriter = _worker["writer"]
    options: PrepareOptions = _worker["options"]
    window = writer.rows(start, start + len(names))
    bad, flat = [], []
    for offset, name in enumerate(names):
        if name is None:  # missing from the image source; already counted by the caller
            continue
        try:
            face = decode_face(source.read(name), options.size, options.crop, options.fast_decode)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a bad file, never a crash
            bad.append((start + offset, name, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        window[offset] = face
        std = float(face.std())
        if std < QUASI_CONSTANT_STD:
            flat.append((start + offset, name, round(std, 3)))
    window.flush()
    del window
    return start, bad, flat


# --- main side ------------------------------------------------------------------------------------
class PreparationInterrupted(DatasetError):
    """Ctrl-C or SIGTERM stopped a preparation; its finished chunks are kept. ``signum``: which one."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both stop the same way."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can have signal handlers; SIGTERM keeps its default
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM stops at once
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _fingerprint(image_ids: list[str], options: PrepareOptions, source: str) -> str:
    digest = hashlib.sha1("\n".join(image_ids).encode())
    digest.update(json.dumps([asdict(options) | {"workers": None}, source], sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class _Source:
    """The annotated images, and which of them the image source has."""

    layout: CelebaLayout
    ann: Annotations
    names: list[str | None]  # per annotation row: the image's name in the source, None where missing
    missing: list[str]
    unannotated: list[str]
    factors: dict  # fake-celeba's ground truth, as finalize's keyword arguments; read before any decoding

    @classmethod
    def read(cls, src: str | os.PathLike) -> "_Source":
        layout = find_layout(src)
        ann = read_annotations(layout)
        present = layout.images.names()
        names = [image_id if image_id in present else None for image_id in ann.image_ids]
        missing = [image_id for image_id, name in zip(ann.image_ids, names) if name is None]
        annotated = set(ann.image_ids)
        unannotated = sorted(
            n for n in present if n not in annotated and n.lower().endswith((".jpg", ".jpeg", ".png"))
        )
        return cls(layout, ann, names, missing, unannotated, _synthetic_factors(layout.root, len(names)))


class _ChunkLog:
    """The finished chunks and the problems they found, saved after each chunk so that a rerun continues."""

    def __init__(self, out: Path, fingerprint: str):
        self.out = out
        self.path = out / ".partial" / "progress.json"
        try:
            state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            state = None
        self.resumed = state is not None and state.get("fingerprint") == fingerprint
        self.fingerprint = fingerprint
        self.state = state if self.resumed else self._empty()

    def _empty(self) -> dict:
        return {"fingerprint": self.fingerprint, "done": [], "bad": [], "flat": []}

    def restart(self) -> None:
        self.state = self._empty()

    def save(self) -> None:
        with disk_full_as_error(self.out, f"; free some space, then {self.how_to_continue()}"):
            write_json_atomic(self.path, self.state)

    def record(self, result: tuple[int, list, list]) -> None:
        start, bad, flat = result
        self.state["done"].append(start)
        self.state["bad"] += bad
        self.state["flat"] += flat
        self.save()

    def how_to_continue(self) -> str:
        return f"run the same command again to continue from {self._saved_chunks()} finished chunks"

    def _saved_chunks(self) -> int:
        """The finished chunks a rerun will find (a signal can arrive between a save and ``state``)."""
        try:
            saved = json.loads(self.path.read_text())
            return len(saved["done"]) if saved["fingerprint"] == self.fingerprint else 0
        except (OSError, ValueError, KeyError, TypeError):
            return 0


def _synthetic_factors(root: Path, count: int) -> dict:
    """Ground-truth factors that ``facevae data fake-celeba`` leaves beside its images, as ``finalize``'s
    keyword arguments; none where the files are absent or describe another number of images."""
    info_path, factors_path = root / "synthetic_factors.json", root / "factors.npy"
    if not (info_path.is_file() and factors_path.is_file()):
        return {}
    try:
        factors = np.load(factors_path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise DatasetError(f"{factors_path}: damaged, cannot be read ({exc})") from None
    try:
        info = json.loads(info_path.read_text())
        names, sizes = list(info["factor_names"]), [int(s) for s in info["factor_sizes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{info_path}: not a description of factors.npy ({type(exc).__name__}: {exc})") from None
    if factors.ndim != 2 or factors.shape[1] != len(names) or len(sizes) != len(names):
        raise DatasetError(f"{factors_path}: shape {factors.shape} does not match the {len(names)} factors of "
                           f"{info_path.name}")
    return dict(factors=factors, factor_names=names, factor_sizes=sizes) if len(factors) == count else {}


def _refuse_finished(out: Path, overwrite: bool) -> None:
    if (out / "meta.json").exists() and not overwrite:
        raise DatasetError(f"{out}: already holds a packed dataset; pass --overwrite to replace it")


def prepare_celeba(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[PackedDataset, dict]:
    """Pack CelebA at ``src`` into ``out``; returns the dataset and its integrity report.

    Raises DatasetError when ``out`` is being prepared by another process, lacks the disk space,
    or a decoder process dies, and PreparationInterrupted (a DatasetError) on Ctrl-C or SIGTERM.
    Run again, a preparation that stopped early continues from its finished chunks.
    """
    options = options or PrepareOptions()
    out = Path(out)
    _refuse_finished(out, overwrite)
    started = time.perf_counter()
    source = _Source.read(src)
    with disk_full_as_error(out):  # even the folder and the lock file need a little room
        make_dir(out)
    with disk_full_as_error(out), hold(out, what="preparing a dataset"), _sigterm_as_interrupt():
        _refuse_finished(out, overwrite)  # again: another preparation may have finished it meanwhile
        log = _ChunkLog(out, _fingerprint(source.ann.image_ids, options, source.layout.images.describe()))
        try:
            writer = PackedWriter(out, len(source.names), options.size, options.size, resume=log.resumed)
            if not writer.resumed:  # the images of the finished chunks are gone (or there were none)
                log.restart()
            log.save()
            _decode(source, writer, options, log, progress)
            return _finalize(source, writer, options, log, started)
        except KeyboardInterrupt as exc:
            signum = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
            raise PreparationInterrupted(f"{out}: interrupted; {log.how_to_continue()}", signum) from None


def _decode(source: _Source, writer: PackedWriter, options: PrepareOptions, log: _ChunkLog, progress: bool) -> None:
    """Decode the chunks not finished yet into ``writer``'s rows, recording each in ``log``."""
    count = len(source.names)
    done = set(log.state["done"])
    tasks = [(s, source.names[s : s + options.chunk]) for s in range(0, count, options.chunk) if s not in done]
    workers = min(options.workers or os.cpu_count() or 1, max(len(tasks), 1))
    bar = tqdm(total=count, initial=count - sum(len(t[1]) for t in tasks), unit="img",
               desc="prepare", disable=not progress, smoothing=0.05)

    def record(result) -> None:
        log.record(result)
        bar.update(min(options.chunk, count - result[0]))

    init_args = (source.layout.images, writer, options)
    try:
        if workers <= 1:
            _init_worker(*init_args)
            for task in tasks:
                record(_process_chunk(task))
        else:
            _decode_in_pool(tasks, workers, init_args, record, log)
    finally:
        bar.close()


def _decode_in_pool(tasks: list, workers: int, init_args: tuple, record: Callable, log: _ChunkLog) -> None:
    # fork shares the parsed annotations for free; spawn where fork is unavailable.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    # A ProcessPoolExecutor notices a worker that dies (multiprocessing.Pool waits forever for its chunk).
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_pool_worker,
                               initargs=init_args)
    futures: list[Future] = []
    recorded: set[Future] = set()
    try:
        for task in tasks:
            futures.append(pool.submit(_process_chunk, task))
        for future in as_completed(futures):
            record(future.result())
            recorded.add(future)
    except BrokenProcessPool:
        _record_finished(futures, recorded, record)
        raise DatasetError(
            f"{log.out}: a decoder process died (killed from outside, or for lack of memory); {log.how_to_continue()}"
        ) from None
    except KeyboardInterrupt:
        # The workers ignore Ctrl-C and finish the chunks they started: keep those too.
        pool.shutdown(wait=True, cancel_futures=True)
        _record_finished(futures, recorded, record)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record_finished(futures: list[Future], recorded: set[Future], record: Callable) -> None:
    """Record the chunks that finished but were not recorded yet, when the pool stops early."""
    for future in futures:
        if future not in recorded and future.done() and not future.cancelled() and future.exception() is None:
            record(future.result())
            recorded.add(future)


def _finalize(
    source: _Source, writer: PackedWriter, options: PrepareOptions, log: _ChunkLog, started: float
) -> tuple[PackedDataset, dict]:
    """Drop the missing and undecodable rows, write the annotations and the integrity report."""
    state = log.state
    bad_rows = {row for row, _, _ in state["bad"]}
    keep = np.array([name is not None and i not in bad_rows for i, name in enumerate(source.names)])
    report = _integrity_report(source.layout, source.ann, options, keep, source.missing, source.unannotated,
                               state, time.perf_counter() - started)
    dataset = writer.finalize(
        attributes=source.ann.attributes,
        attribute_names=source.ann.attribute_names,
        keep=keep,
        partition=source.ann.partition,
        image_ids=source.ann.image_ids,
        source=f"celeba: {source.layout.images.describe()}",
        preprocessing=options.describe(),
        integrity=report,
        **source.factors,
    )
    return dataset, report


def _integrity_report(layout, ann, options, keep, missing, unannotated, state, seconds) -> dict:
    kept_attributes = ann.attributes[keep]
    rates = kept_attributes.mean(axis=0) if len(kept_attributes) else np.zeros(len(ann.attribute_names))
    constant = [name for name, rate in zip(ann.attribute_names, rates) if rate in (0.0, 1.0)]
    partition_counts = {
        name: int(((ann.partition == i) & keep).sum()) for i, name in enumerate(PARTITION_NAMES)
    }
    if (ann.partition < 0).any():
        partition_counts["none"] = int(((ann.partition < 0) & keep).sum())
    bad = sorted(state["bad"])
    flat = sorted(state["flat"])
    return {
        "source": layout.describe(),
        "annotation_files": ann.files,
        "preprocessing": options.describe(),
        "annotation_rows": len(ann.image_ids),
        "images_found": len(ann.image_ids) - len(missing) + len(unannotated),
        "count_matches": not missing and not unannotated,
        "missing_images": {"count": len(missing), "names": missing[:LISTED]},
        "unannotated_images": {"count": len(unannotated), "names": unannotated[:LISTED]},
        "attributes_binary": True,  # the parser rejects anything but -1/1
        "missing_values": 0,  # likewise: a short row is an error that names its line
        "constant_attributes": constant,
        "corrupt_images": {"count": len(bad), "files": [{"name": n, "reason": r} for _, n, r in bad[:LISTED]]},
        "quasi_constant_images": {
            "count": len(flat),
            "threshold_std": QUASI_CONSTANT_STD,
            "files": [{"name": n, "std": s} for _, n, s in flat[:LISTED]],
        },
        "written": int(keep.sum()),
        "partition_counts": partition_counts,
        "seconds": round(seconds, 2),
    }


def format_integrity(report: dict) -> str:
    """The integrity report as a few lines for the terminal."""
    ok = lambda flag: "ok" if flag else "CHECK"  # noqa: E731
    flat = report["quasi_constant_images"]
    lines = [
        f"annotation rows      {report['annotation_rows']}",
        f"images found         {report['images_found']}  [{ok(report['count_matches'])}]",
        f"missing images       {report['missing_images']['count']}",
        f"unannotated images   {report['unannotated_images']['count']}",
        f"attributes binary    {ok(report['attributes_binary'])}; missing values {report['missing_values']}",
        f"corrupt images       {report['corrupt_images']['count']} skipped",
        f"quasi-constant       {flat['count']} flagged (std < {flat['threshold_std']})",
        f"written              {report['written']}  {report['partition_counts']}",
    ]
    if report.get("constant_attributes"):
        lines.append(f"constant attributes  {', '.join(report['constant_attributes'])}")
    for entry in report["corrupt_images"]["files"][:10]:
        lines.append(f"  skipped {entry['name']}: {entry['reason']}")
    return "\n".join(lines)
