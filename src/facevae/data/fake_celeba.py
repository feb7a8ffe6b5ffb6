"""Synthetic faces written in CelebA's exact distributed layout, for demos, tests and benchmarks.

``write_fake_celeba(out, n)`` produces what a user who downloaded CelebA has::

    out/img_align_celeba/000001.jpg ...     178 wide x 218 high JPEGs (or img_align_celeba.zip)
    out/list_attr_celeba.txt                count line, 40 names, rows of -1/1
    out/list_eval_partition.txt             000001.jpg 0   (0 train, 1 valid, 2 test)
    out/identity_CelebA.txt                 000001.jpg 2880
    out/list_bbox_celeba.txt                count line, column names, x_1 y_1 width height
    out/list_landmarks_align_celeba.txt     count line, column names, five (x, y) landmarks
    out/factors.npy, out/synthetic_factors.json   ground truth (real CelebA has neither)

The images are ``SyntheticFaces(size=(218, 178), frame=148)`` renders, so CelebA's standard
preprocessing (centre crop 148, resize to 64) gives the face as a direct 64x64 render shows it.
Attributes come from ``SyntheticFaces.all_celeba_attributes``: the ones the factors express are
derived from them; the others are seeded random draws that carry no image signal. The partition
is contiguous by file number with CelebA's official proportions, like CelebA's own file;
identities are random labels (about 20 images each, never shared across partitions, as in
CelebA) and carry no image signal either.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facevae.common.errors import DatasetError
from facevae.common.files import make_dir, save_npy_atomic, write_json_atomic
from facevae.data.attributes import CELEBA_ATTRIBUTES
from facevae.data.celeba_files import ATTR_TXT, IDENTITY_TXT, IMAGE_FOLDER, IMAGE_ZIP, PARTITION_TXT
from facevae.data.synthetic import SyntheticFaces, factor_info, generate_celeba_like_partition

CELEBA_HEIGHT, CELEBA_WIDTH, CELEBA_CROP = 218, 178, 148
BBOX_TXT, LANDMARKS_TXT = "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"
ANNOTATION_FILES = (ATTR_TXT, PARTITION_TXT, IDENTITY_TXT, BBOX_TXT, LANDMARKS_TXT)
CELEBA_IDENTITIES = 10_177
IMAGES_PER_IDENTITY = 20  # CelebA: 202,599 images of 10,177 people
LANDMARK_NAMES = [
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
]
TASK_SIZE = 64  # images per work unit
ZIP_DATE = (2015, 9, 28, 0, 0, 0)


def image_name(index: int) -> str:
    """CelebA's file name of the image at 0-based ``index``: 0 -> '000001.jpg'."""
    return f"{index + 1:06d}.jpg"


def fake_celeba_faces() -> SyntheticFaces:
    return SyntheticFaces(size=(CELEBA_HEIGHT, CELEBA_WIDTH), frame=CELEBA_CROP)


def generate_identities(partition: np.ndarray, rng) -> np.ndarray:
    """int64 identity per image: about 20 images per identity, no identity in two partitions."""
    rng = np.random.default_rng(rng)
    n = len(partition)
    identity = np.zeros(n, np.int64)
    parts = [np.flatnonzero(partition == p) for p in (0, 1, 2)]
    counts = [max(1, int(round(len(rows) / IMAGES_PER_IDENTITY))) if len(rows) else 0 for rows in parts]
    total = sum(counts)
    pool = rng.permutation(max(total, CELEBA_IDENTITIES))[:total] + 1
    used = 0
    for rows, count in zip(parts, counts):
        if not count:
            continue
        ids = pool[used : used + count]
        used += count
        identity[rows] = ids[rng.permutation(len(rows)) % count]
    return identity


# --- workers --------------------------------------------------------------------------------------
_STATE: dict = {}


def _init_worker(factors: np.ndarray, folder: str | None, quality: int) -> None:
    _STATE.update(faces=fake_celeba_faces(), factors=factors, folder=folder, quality=quality)


