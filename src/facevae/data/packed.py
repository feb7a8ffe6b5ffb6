"""The packed dataset: a folder of memory-mappable arrays that every later step reads.

Layout of a packed dataset folder::

    meta.json          format version, count, image size, attribute/factor names, source
    images.npy         uint8 (N, H, W, 3), opened with mmap so reading never loads the whole file
    attributes.npy     uint8 (N, A), values 0/1
    partition.npy      int8 (N,), the source's own partition: 0 train, 1 valid, 2 test, -1 none
    image_ids.json     list of N image ids (file names for CelebA)
    factors.npy        int64 (N, F), ground-truth factors (synthetic data only)
    integrity.json     the integrity report of the preparation
    splits/NAME.npy    int8 (N,) assignment of a stored split (0/1/2, -1 unused)
    splits/NAME.json   the split's distribution check

``.npy`` keeps shape and dtype in the file itself, so the arrays stay readable with plain numpy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facevae.common.errors import DatasetError
from facevae.common.files import make_dir, rounded_bytes, save_npy_atomic, write_json_atomic
from facevae.common.lock import hold
from facevae.data.attributes import PARTITION_NAMES

FORMAT_VERSION = 1
OFFICIAL_SPLIT = "official"
# Room needed beside images.npy: the small arrays, image ids, progress and integrity files.
SPACE_MARGIN_BYTES = 2**20
SPACE_PER_IMAGE_BYTES = 256
# The files of a dataset besides meta.json, which is written after them.
DATASET_FILES = ("images.npy", "attributes.npy", "partition.npy", "image_ids.json", "factors.npy", "integrity.json")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _format_bytes(n: int) -> str:
    """``1,234,567 bytes (1.2 MiB)``: exact to compare with ``df``, rounded to read."""
    return f"{n:,} bytes" if n < 1024 else f"{n:,} bytes ({rounded_bytes(n)})"


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise a one-line DatasetError unless ``folder``'s disk has ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DatasetError(
            f"{folder}: not enough free disk space for {what}: "
            f"{_format_bytes(needed)} needed, {_format_bytes(free)} free"
        )


def _disk_full(folder: str | os.PathLike, exc: OSError, file: str | os.PathLike | None, hint: str) -> DatasetError:
    try:
        free = f"{_format_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    writing = f" while writing {file}" if file else ""
    return DatasetError(f"{folder}: the disk is full ({exc.strerror}{writing}; {free}){hint}")


@contextmanager
def disk_full_as_error(folder: str | os.PathLike, hint: str = ""):
    """A full disk (ENOSPC, EDQUOT) while writing under ``folder`` becomes a one-line DatasetError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise _disk_full(folder, exc, exc.filename, hint) from None


def preallocate(path: Path, folder: Path, what: str, margin: int = SPACE_MARGIN_BYTES) -> None:
    """Reserve the disk blocks of all of ``path`` now, after checking that they and ``margin`` are free.

    Writing through a memory map into a hole of a sparse file on a full disk kills the process
    with SIGBUS instead of raising; with the blocks reserved, the writes cannot run out of space.
    """
    status = os.stat(path)
    allocated = getattr(status, "st_blocks", 0) * 512
    check_free_space(folder, max(status.st_size - allocated, 0) + margin, what)
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, status.st_size)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise _disk_full(folder, exc, path, "") from None
        # a filesystem that cannot preallocate: the free-space check above is all there is
    finally:
        os.close(fd)


