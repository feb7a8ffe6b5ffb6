"""CelebA as distributed: find the files in any of the usual layouts and parse the annotations.

Every problem in a user's file is reported as an ``AnnotationError`` that names the file and the
line, so a command can print one line instead of a traceback.
"""

from __future__ import annotations

import csv
import itertools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facevae.common.errors import DatasetError

IMAGE_FOLDER = "img_align_celeba"
IMAGE_ZIP = "img_align_celeba.zip"
ATTR_TXT = "list_attr_celeba.txt"
ATTR_CSV = "list_attr_celeba.csv"
PARTITION_TXT = "list_eval_partition.txt"
PARTITION_CSV = "list_eval_partition.csv"
IDENTITY_TXT = "identity_CelebA.txt"
# Subfolders of the official distribution (Anno/, Eval/, Img/) and of torchvision's root/celeba/.
SEARCH_SUBDIRS = ("", "celeba", "Anno", "Eval", "Img", "celeba/Anno", "celeba/Eval", "celeba/Img")


class AnnotationError(DatasetError):
    def __init__(self, path: Path | str, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass
class Annotations:
    image_ids: list[str]
    attribute_names: list[str]
    attributes: np.ndarray  # uint8 (N, A), 0/1
    partition: np.ndarray  # int8 (N,), -1 where unknown
    identity: np.ndarray | None = None  # int64 (N,)
    files: dict[str, str] = field(default_factory=dict)


def _lines(path: Path):
    """Yield (line_number, stripped_text) for the non-blank lines; CRLF and blank lines are fine."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not UTF-8/ASCII text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


def _parse_sign(value: str, path: Path, line: int, column: str) -> int:
    if value in ("1", "+1"):
        return 1
    if value == "-1":
        return 0
    raise AnnotationError(path, line, f"value {value!r} for {column} is not -1 or 1")


def _check_duplicate(seen: dict[str, int], image_id: str, path: Path, line: int) -> None:
    if image_id in seen:
        raise AnnotationError(path, line, f"duplicate image id {image_id!r} (first on line {seen[image_id]})")
    seen[image_id] = line


def parse_attr_txt(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``list_attr_celeba.txt``: count line, names line, then ``id v1 ... vA`` rows of -1/1."""
    path = Path(path)
    lines = _lines(path)
    try:
        count_line, count_text = next(lines)
        names_line, names_text = next(lines)
    except StopIteration:
        raise AnnotationError(path, None, "needs a count line and an attribute-names line") from None
    try:
        declared = int(count_text)
    except ValueError:
        raise AnnotationError(
            path, count_line, f"first line should be the image count, got {count_text[:40]!r}"
        ) from None
    names = names_text.split()
    if len(set(names)) != len(names):
        raise AnnotationError(path, names_line, "attribute names repeat")
    ids, rows, seen = [], [], {}
    for number, text in lines:
        parts = text.split()
        if len(parts) != len(names) + 1:
            raise AnnotationError(
                path, number, f"expected an image id and {len(names)} values, found {len(parts)} columns"
            )
        _check_duplicate(seen, parts[0], path, number)
        ids.append(parts[0])
        rows.append([_parse_sign(v, path, number, names[j]) for j, v in enumerate(parts[1:])])
    if declared != len(ids):
        raise AnnotationError(path, count_line, f"declares {declared} images but {len(ids)} rows follow")
    return ids, names, np.asarray(rows, np.uint8).reshape(len(ids), len(names))


ID_COLUMNS = ("image_id", "image", "filename", "file")


def _csv_rows(path: Path):
    """Yield (line_number, fields) of a CSV file's non-blank lines, fields unquoted and stripped."""
    numbered = list(_lines(path))
    for (number, _), parts in zip(numbered, csv.reader(text for _, text in numbered)):
        yield number, [p.strip() for p in parts]


def _csv_columns(path: Path, line: int, header: list[str]) -> tuple[int, list[int]]:
    """The image-id column and the value columns of a CSV header, in whatever order they come.

    A column without a name is not data: it is the index that pandas' ``to_csv`` writes by default.
    """
    ids = [j for j, name in enumerate(header) if name.lower() in ID_COLUMNS]
    if len(ids) != 1:
        raise AnnotationError(path, line, f"the header needs one image id column ({', '.join(ID_COLUMNS)})")
    return ids[0], [j for j, name in enumerate(header) if name and j != ids[0]]


def parse_attr_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """The common CSV variant: header ``image_id,5_o_Clock_Shadow,...``, values -1/1."""
    path = Path(path)
    rows = _csv_rows(path)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise AnnotationError(path, None, "is empty") from None
    id_column, columns = _csv_columns(path, header_line, header)
    names = [header[j] for j in columns]
    ids, values, seen = [], [], {}
    for number, parts in rows:
        if len(parts) != len(header):
            raise AnnotationError(path, number, f"expected {len(header)} columns, found {len(parts)}")
        if any(parts[j] == "" for j in (id_column, *columns)):
            raise AnnotationError(path, number, "has a missing value")
        _check_duplicate(seen, parts[id_column], path, number)
        ids.append(parts[id_column])
        values.append([_parse_sign(parts[j], path, number, header[j]) for j in columns])
    return ids, names, np.asarray(values, np.uint8).reshape(len(ids), len(names))


def _id_value_rows(path: Path, what: str):
    """Yield (line_number, image_id, value) of an ``id value`` file: txt, or CSV with or without a header."""
    is_csv = path.suffix.lower() == ".csv"
    rows = _csv_rows(path) if is_csv else ((number, text.split()) for number, text in _lines(path))
    width, id_column, value_column = 2, 0, 1
    if is_csv:
        first = next(rows, None)
        if first is not None and not first[1][-1].lstrip("-").isdigit():  # a header names the columns
            id_column, columns = _csv_columns(path, *first)
            if len(columns) != 1:
                raise AnnotationError(path, first[0], f"expected an image id and a {what} column, "
                                                      f"found {len(columns) + 1} named columns")
            width, value_column = len(first[1]), columns[0]
        elif first is not None:
            rows = itertools.chain([first], rows)
    for number, parts in rows:
        if len(parts) != width:
            raise AnnotationError(path, number, f"expected an image id and a {what}, found {len(parts)} columns")
        yield number, parts[id_column], parts[value_column]


def parse_id_value_file(
    path: Path, known_ids: dict[str, int], what: str, allowed: set[int] | None = None
) -> np.ndarray:
    """Files of ``id value`` rows (partition, identity), txt or csv; returns values in ``known_ids`` order.

    Rows naming an id that the attribute file does not have are an error (an unknown image id);
    ids without a row get -1.
    """
    path = Path(path)
    values = np.full(len(known_ids), -1, np.int64)
    seen: dict[str, int] = {}
    for number, image_id, value in _id_value_rows(path, what):
        try:
            number_value = int(value)
        except ValueError:
            raise AnnotationError(path, number, f"{what} {value!r} is not an integer") from None
        if allowed is not None and number_value not in allowed:
            raise AnnotationError(path, number, f"{what} {number_value} is not one of {sorted(allowed)}")
        if image_id not in known_ids:
            raise AnnotationError(path, number, f"unknown image id {image_id!r} (not in the attribute file)")
        _check_duplicate(seen, image_id, path, number)
        values[known_ids[image_id]] = number_value
    return values


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for sub in SEARCH_SUBDIRS:
        for name in names:
            candidate = root / sub / name
            if candidate.exists():
                return candidate
    return None


@dataclass
class CelebaLayout:
    root: Path
    attr_file: Path
    partition_file: Path | None
    identity_file: Path | None
    images: "ImageSource"

    def describe(self) -> dict:
        return {
            "root": str(self.root),
            "attributes": str(self.attr_file),
            "partition": str(self.partition_file) if self.partition_file else None,
            "identity": str(self.identity_file) if self.identity_file else None,
            "images": self.images.describe(),
        }


def find_layout(src: str | Path) -> CelebaLayout:
    """Locate the annotation files and images under ``src`` (folder, zip, CSV variant, torchvision)."""
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise DatasetError(f"{src}: expected a CelebA folder or {IMAGE_ZIP}")
        root, image_path = src.parent, src
    else:
        root, image_path = src, None
    attr = _find(root, (ATTR_TXT, ATTR_CSV))
    if attr is None and image_path is not None and root.name == "Img":  # the distributed Img/ beside Anno/
        root = root.parent
        attr = _find(root, (ATTR_TXT, ATTR_CSV))
    if attr is None:
        looked = ", ".join(s or "." for s in SEARCH_SUBDIRS)
        raise DatasetError(f"{root}: no {ATTR_TXT} or {ATTR_CSV} found (looked in {looked})")
    if image_path is None:
        folder = _find(root, (IMAGE_FOLDER,))
        # Kaggle's copy nests the folder twice: img_align_celeba/img_align_celeba/*.jpg
        if folder is not None and folder.is_dir() and (folder / IMAGE_FOLDER).is_dir():
            folder = folder / IMAGE_FOLDER
        image_path = folder if folder is not None and folder.is_dir() else _find(root, (IMAGE_ZIP,))
    if image_path is None:
        raise DatasetError(f"{root}: no {IMAGE_FOLDER}/ folder or {IMAGE_ZIP} found")
    images = ZipImages(image_path) if image_path.is_file() else FolderImages(image_path)
    return CelebaLayout(
        root=root,
        attr_file=attr,
        partition_file=_find(root, (PARTITION_TXT, PARTITION_CSV)),
        identity_file=_find(root, (IDENTITY_TXT,)),
        images=images,
    )


def read_annotations(layout: CelebaLayout) -> Annotations:
    parse = parse_attr_csv if layout.attr_file.suffix.lower() == ".csv" else parse_attr_txt
    ids, names, attributes = parse(layout.attr_file)
    if not ids:
        raise AnnotationError(layout.attr_file, None, "has no image rows")
    index = {image_id: i for i, image_id in enumerate(ids)}
    partition = np.full(len(ids), -1, np.int8)
    if layout.partition_file is not None:
        partition = parse_id_value_file(layout.partition_file, index, "partition", {0, 1, 2}).astype(np.int8)
    identity = None
    if layout.identity_file is not None:
        identity = parse_id_value_file(layout.identity_file, index, "identity")
    files = {"attributes": str(layout.attr_file)}
    if layout.partition_file:
        files["partition"] = str(layout.partition_file)
    if layout.identity_file:
        files["identity"] = str(layout.identity_file)
    return Annotations(ids, names, attributes, partition, identity, files)


class ImageSource:
    """Bytes of images by name; re-opened in each worker process (zip handles don't fork well)."""

    def names(self) -> set[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def for_worker(self) -> "ImageSource":
        """A copy safe to use in a forked worker (no file handle shared with the parent)."""
        return self


class FolderImages(ImageSource):
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def names(self) -> set[str]:
        return {entry.name for entry in _scandir_files(self.folder) if not _is_junk(entry.name)}

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def describe(self) -> str:
        return f"folder {self.folder}"


def _is_junk(member: str) -> bool:
    """macOS's resource forks (``__MACOSX/``, ``._NAME``) and members that point outside the archive.

    None is an image of the dataset; counted as images they would be unannotated ones, and a
    ``../000002.jpg`` would stand in for the real ``000002.jpg`` of the same name.
    """
    parts = member.split("/")
    return member.startswith("/") or ".." in parts or "__MACOSX" in parts or parts[-1].startswith("._")


def _scandir_files(folder: Path):
    import os

    with os.scandir(folder) as it:
        yield from (e for e in it if e.is_file())


class ZipImages(ImageSource):
    """Reads members straight out of ``img_align_celeba.zip``; nothing is unpacked to disk."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] | None = None

    def __getstate__(self):
        return {"path": self.path, "_zip": None, "_members": None}

    def for_worker(self) -> "ZipImages":
        # A forked child would share the parent's file offset: concurrent seeks corrupt reads.
        return ZipImages(self.path)

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as exc:
                raise DatasetError(f"{self.path}: not a readable zip file ({exc})") from None
            self._members = {
                Path(info.filename).name: info.filename
                for info in self._zip.infolist()
                if not info.is_dir() and not _is_junk(info.filename)
            }
        return self._zip

    def names(self) -> set[str]:
        self._open()
        return set(self._members)

    def read(self, name: str) -> bytes:
        zf = self._open()
        return zf.read(self._members[name])

    def describe(self) -> str:
        return f"zip {self.path}"
