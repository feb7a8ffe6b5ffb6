"""The standard disentanglement data sets in their published file formats.

Both loaders follow the ground-truth-data contract of :mod:`facevae.metrics` (and of
disentanglement_lib): ``factor_names``, ``factor_sizes``, ``sample_factors(n, random_state)``,
``render(factors)`` (alias ``sample_observations_from_factors(factors, random_state)``),
``sample(n, random_state) -> (images, factors)`` as :class:`facevae.data.synthetic.SyntheticFaces`.
``random_state`` is a ``numpy.random.RandomState`` (drawn from exactly as disentanglement_lib
does: one ``randint(size, size=n)`` per factor, in order), a ``Generator``, an int or None.
Images come back as uint8 ``(n, 64, 64, C)`` with values 0..255.

dSprites -- ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (Matthey et al. 2017,
https://github.com/deepmind/dsprites-dataset): ``imgs`` uint8 ``(737280, 64, 64)`` with values
0/1, ``latents_classes`` int ``(737280, 6)`` (colour, shape, scale, orientation, position x,
position y; sizes 1, 3, 6, 40, 32, 32). Rows are in mixed-radix order of the classes, the last
factor fastest. The constant colour factor is not a factor of variation: ``factor_sizes`` is
``[3, 6, 40, 32, 32]`` (disentanglement_lib's ``dsprites_full``, the setting of the published
metric tables). Images are binary; :class:`DSprites` returns them as 0/255 (disentanglement_lib
feeds its models the same pixels as float 0/1: divide by 255). They are held in memory
bit-packed (377 MB for the full set), decompressed from the ``.npz`` in chunks, so loading
never needs the 3 GB the plain array takes.

3D Shapes -- ``3dshapes.h5`` (Burgess & Kim 2018, https://github.com/deepmind/3d-shapes):
``images`` uint8 ``(480000, 64, 64, 3)``, ``labels`` float ``(480000, 6)`` (floor hue, wall
hue, object hue, scale, shape, orientation; 10, 10, 10, 8, 4, 15 values), rows in mixed-radix
order. The class of a label is its rank among the column's distinct values (rounded to 6
decimals). The 5.9 GB of images are read into memory when there is room (``in_memory=None``:
when they take less than half of the available memory) and read from the file otherwise (much
slower for the sampling metrics, which touch about two million images).

Reduced files: both loaders infer the grid from the file (``latents_classes`` or ``labels``:
``max + 1`` classes, or the number of distinct labels, per factor) instead of assuming the
published sizes, and accept rows in any order (a lookup table from grid position to row), as
long as every point of the grid is present exactly once. Factors that take a single value in
the file are not factors of variation and are left out of ``factor_sizes``. So the tests (and
users) can make small files in the same formats.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

DSPRITES_FACTORS = ["color", "shape", "scale", "orientation", "position_x", "position_y"]
DSPRITES_SIZES = [1, 3, 6, 40, 32, 32]
SHAPES3D_FACTORS = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]


class GroundTruthFileError(ValueError):
    """A data file that does not have the published format (or a full grid of factors)."""


def _randint(random_state, high: int, n: int) -> np.ndarray:
    if isinstance(random_state, np.random.Generator):
        return random_state.integers(0, high, size=n)
    return random_state.randint(high, size=n)


def _as_state(random_state):
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    return np.random.RandomState(random_state)


class _Grid:
    """A full factorial grid of factors stored as rows of a file, in any order."""

    def __init__(self, classes: np.ndarray, names: list[str], source: str):
        classes = np.asarray(classes)
        if classes.ndim != 2 or classes.shape[1] != len(names) or not len(classes):
            raise GroundTruthFileError(f"{source}: expected (N, {len(names)}) factor classes, got {classes.shape}")
        # a cast would truncate 0.5 to 0, and cannot read text at all
        integral = classes.dtype.kind in "iub" or (classes.dtype.kind == "f" and np.array_equal(classes, np.round(classes)))
        if not integral:
            raise GroundTruthFileError(f"{source}: factor classes must be whole numbers, got {classes.dtype} values")
        classes = classes.astype(np.int64)
        if (classes < 0).any():
            raise GroundTruthFileError(f"{source}: negative factor classes")
        self.all_sizes = [int(s) for s in classes.max(axis=0) + 1]
        total = int(np.prod(self.all_sizes))
        if total != len(classes):
            raise GroundTruthFileError(
                f"{source}: {len(classes)} rows but the factor grid {self.all_sizes} has {total} points; "
                "the file must hold every combination of factor values exactly once")
        self.bases = np.concatenate([np.cumprod(self.all_sizes[::-1])[::-1][1:], [1]]).astype(np.int64)
        position = classes @ self.bases
        if np.array_equal(position, np.arange(total)):
            self.lookup = None  # the published layout: row = position
        else:
            if len(np.unique(position)) != total:
                raise GroundTruthFileError(f"{source}: some factor combinations appear twice (and others not at all)")
            self.lookup = np.empty(total, np.int64)
            self.lookup[position] = np.arange(total)
        self.kept = [j for j, s in enumerate(self.all_sizes) if s > 1]
        self.factor_names = [names[j] for j in self.kept]
        self.factor_sizes = [self.all_sizes[j] for j in self.kept]

    def rows(self, factors) -> np.ndarray:
        f = np.asarray(factors)
        if f.ndim == 1:
            f = f[None]
        if f.ndim != 2 or f.shape[1] != len(self.kept):
            raise ValueError(f"factors must have shape (n, {len(self.kept)}), got {f.shape}")
        f = f.astype(np.int64, copy=False)
        if ((f < 0) | (f >= np.asarray(self.factor_sizes))).any():
            raise ValueError(f"factor values outside 0 .. size-1 (sizes {self.factor_sizes})")
        position = f @ self.bases[self.kept]
        return position if self.lookup is None else self.lookup[position]

    def sample(self, n: int, random_state) -> np.ndarray:
        random_state = _as_state(random_state)
        out = np.zeros((int(n), len(self.factor_sizes)), np.int64)
        for j, size in enumerate(self.factor_sizes):
            out[:, j] = _randint(random_state, size, int(n))
        return out


class _GroundTruthFile:
    _grid: _Grid
    path: Path

    @property
    def factor_names(self) -> list[str]:
        return list(self._grid.factor_names)

    @property
    def factor_sizes(self) -> list[int]:
        return list(self._grid.factor_sizes)

    @property
    def factors_num_values(self) -> list[int]:  # disentanglement_lib's name
        return self.factor_sizes

    @property
    def num_factors(self) -> int:
        return len(self._grid.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self._grid.all_sizes))

    def sample_factors(self, n: int, random_state=None) -> np.ndarray:
        """``n`` factor rows, int64 ``(n, num_factors)``, independent and uniform."""
        return self._grid.sample(n, random_state)

    def rows_of(self, factors) -> np.ndarray:
        """Row indices in the file of the given factor rows."""
        return self._grid.rows(factors)

    def render(self, factors) -> np.ndarray:
        """uint8 ``(n, 64, 64, C)`` images of the given factor rows."""
        return self.images_at(self.rows_of(factors))

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.render(factors)

    def sample(self, n: int, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images and their factors, uniform over the grid."""
        factors = self.sample_factors(n, random_state)
        return self.render(factors), factors

    def images_at(self, rows) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, factor_sizes={self.factor_sizes})"


