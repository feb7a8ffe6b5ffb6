"""CelebA (folder, zip, CSV variant, torchvision layout) → packed dataset.

Decoding is the cost, so it runs in worker processes, each writing its chunk straight into the
output file; the main process only records which chunks are done, which is what lets an
interrupted preparation pick up where it stopped. JPEGs are decoded at a reduced DCT scale when
that still leaves the crop at least as large as the target (libjpeg's ``draft`` mode), which is
several times cheaper than decoding all 178×218 pixels and then throwing most of them away.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from facevae.common.errors import DatasetError
from facevae.common.files import write_json_atomic
from facevae.data.attributes import PARTITION_NAMES
from facevae.data.celeba_files import ImageSource, find_layout, read_annotations
from facevae.data.packed import PackedDataset, PackedWriter

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
    """JPEG bytes → centre-cropped, resized uint8 (size, size, 3). Raises on an undecodable file."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        side = min(crop, width, height)
        if fast:
            img.draft("RGB", (math.ceil(width * size / side), math.ceil(height * size / side)))
        rgb = img.convert("RGB")
    sx, sy = rgb.width / width, rgb.height / height
    left, top = round((width - side) / 2), round((height - side) / 2)  # torchvision's CenterCrop
    box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, box=box))


# --- worker side ----------------------------------------------------------------------------------
_worker: dict = {}


def _init_worker(source: ImageSource, writer: PackedWriter, options: PrepareOptions) -> None:
    _worker.update(source=source.for_worker(), writer=writer, options=options)


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
def _fingerprint(image_ids: list[str], options: PrepareOptions, source: str) -> str:
    digest = hashlib.sha1("\n".join(image_ids).encode())
    digest.update(json.dumps([asdict(options) | {"workers": None}, source], sort_keys=True).encode())
    return digest.hexdigest()


def _load_progress(path: Path, fingerprint: str) -> dict | None:
    try:
        progress = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return progress if progress.get("fingerprint") == fingerprint else None


def _synthetic_factors(root: Path, count: int) -> tuple[np.ndarray, dict] | None:
    """Ground-truth factors that ``facevae data fake-celeba`` leaves beside its images."""
    info_path, factors_path = root / "synthetic_factors.json", root / "factors.npy"
    if not (info_path.is_file() and factors_path.is_file()):
        return None
    factors = np.load(factors_path)
    return (factors, json.loads(info_path.read_text())) if len(factors) == count else None


def prepare_celeba(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[PackedDataset, dict]:
    """Pack CelebA at ``src`` into ``out``; returns the dataset and its integrity report."""
    options = options or PrepareOptions()
    out = Path(out)
    if (out / "meta.json").exists() and not overwrite:
        raise DatasetError(f"{out}: already holds a packed dataset; pass --overwrite to replace it")
    started = time.perf_counter()
    layout = find_layout(src)
    ann = read_annotations(layout)
    present = layout.images.names()
    names = [image_id if image_id in present else None for image_id in ann.image_ids]
    missing = [image_id for image_id, name in zip(ann.image_ids, names) if name is None]
    annotated = set(ann.image_ids)
    unannotated = sorted(n for n in present if n not in annotated and n.lower().endswith((".jpg", ".jpeg", ".png")))

    count = len(ann.image_ids)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(ann.image_ids, options, layout.images.describe())
    progress_path = out / ".partial" / "progress.json"
    state = _load_progress(progress_path, fingerprint)
    writer = PackedWriter(out, count, options.size, options.size, resume=state is not None)
    state = state or {"fingerprint": fingerprint, "done": [], "bad": [], "flat": []}
    write_json_atomic(progress_path, state)

    done = set(state["done"])
    tasks = [(s, names[s : s + options.chunk]) for s in range(0, count, options.chunk) if s not in done]
    workers = min(options.workers or os.cpu_count() or 1, max(len(tasks), 1))
    bar = tqdm(total=count, initial=count - sum(len(t[1]) for t in tasks), unit="img",
               desc="prepare", disable=not progress, smoothing=0.05)

    def record(result) -> None:
        start, bad, flat = result
        state["done"].append(start)
        state["bad"] += bad
        state["flat"] += flat
        write_json_atomic(progress_path, state)
        bar.update(min(options.chunk, count - start))

    try:
        if workers <= 1:
            _init_worker(layout.images, writer, options)
            for task in tasks:
                record(_process_chunk(task))
        else:
            # fork shares the parsed annotations for free; spawn where fork is unavailable.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers, _init_worker, (layout.images, writer, options)) as pool:
                for result in pool.imap_unordered(_process_chunk, tasks):
                    record(result)
    except KeyboardInterrupt:
        bar.close()
        raise DatasetError(f"interrupted; run the same command again to continue from {len(state['done'])} finished chunks") from None
    bar.close()

    bad_rows = {row for row, _, _ in state["bad"]}
    keep = np.array([name is not None and i not in bad_rows for i, name in enumerate(names)])
    report = _integrity_report(layout, ann, options, keep, missing, unannotated, state, time.perf_counter() - started)
    synthetic = _synthetic_factors(layout.root, count)
    factor_kwargs = {}
    if synthetic is not None:
        factors, info = synthetic
        factor_kwargs = dict(factors=factors, factor_names=info["factor_names"], factor_sizes=info["factor_sizes"])
    dataset = writer.finalize(
        attributes=ann.attributes,
        attribute_names=ann.attribute_names,
        keep=keep,
        partition=ann.partition,
        image_ids=ann.image_ids,
        source=f"celeba: {layout.images.describe()}",
        preprocessing=options.describe(),
        integrity=report,
        **factor_kwargs,
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
    lines = [
        f"annotation rows      {report['annotation_rows']}",
        f"images found         {report['images_found']}  [{ok(report['count_matches'])}]",
        f"missing images       {report['missing_images']['count']}",
        f"unannotated images   {report['unannotated_images']['count']}",
        f"attributes binary    {ok(report['attributes_binary'])}; missing values {report['missing_values']}",
        f"corrupt images       {report['corrupt_images']['count']} skipped",
        f"quasi-constant       {report['quasi_constant_images']['count']} flagged (std < {report['quasi_constant_images']['threshold_std']})",
        f"written              {report['written']}  {report['partition_counts']}",
    ]
    if report.get("constant_attributes"):
        lines.append(f"constant attributes  {', '.join(report['constant_attributes'])}")
    for entry in report["corrupt_images"]["files"][:10]:
        lines.append(f"  skipped {entry['name']}: {entry['reason']}")
    return "\n".join(lines)