def _load_array(path: Path, **kwargs) -> np.ndarray:
    """``np.load`` that names the file it cannot read (cut short, not an array, or pickled objects)."""
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except (ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: damaged, cannot be read ({exc})") from None


@dataclass
class PackedMeta:
    count: int
    height: int
    width: int
    attribute_names: list[str]
    factor_names: list[str] = field(default_factory=list)
    factor_sizes: list[int] = field(default_factory=list)
    source: str = ""
    preprocessing: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_json(cls, path: Path) -> "PackedMeta":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read dataset metadata ({exc})") from None
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        missing = {"count", "height", "width", "attribute_names"} - set(known)
        if missing:
            raise DatasetError(f"{path}: metadata lacks {', '.join(sorted(missing))}")
        return cls(**known)


class PackedDataset:
    """Read access to a packed dataset folder; images stay memory-mapped."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file() and (self.root / ".partial").is_dir():
            raise DatasetError(
                f"{self.root}: an unfinished dataset (its writing was stopped before meta.json, "
                f"{self.root / '.partial'} is left); run the command that wrote it again to finish it"
            )
        if not meta_path.is_file():
            raise DatasetError(
                f"{self.root}: not a packed dataset (no meta.json); "
                "make one with `facevae data synth` or `facevae data prepare`"
            )
        self.meta = PackedMeta.from_json(meta_path)
        self.images = _load_array(self.root / "images.npy", mmap_mode="r")
        self.attributes = _load_array(self.root / "attributes.npy")
        self.partition = _load_array(self.root / "partition.npy")
        factors_path = self.root / "factors.npy"
        self.factors = _load_array(factors_path) if factors_path.is_file() else None
        ids_path = self.root / "image_ids.json"
        try:
            self.image_ids = json.loads(ids_path.read_text()) if ids_path.is_file() else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{ids_path}: damaged, cannot be read ({exc})") from None
        self._check_arrays()

    def _check_arrays(self) -> None:
        """Every array has a row per image (one that another tool cut short would misalign the rest), in the
        documented dtype and values."""
        n = self.meta.count
        if self.images.shape != (n, self.meta.height, self.meta.width, 3):
            raise DatasetError(
                f"{self.root}: images.npy has shape {self.images.shape}, "
                f"meta.json says {(n, self.meta.height, self.meta.width, 3)}"
            )
        if self.images.dtype != np.uint8:
            raise DatasetError(f"{self.root}: images.npy holds {self.images.dtype}, not uint8 pixels 0..255")
        if self.attributes.shape != (n, len(self.meta.attribute_names)):
            raise DatasetError(f"{self.root}: attributes.npy shape {self.attributes.shape} != ({n}, A)")
        if not np.isin(self.attributes, (0, 1)).all():  # CelebA's -1/1 would count every -1 as present
            raise DatasetError(f"{self.root}: attributes.npy holds values other than 0 and 1")
        if self.partition.shape != (n,):
            raise DatasetError(f"{self.root}: partition.npy shape {self.partition.shape} != ({n},)")
        if self.factors is not None and (self.factors.ndim != 2 or len(self.factors) != n):
            raise DatasetError(f"{self.root}: factors.npy shape {self.factors.shape} != ({n}, F)")
        if self.image_ids is not None and (not isinstance(self.image_ids, list) or len(self.image_ids) != n):
            raise DatasetError(f"{self.root}: image_ids.json is not a list of {n} image ids")

    def __len__(self) -> int:
        return self.meta.count

    def __repr__(self) -> str:
        return f"PackedDataset({str(self.root)!r}, n={len(self)}, size={self.meta.height}x{self.meta.width})"

    @property
    def attribute_names(self) -> list[str]:
        return list(self.meta.attribute_names)

    @property
    def factor_names(self) -> list[str]:
        return list(self.meta.factor_names)

    @property
    def factor_sizes(self) -> list[int]:
        return list(self.meta.factor_sizes)

    @property
    def integrity(self) -> dict | None:
        path = self.root / "integrity.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # --- splits -------------------------------------------------------------------------------
    def split_names(self) -> list[str]:
        names = [OFFICIAL_SPLIT] if (self.partition >= 0).any() else []
        split_dir = self.root / "splits"
        if split_dir.is_dir():
            names += sorted(p.stem for p in split_dir.glob("*.npy") if p.stem != OFFICIAL_SPLIT)
        return names

    def load_split(self, name: str = OFFICIAL_SPLIT) -> np.ndarray:
        """The split's assignment: int8 (N,), 0 train, 1 valid, 2 test, -1 not used."""
        if name == OFFICIAL_SPLIT:
            if not (self.partition >= 0).any():
                raise DatasetError(f"{self.root}: has no official partition; store a split with `facevae data split`")
            return self.partition
        path = self.root / "splits" / f"{name}.npy"
        if not path.is_file() and path.with_suffix(".json").is_file():
            raise DatasetError(f"{path}: missing beside its report: storing the split was stopped; store it "
                               f"again with `facevae data split {self.root} --name {name} --strategy ...`")
        if not path.is_file():
            available = ", ".join(self.split_names()) or "none"
            raise DatasetError(f"{self.root}: no split named {name!r} (available: {available})")
        return self._checked_split(path, name)

    def _checked_split(self, path: Path, name: str) -> np.ndarray:
        """The stored split at ``path``, which must assign every row of the dataset: one cut short (or made
        for another dataset) would otherwise train on a part of the data without a word."""
        fix = f"store it again with `facevae data split {self.root} --name {name} --strategy ...`"
        try:
            assignment = np.load(path)
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"{path}: damaged, cannot be read ({exc}); {fix}") from None
        if assignment.shape != (len(self),):
            raise DatasetError(f"{path}: holds {assignment.size:,} entries, the dataset has {len(self):,} images "
                               f"(cut short, or made for another dataset); {fix}")
        if not np.isin(assignment, (-1, 0, 1, 2)).all():
            raise DatasetError(f"{path}: holds values other than 0 (train), 1 (valid), 2 (test), -1 (unused); {fix}")
        return assignment

    def split_report(self, name: str) -> dict | None:
        path = self.root / "splits" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def indices(self, split: str, part: str) -> np.ndarray:
        """Row indices of ``part`` ('train', 'valid' or 'test') in the named split."""
        if part not in PARTITION_NAMES:
            raise DatasetError(f"unknown part {part!r}; use one of {', '.join(PARTITION_NAMES)}")
        return np.flatnonzero(self.load_split(split) == PARTITION_NAMES.index(part))

    def save_split(self, name: str, assignment: np.ndarray, report: dict | None = None) -> Path:
        if name == OFFICIAL_SPLIT:
            raise DatasetError("the official split is the source's partition and cannot be overwritten")
        assignment = np.asarray(assignment, dtype=np.int8)
        if assignment.shape != (len(self),):
            raise DatasetError(f"split assignment has shape {assignment.shape}, expected ({len(self)},)")
        split_dir = self.root / "splits"
        split_dir.mkdir(exist_ok=True)
        # the .npy, written last, is the stored split: a kill never leaves it beside another split's report
        (split_dir / f"{name}.npy").unlink(missing_ok=True)
        if report is not None:
            write_json_atomic(split_dir / f"{name}.json", report)
        save_npy_atomic(split_dir / f"{name}.npy", assignment)
        return split_dir / f"{name}.npy"