# --- dSprites ---------------------------------------------------------------------------------------
class DSprites(_GroundTruthFile):
    """dSprites from its published ``.npz`` (see the module docstring).

    ``channels``: 1 (the published greyscale, ``(n, 64, 64, 1)``) or 3 (repeated to RGB, for
    models built for colour images). Values are 0 or 255.
    """

    def __init__(self, path: str | os.PathLike, channels: int = 1):
        if channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        self.path = Path(path)
        self.channels = channels
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path}: no such file (dSprites: dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz)"
            )
        if not zipfile.is_zipfile(self.path):
            raise GroundTruthFileError(f"{self.path}: not an .npz file")
        with np.load(self.path, allow_pickle=False) as data:
            if "latents_classes" not in data.files or "imgs" not in data.files:
                raise GroundTruthFileError(f"{self.path}: not a dSprites .npz (needs 'imgs' and 'latents_classes', "
                                           f"has {sorted(data.files)})")
            try:
                classes = np.asarray(data["latents_classes"])
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise GroundTruthFileError(f"{self.path}: unreadable latents_classes ({exc})") from exc
        self._grid = _Grid(classes, DSPRITES_FACTORS, str(self.path))
        try:
            self._bits, self.image_shape2d = _read_packed_imgs(self.path, len(classes))
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged member of the archive
            raise GroundTruthFileError(f"{self.path}: unreadable imgs ({exc})") from exc

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.image_shape2d, self.channels)

    def images_at(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        h, w = self.image_shape2d
        img = np.unpackbits(self._bits[rows], axis=1, count=h * w).reshape(len(rows), h, w, 1)
        img *= 255
        return np.repeat(img, 3, axis=3) if self.channels == 3 else img


def _read_packed_imgs(path: Path, n: int, chunk_bytes: int = 64 << 20) -> tuple[np.ndarray, tuple[int, int]]:
    """The ``imgs`` member of an ``.npz`` as ``(N, ceil(H*W/8))`` packed bits, read in chunks."""
    with zipfile.ZipFile(path) as zf:
        member = "imgs.npy"
        if member not in zf.namelist():
            raise GroundTruthFileError(f"{path}: no imgs array")
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if len(shape) != 3 or shape[0] != n:
                raise GroundTruthFileError(f"{path}: imgs has shape {shape}, expected ({n}, H, W)")
            if dtype.hasobject:
                raise GroundTruthFileError(f"{path}: imgs is an object array")
            h, w = int(shape[1]), int(shape[2])
            packed = np.empty((n, (h * w + 7) // 8), np.uint8)
            if fortran:  # not the published layout: read it whole
                imgs = np.asarray(np.load(path, allow_pickle=False)["imgs"])
                _pack_into(packed, 0, imgs.reshape(n, h * w), path)
                return packed, (h, w)
            per_image = h * w * dtype.itemsize
            step = max(1, chunk_bytes // per_image)
            for lo in range(0, n, step):
                k = min(step, n - lo)
                buf = f.read(k * per_image)
                if len(buf) != k * per_image:
                    raise GroundTruthFileError(f"{path}: imgs is truncated")
                _pack_into(packed, lo, np.frombuffer(buf, dtype=dtype).reshape(k, h * w), path)
    return packed, (h, w)


def _pack_into(packed: np.ndarray, lo: int, flat: np.ndarray, path) -> None:
    if flat.size and (flat.min() < 0 or flat.max() > 1):
        raise GroundTruthFileError(f"{path}: dSprites images must be binary (0/1), found values from {flat.min()} to {flat.max()}")
    packed[lo: lo + len(flat)] = np.packbits(flat.astype(np.uint8, copy=False), axis=1)


# --- 3D Shapes --------------------------------------------------------------------------------------
class Shapes3D(_GroundTruthFile):
    """3D Shapes from its published ``3dshapes.h5`` (see the module docstring).

    ``in_memory``: True (read all images into memory), False (read rows from the file on
    demand) or None (True when they fit in half of the available memory).
    """

    def __init__(self, path: str | os.PathLike, in_memory: bool | None = None):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file (3D Shapes: 3dshapes.h5)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise GroundTruthFileError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        if "images" not in self._file or "labels" not in self._file:
            keys = sorted(self._file.keys())
            self._file.close()
            raise GroundTruthFileError(f"{self.path}: not a 3D Shapes .h5 (needs 'images' and 'labels', has {keys})")
        images, labels = self._file["images"], np.asarray(self._file["labels"][()], np.float64)
        if images.ndim != 4 or images.shape[0] != len(labels) or images.dtype != np.uint8:
            raise GroundTruthFileError(f"{self.path}: images must be uint8 (N, H, W, 3) matching labels, "
                                       f"got {images.dtype} {images.shape} for {len(labels)} labels")
        if labels.ndim != 2 or labels.shape[1] != len(SHAPES3D_FACTORS):
            raise GroundTruthFileError(f"{self.path}: labels must be (N, 6), got {labels.shape}")
        classes = np.empty(labels.shape, np.int64)
        self.label_values: list[np.ndarray] = []
        for j in range(labels.shape[1]):
            _, first, inverse = np.unique(np.round(labels[:, j], 6), return_index=True, return_inverse=True)
            classes[:, j] = inverse.reshape(-1)
            self.label_values.append(labels[first, j])  # the file's value of each class
        self._grid = _Grid(classes, SHAPES3D_FACTORS, str(self.path))
        self.image_shape = tuple(int(s) for s in images.shape[1:])
        if in_memory is None:
            in_memory = images.size < _available_memory() // 2
        self._images = None
        if in_memory:
            self._images = np.empty(images.shape, np.uint8)
            images.read_direct(self._images)
            self._file.close()
            self._file = None

    def images_at(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if self._images is not None:
            return self._images[rows]
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._file["images"][unique][inverse.reshape(-1)]

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# --- a ground truth whose observations are the factors themselves ----------------------------------
class FactorsAsObservations:
    """Uniform independent factors whose "observations" are the factor values themselves.

    For testing and timing the metrics: ``encode`` sees float ``(n, K)`` factor rows, so an
    identity, permutation, rotation or noise ``encode`` gives a representation of known quality.
    """

    def __init__(self, factor_sizes):
        self.factor_sizes = [int(s) for s in factor_sizes]
        self.factor_names = [f"factor_{j}" for j in range(len(self.factor_sizes))]

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, n: int, random_state=None) -> np.ndarray:
        random_state = _as_state(random_state)
        out = np.zeros((int(n), len(self.factor_sizes)), np.int64)
        for j, size in enumerate(self.factor_sizes):
            out[:, j] = _randint(random_state, size, int(n))
        return out

    def render(self, factors) -> np.ndarray:
        return np.asarray(factors, np.float64)

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.render(factors)
