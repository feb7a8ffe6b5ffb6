"""A procedural dSprites: the factor grid of Matthey et al.'s dSprites, rendered here, any subset.

The published ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` holds every point of the grid
colour (1) × shape (3: square, ellipse, heart) × scale (6, linspace(0.5, 1)) × orientation
(40, linspace(0, 2π), so 0 and 2π both appear, as in the file) × position x (32, linspace(0, 1)) ×
position y (32, linspace(0, 1)): 737,280 binary 64×64 images (9 GB as 8-bit RGB). The published
file cannot be downloaded here; this renderer draws the same grid with the same factor order and
values (``FACTOR_VALUES``, the file's ``latents_values``), so the metrics and the β study run on the
data where the effect of β is known. The drawing is this project's own (the sprites' exact pixels
differ from the file's); :class:`facevae.data.groundtruth.DSprites` reads the real file.

It follows the ground-truth contract (``factor_names``, ``factor_sizes``, ``sample_factors``,
``render``). The constant colour is not a factor of variation and is left out, as
disentanglement_lib's ``dsprites_full`` (the setting of the published metric tables) does.
``write_dsprites_packed`` writes a random subset as a packed dataset (RGB, 0/255) to train on.
"""

from __future__ import annotations

import os

import numpy as np

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ["shape", "scale", "orientation", "position_x", "position_y"]
FACTOR_SIZES = [3, 6, 40, 32, 32]
FACTOR_VALUES = {
    "color": np.array([1.0]),
    "shape": np.array([1.0, 2.0, 3.0]),
    "scale": np.linspace(0.5, 1.0, 6),
    "orientation": np.linspace(0.0, 2 * np.pi, 40),
    "position_x": np.linspace(0.0, 1.0, 32),
    "position_y": np.linspace(0.0, 1.0, 32),
}
SIZE = 64
MARGIN = 16  # the sprite's centre stays this far from the border (positions 0..1 span 16..48 px)
HALF_SIDE = 10.0  # a square of scale 1 is about 20 px wide, as in the published images
ELLIPSE_ASPECT = 0.5
DSPRITES_SOURCE = "procedural-dsprites"
SUBSAMPLES = 1  # per axis: a pixel is on when its centre (most of its sub-samples) falls inside the sprite


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether sprite-frame points (u, v) (1 = the sprite's half side) fall inside the shape."""
    if shape == 0:
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == 1:
        return u * u + (v / ELLIPSE_ASPECT) ** 2 <= 1
    # the implicit heart (x² + y² − 1)³ − x² y³ ≤ 0, turned point-up and scaled to the square's extent
    hx, hy = 1.15 * u, 0.15 - 1.15 * v
    r = hx * hx + hy * hy - 1
    return r * r * r <= hx * hx * hy * hy * hy


class ProceduralDSprites:
    """dSprites' factor grid, rendered on demand (see the module docstring)."""

    factor_names = list(FACTOR_NAMES)
    factor_sizes = list(FACTOR_SIZES)
    factors_num_values = list(FACTOR_SIZES)  # disentanglement_lib's name

    def __init__(self, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        self.channels = channels
        step = ((np.arange(SIZE * SUBSAMPLES) + 0.5) / SUBSAMPLES).astype(np.float32)  # float32: 2x faster
        self._y, self._x = np.meshgrid(step, step, indexing="ij")

    @property
    def num_factors(self) -> int:
        return len(FACTOR_SIZES)

    def __len__(self) -> int:
        return int(np.prod(FACTOR_SIZES))

    def sample_factors(self, n: int, random_state=None) -> np.ndarray:
        """``n`` factor rows, int64 ``(n, 5)``, independent and uniform (one randint per factor, in order)."""
        state = random_state if isinstance(random_state, (np.random.RandomState, np.random.Generator)) \
            else np.random.RandomState(random_state)
        draw = state.integers if isinstance(state, np.random.Generator) else state.randint
        return np.stack([draw(0, size, int(n)) for size in FACTOR_SIZES], axis=1).astype(np.int64)

    def values(self, factors) -> dict[str, np.ndarray]:
        """The published ``latents_values`` of factor rows, by factor name."""
        f = self._checked(factors)
        return {name: FACTOR_VALUES[name][f[:, j]] for j, name in enumerate(FACTOR_NAMES)}

    def _checked(self, factors) -> np.ndarray:
        f = np.asarray(factors, np.int64)
        f = f[None] if f.ndim == 1 else f
        if f.ndim != 2 or f.shape[1] != len(FACTOR_SIZES) or (f < 0).any() or (f >= FACTOR_SIZES).any():
            raise ValueError(f"factors must be (n, 5) classes below {FACTOR_SIZES}, got shape {f.shape}")
        return f

    def render(self, factors, chunk: int = 512) -> np.ndarray:
        """uint8 ``(n, 64, 64, channels)`` images of the given factor rows, values 0 or 255."""
        f = self._checked(factors)
        out = np.empty((len(f), SIZE, SIZE, self.channels), np.uint8)
        for lo in range(0, len(f), chunk):
            out[lo:lo + chunk] = self._render_chunk(f[lo:lo + chunk])[..., None]
        return out

    def _render_chunk(self, f: np.ndarray) -> np.ndarray:
        v = {name: value.astype(np.float32) for name, value in self.values(f).items()}
        span = SIZE - 2 * MARGIN
        cx = (MARGIN + v["position_x"] * span)[:, None, None]
        cy = (MARGIN + v["position_y"] * span)[:, None, None]
        theta = v["orientation"][:, None, None]
        half = (HALF_SIDE * v["scale"])[:, None, None]
        dx, dy = self._x[None] - cx, self._y[None] - cy
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / half
        w = (-dx * np.sin(theta) + dy * np.cos(theta)) / half
        inside = np.empty(u.shape, bool)
        for shape in range(len(SHAPES)):
            rows = f[:, 0] == shape
            inside[rows] = _inside(shape, u[rows], w[rows])
        hits = inside.reshape(len(f), SIZE, SUBSAMPLES, SIZE, SUBSAMPLES).mean(axis=(2, 4))
        return np.where(hits >= 0.5, 255, 0).astype(np.uint8)

    attribute_names = list(SHAPES)

    def attributes(self, factors) -> np.ndarray:
        """uint8 (n, 3): the shape, one-hot (what a conditional model of the packed subset is given)."""
        return np.eye(len(SHAPES), dtype=np.uint8)[self._checked(factors)[:, 0]]

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.render(factors)

    def sample(self, n: int, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(n, random_state)
        return self.render(factors), factors


def write_dsprites_packed(out: str | os.PathLike, n: int, seed: int = 0, chunk: int = 2048, progress: bool = True):
    """A random subset of ``n`` grid points (uniform, with repeats possible) as a packed RGB dataset at ``out``;
    its attributes are the three shapes, one-hot, so a conditional model can be given the shape."""
    from facevae.data.packed import write_rendered
    from facevae.data.synthetic import generate_celeba_like_partition

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    sprites = ProceduralDSprites(channels=3)
    rng = np.random.default_rng(seed)
    factors = sprites.sample_factors(n, rng)
    partition = generate_celeba_like_partition(n, rng)
    return write_rendered(
        out, factors, sprites.render, SIZE, SIZE, chunk=chunk, progress=progress, what="writing dSprites",
        attributes=sprites.attributes(factors), attribute_names=list(SHAPES),
        partition=partition, image_ids=[f"dsprites_{i + 1:06d}" for i in range(n)], factors=factors,
        factor_names=FACTOR_NAMES, factor_sizes=FACTOR_SIZES, source=DSPRITES_SOURCE,
        preprocessing=f"procedural dSprites, {n} uniform draws of the factor grid, seed {seed}")