def _refuse_foreign(root: Path) -> None:
    """Refuse to write over files of a dataset's names that no dataset (or stopped write of one) left in ``root``."""
    if (root / ".partial").is_dir():
        return
    if (root / "meta.json").is_file():
        try:
            PackedMeta.from_json(root / "meta.json")
            return
        except DatasetError:
            pass
    foreign = [name for name in ("meta.json", *DATASET_FILES) if (root / name).exists()]
    if foreign:
        raise DatasetError(f"{root} already holds {', '.join(foreign)}, which no packed dataset wrote; "
                           "choose an empty folder (nothing was changed)")


class PackedWriter:
    """Writes a packed dataset in pieces, so memory stays flat whatever the number of images.

    Images go into a preallocated ``images.npy`` inside ``OUT/.partial``, each write through a
    memory map of just its own rows (worker processes can write disjoint rows of the same file at
    once); ``finalize`` drops rows marked bad, chunk by chunk, writes the small arrays and
    metadata, and moves everything into place. Until then ``OUT`` has no ``meta.json``, so a
    half-written dataset is never mistaken for a finished one.
    """

    def __init__(self, root: str | os.PathLike, count: int, height: int, width: int, *, resume: bool = False):
        self.root = Path(root)
        self.work = self.root / ".partial"
        self.count, self.height, self.width = count, height, width
        shape = (count, height, width, 3)
        self.resumed = resume and self.images_path.is_file()  # False: a new, empty images file
        if self.resumed:
            existing = np.load(self.images_path, mmap_mode="r").shape
            if existing != shape:
                raise DatasetError(
                    f"{self.work}: an earlier preparation used shape {existing}, not {shape}; "
                    "delete the folder to start over"
                )
        else:
            _refuse_foreign(self.root)
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            with disk_full_as_error(self.root):
                np.lib.format.open_memmap(self.images_path, mode="w+", dtype=np.uint8, shape=shape).flush()
        self.offset = np.load(self.images_path, mmap_mode="r").offset  # bytes of .npy header
        preallocate(self.images_path, self.root, f"{count:,} images of {height}x{width}",
                    margin=SPACE_MARGIN_BYTES + SPACE_PER_IMAGE_BYTES * count)

    @property
    def images_path(self) -> Path:
        return self.work / "images.npy"

    def rows(self, start: int, stop: int, mode: str = "r+") -> np.memmap:
        """A memory map of rows ``start:stop`` only."""
        row_bytes = self.height * self.width * 3
        return np.memmap(
            self.images_path, dtype=np.uint8, mode=mode,
            offset=self.offset + start * row_bytes, shape=(stop - start, self.height, self.width, 3),
        )

    def write(self, start: int, images: np.ndarray) -> None:
        window = self.rows(start, start + len(images))
        window[:] = images
        window.flush()
        del window

    def finalize(
        self,
        *,
        attributes: np.ndarray,
        attribute_names: list[str],
        keep: np.ndarray | None = None,
        partition: np.ndarray | None = None,
        image_ids: list[str] | None = None,
        factors: np.ndarray | None = None,
        factor_names: list[str] | None = None,
        factor_sizes: list[int] | None = None,
        source: str = "",
        preprocessing: str = "",
        integrity: dict | None = None,
        chunk: int = 4096,
    ) -> PackedDataset:
        keep = np.ones(self.count, bool) if keep is None else np.asarray(keep, bool)
        kept = np.flatnonzero(keep)
        partition = np.full(self.count, -1, np.int8) if partition is None else np.asarray(partition, np.int8)
        with disk_full_as_error(self.root, "; free some space and run the same command again to finish"):
            if len(kept) < self.count:
                self._compact(keep, chunk)
            np.save(self.work / "attributes.npy", np.asarray(attributes, np.uint8)[kept])
            np.save(self.work / "partition.npy", partition[kept])
            if image_ids is not None:
                (self.work / "image_ids.json").write_text(json.dumps([image_ids[i] for i in kept]))
            if factors is not None:
                np.save(self.work / "factors.npy", np.asarray(factors, np.int64)[kept])
            if integrity is not None:
                write_json_atomic(self.work / "integrity.json", integrity)
        meta = PackedMeta(
            count=len(kept),
            height=self.height,
            width=self.width,
            attribute_names=list(attribute_names),
            factor_names=list(factor_names or []),
            factor_sizes=[int(s) for s in (factor_sizes or [])],
            source=source,
            preprocessing=preprocessing,
        )
        # No meta.json while the files are swapped: a kill part-way leaves no mix of two datasets taken as one.
        (self.root / "meta.json").unlink(missing_ok=True)
        # the stored splits are of the dataset replaced: still valid partitions of as many rows, they would be
        # used without a word, their reports' balance claims false
        shutil.rmtree(self.root / "splits", ignore_errors=True)
        for name in DATASET_FILES:
            if (self.work / name).exists():
                os.replace(self.work / name, self.root / name)
            else:  # an earlier dataset's, which would be read as this one's
                (self.root / name).unlink(missing_ok=True)
        # meta.json last: its presence marks the dataset as complete.
        with disk_full_as_error(self.root):
            write_json_atomic(self.root / "meta.json", meta.__dict__)
        shutil.rmtree(self.work, ignore_errors=True)
        return PackedDataset(self.root)

    def _compact(self, keep: np.ndarray, chunk: int) -> None:
        kept = np.flatnonzero(keep)
        compact_path = self.work / "images.compact.npy"
        shape = (len(kept), self.height, self.width, 3)
        np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8, shape=shape).flush()
        # dropping rows takes a second, compacted copy of the images for a moment
        preallocate(compact_path, self.root, f"a compacted copy of {len(kept):,} images")
        out = np.load(compact_path, mmap_mode="r+")
        done = 0
        for lo in range(0, self.count, chunk):
            hi = min(lo + chunk, self.count)
            window = self.rows(lo, hi, mode="r")
            good = window[keep[lo:hi]]
            out[done : done + len(good)] = good
            done += len(good)
            del window
        out.flush()
        del out
        os.replace(compact_path, self.images_path)