def _encode(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _work(task: tuple[int, int]):
    """Render rows start:stop; write them into the folder, or return their JPEG bytes."""
    start, stop = task
    images = _STATE["faces"].render(_STATE["factors"][start:stop])
    encoded = [_encode(image, _STATE["quality"]) for image in images]
    folder = _STATE["folder"]
    if folder is None:
        return start, encoded
    for offset, data in enumerate(encoded):
        with open(os.path.join(folder, image_name(start + offset)), "wb") as fh:
            fh.write(data)
    return start, None


# --- annotation files -----------------------------------------------------------------------------
def _write_text(path: Path, lines) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    os.replace(tmp, path)


def format_attr_row(name: str, values01: np.ndarray) -> str:
    """``000001.jpg -1  1  1 -1 ...``: CelebA's 2-character right-aligned -1/1 fields."""
    return name + " " + " ".join(" 1" if v else "-1" for v in values01)


def write_annotations(out: Path, names: list[str], attributes: np.ndarray, partition: np.ndarray,
                      identity: np.ndarray, bboxes: np.ndarray | None = None,
                      landmarks: np.ndarray | None = None) -> None:
    n = len(names)
    _write_text(out / ATTR_TXT,
                [str(n), " ".join(CELEBA_ATTRIBUTES)]
                + [format_attr_row(nm, row) for nm, row in zip(names, attributes)])
    _write_text(out / PARTITION_TXT, (f"{nm} {int(p)}" for nm, p in zip(names, partition)))
    _write_text(out / IDENTITY_TXT, (f"{nm} {int(i)}" for nm, i in zip(names, identity)))
    if bboxes is not None:
        _write_text(out / BBOX_TXT,
                    [str(n), "image_id x_1 y_1 width height"]
                    + [f"{nm}{b[0]:6d}{b[1]:4d}{b[2]:4d}{b[3]:4d}" for nm, b in zip(names, bboxes)])
    if landmarks is not None:
        _write_text(out / LANDMARKS_TXT,
                    [str(n), " ".join(LANDMARK_NAMES)]
                    + [f"{nm}{lm[0]:6d}" + "".join(f"{v:5d}" for v in lm[1:]) for nm, lm in zip(names, landmarks)])


class ForeignFolderError(DatasetError, FileExistsError):
    """The output folder holds CelebA files that this tool did not write: one line from the command line."""


def _clear_previous(out: Path) -> None:
    """Remove the images of an earlier fake CelebA in ``out``; refuse to touch anything else."""
    folder, archive = out / IMAGE_FOLDER, out / IMAGE_ZIP
    # a user's own annotations would be overwritten too, even where their images are elsewhere
    present = [p.name for p in (folder, archive, out / ATTR_TXT, out / PARTITION_TXT)
               if p.exists()]
    if not present:
        return
    if not (out / "synthetic_factors.json").is_file():
        raise ForeignFolderError(f"{out} already holds {', '.join(present)} that this tool did not write; "
                                 "choose an empty folder")
    # the annotations first: beside a partial image folder they would make a whole-looking CelebA
    for name in ANNOTATION_FILES:
        (out / name).unlink(missing_ok=True)
    if folder.is_dir():
        shutil.rmtree(folder)
    if archive.exists():
        archive.unlink()


def write_fake_celeba(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    zip: bool = False,  # noqa: A002 - the name the CLI and the brief use
    progress: bool = True,
    jpeg_quality: int = 95,
    workers: int | None = None,
) -> Path:
    """Write ``n`` synthetic faces in CelebA's distributed layout under ``out``; returns ``out``.

    ``zip=True`` writes ``img_align_celeba.zip`` (members ``img_align_celeba/000001.jpg``...)
    instead of the folder. ``workers``: render/encode processes (default: one per core, at
    most 8, and 1 for small ``n``). The same ``n`` and ``seed`` always give the same files.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if n > 999_999:
        raise ValueError("CelebA's 6-digit file names allow at most 999,999 images")
    out = Path(out)
    make_dir(out)
    _clear_previous(out)

    faces = fake_celeba_faces()
    rng = np.random.default_rng(seed)
    factors = faces.sample_factors(n, rng)
    partition = generate_celeba_like_partition(n)
    identity = generate_identities(partition, rng)

    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if n >= 1000 else 1
    # synthetic_factors.json first marks the folder as this tool's, so a killed write can be done again;
    # the annotations last, so data prepare never takes the images of a killed write for a whole CelebA
    _write_ground_truth(out, faces, factors, seed)
    images = _ImageJobs(factors, int(jpeg_quality), int(workers), progress)
    if zip:
        _write_image_zip(out, images)
    else:
        _write_image_folder(out, images)

    names = [image_name(i) for i in range(n)]
    write_annotations(out, names, faces.all_celeba_attributes(factors), partition, identity,
                      bboxes=faces.bboxes(factors), landmarks=faces.landmarks(factors))
    return out


@dataclass
class _ImageJobs:
    """What to render and encode, and how: the factor rows, JPEG quality, processes, progress bar."""

    factors: np.ndarray
    quality: int
    workers: int
    progress: bool

    def run(self, folder: Path | None, on_result: Callable[[int, list[bytes] | None], None]) -> None:
        """Render every image; ``on_result(start, encoded)`` for each work unit, in completion order.

        With a ``folder`` the workers write the files themselves and ``encoded`` is None.
        """
        from tqdm.auto import tqdm

        n = len(self.factors)
        tasks = [(lo, min(lo + TASK_SIZE, n)) for lo in range(0, n, TASK_SIZE)]
        workers = max(1, min(self.workers, len(tasks)))
        init_args = (self.factors, None if folder is None else str(folder), self.quality)
        with tqdm(total=n, unit="img", desc="fake celeba", disable=not self.progress) as bar:
            for start, encoded in _results(tasks, workers, init_args):
                on_result(start, encoded)
                bar.update(min(TASK_SIZE, n - start))


def _results(tasks: list[tuple[int, int]], workers: int, init_args: tuple):
    if workers == 1:
        _init_worker(*init_args)
        for task in tasks:
            yield _work(task)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, _init_worker, init_args) as pool:
        yield from pool.imap_unordered(_work, tasks)


def _write_image_folder(out: Path, images: _ImageJobs) -> None:
    folder = out / IMAGE_FOLDER
    folder.mkdir()
    images.run(folder, lambda start, encoded: None)


def _write_image_zip(out: Path, images: _ImageJobs) -> None:
    """``img_align_celeba.zip``, members in file order, written under a temporary name until complete."""
    zip_tmp = out / (IMAGE_ZIP + ".tmp")
    pending: dict[int, list[bytes]] = {}
    next_start = 0
    with zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_STORED) as archive:
        # a fixed date (CelebA's release) keeps the archive byte-identical for the same n and seed
        archive.writestr(zipfile.ZipInfo(IMAGE_FOLDER + "/", date_time=ZIP_DATE), b"")

        def add_in_order(start: int, encoded: list[bytes] | None) -> None:
            nonlocal next_start
            pending[start] = encoded
            while next_start in pending:
                for offset, data in enumerate(pending.pop(next_start)):
                    info = zipfile.ZipInfo(f"{IMAGE_FOLDER}/{image_name(next_start + offset)}", date_time=ZIP_DATE)
                    archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)
                next_start += TASK_SIZE

        images.run(None, add_in_order)
    os.replace(zip_tmp, out / IMAGE_ZIP)


def _write_ground_truth(out: Path, faces: SyntheticFaces, factors: np.ndarray, seed: int) -> None:
    save_npy_atomic(out / "factors.npy", factors)
    info = factor_info(faces) | {
        "count": len(factors),
        "seed": seed,
        "image_size": [CELEBA_HEIGHT, CELEBA_WIDTH],
        "frame": CELEBA_CROP,
        "note": "ground truth of the synthetic faces; attributes not in attribute_names and the "
                "identities are random labels without image signal",
    }
    write_json_atomic(out / "synthetic_factors.json", info)


__all__ = ["write_fake_celeba", "generate_celeba_like_partition", "generate_identities", "image_name",
           "format_attr_row", "fake_celeba_faces"]