def write_rendered(root: str | os.PathLike, rows: np.ndarray, render, height: int, width: int, *, chunk: int,
                   progress: bool, what: str, **finalize) -> PackedDataset:
    """Render the factor ``rows`` a chunk at a time into a packed dataset at ``root`` (``finalize``'s keywords)."""
    from tqdm.auto import tqdm

    root = make_dir(root)
    # one writer at a time: a second would delete the first's .partial under it and mix their rows
    with hold(root, what=what):
        writer = PackedWriter(root, len(rows), height, width)
        with tqdm(total=len(rows), unit="img", desc="render", disable=not progress) as bar:
            for lo in range(0, len(rows), chunk):
                images = render(rows[lo : lo + chunk])
                writer.write(lo, images)
                bar.update(len(images))
        return writer.finalize(**finalize)


def write_packed(
    root: str | os.PathLike, images: np.ndarray, attributes: np.ndarray, attribute_names: list[str], **kwargs
) -> PackedDataset:
    """Write a whole in-memory dataset at once (small data, tests)."""
    images = np.asarray(images, np.uint8)
    writer = PackedWriter(root, len(images), images.shape[1], images.shape[2])
    writer.write(0, images)
    return writer.finalize(attributes=attributes, attribute_names=attribute_names, **kwargs)
