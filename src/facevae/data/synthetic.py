"""Synthetic faces: a procedural renderer of front-facing cartoon faces with known factors.

``SyntheticFaces`` follows the ground-truth-data contract of the disentanglement literature:
``factor_names``, ``factor_sizes``, ``sample_factors(n, rng)`` and ``render(factors)``. Every
factor takes a finite number of integer values ``0 .. size-1`` and each value is visible at
64x64. CelebA-named binary attributes are derived from the factors, and the ``"celeba"`` prior
draws the factors from a correlated, imbalanced joint distribution so that those attributes have
roughly CelebA's positive rates and correlations (a latent sex drives beard, lipstick, hair
length; age drives gray hair and glasses; ...). The ``"uniform"`` prior draws every factor
independently and uniformly, as the disentanglement metrics expect.

Factors (index: name, values):

====  ===========  ==========================================================================
 0    hair_color   black, brown, blond, gray, auburn
 1    hair_volume  cropped, short, shoulder, long (the hair mass around and below the head)
 2    bangs        none, bangs (a fringe over the forehead)
 3    rotation     far_left, left, frontal, right, far_right (face yaw: inner features shift)
 4    face_width   narrow, slim, average, wide, chubby
 5    skin_tone    pale, light, tan, dark
 6    smile        neutral, mouth_open, smile, open_smile
 7    eyeglasses   none, glasses
 8    beard        none, stubble, goatee, full
 9    lipstick     none, lipstick (red lips)
10    background   blue, white, teal, olive (backdrop colour, with a matching shirt colour)
11    hat          none, hat
12    sex          female, male (jaw shape, eyebrow weight, eyelashes, neck width)
13    age          young, older (forehead lines, smile folds, under-eye bags)
====  ===========  ==========================================================================

Rendering is vectorised numpy over a whole chunk of faces at once: every shape is an analytic,
anti-aliased region (a signed-distance approximation turned into coverage by a linear ramp one
pixel wide), composited in layers (background, shirt, hair behind the head, neck, ears, face,
beard, lines, nose, eyes, eyebrows, mouth, hair over the forehead, bangs, glasses, hat). Shapes
live in a unit "face frame" ([-1, 1] on both axes, y pointing down) that maps onto a centred
square of ``frame`` pixels; a canvas bigger than the frame simply shows more of the same scene,
which is how the fake CelebA images (178x218 with the face in the central 148 square) are made.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevae.data.attributes import CELEBA_ATTRIBUTES, CELEBA_PARTITION_SIZES

F32 = np.float32

FACTORS: list[tuple[str, list[str]]] = [
    ("hair_color", ["black", "brown", "blond", "gray", "auburn"]),
    ("hair_volume", ["cropped", "short", "shoulder", "long"]),
    ("bangs", ["none", "bangs"]),
    ("rotation", ["far_left", "left", "frontal", "right", "far_right"]),
    ("face_width", ["narrow", "slim", "average", "wide", "chubby"]),
    ("skin_tone", ["pale", "light", "tan", "dark"]),
    ("smile", ["neutral", "mouth_open", "smile", "open_smile"]),
    ("eyeglasses", ["none", "glasses"]),
    ("beard", ["none", "stubble", "goatee", "full"]),
    ("lipstick", ["none", "lipstick"]),
    ("background", ["blue", "white", "teal", "olive"]),
    ("hat", ["none", "hat"]),
    ("sex", ["female", "male"]),
    ("age", ["young", "older"]),
]
FACTOR_NAMES = [name for name, _ in FACTORS]
FACTOR_SIZES = [len(values) for _, values in FACTORS]
_F = {name: i for i, name in enumerate(FACTOR_NAMES)}

# --- palette (RGB, 0..255) -----------------------------------------------------------------------
HAIR_COLORS = np.array(
    [[38, 32, 34], [112, 70, 40], [226, 192, 112], [178, 178, 182], [168, 72, 34]], F32
)
SKIN_COLORS = np.array([[252, 232, 220], [236, 196, 164], [196, 144, 104], [120, 80, 56]], F32)
BACKGROUND_TOP = np.array([[160, 196, 232], [242, 238, 228], [52, 100, 110], [136, 150, 82]], F32)
BACKGROUND_BOTTOM = np.array([[118, 158, 205], [214, 208, 194], [34, 70, 80], [104, 118, 58]], F32)
SHIRT_COLORS = np.array([[44, 52, 84], [120, 40, 44], [206, 204, 196], [48, 56, 92]], F32)
LIPSTICK = np.array([190, 28, 60], F32)
MOUTH_INSIDE = np.array([86, 24, 32], F32)
TEETH = np.array([244, 242, 234], F32)
SCLERA = np.array([248, 248, 246], F32)
IRIS = np.array([46, 34, 30], F32)
LID = np.array([34, 24, 24], F32)
GLASSES_FRAME = np.array([22, 22, 26], F32)
GLASSES_LENS = np.array([206, 226, 240], F32)
HAT = np.array([98, 44, 134], F32)
HAT_BAND = np.array([58, 24, 84], F32)

# --- geometry (face-frame units) -----------------------------------------------------------------
FACE_HALF_WIDTHS = np.array([0.45, 0.5, 0.55, 0.605, 0.665], F32)
HEAD_CY = 0.06
HEAD_B_TOP = 0.82
EYE_Y = 0.02
EYE_DX = 0.235
NOSE_Y = 0.29
MOUTH_Y = 0.5
MOUTH_WIDTH = 1.2  # scales the mouth shapes below horizontally

# Mouth shapes: (lips lens, inside lens, teeth lens), each lens (top0, top2, bot0, bot2): the
# region between the parabolas v = my + top0 + top2*du^2 and v = my + bot0 + bot2*du^2.
_EMPTY = (0.0, 0.0, -0.1, 0.0)
MOUTHS = np.array(
    [
        [(-0.040, 0.9, 0.042, -1.1), (-0.007, 0.2, 0.007, -0.2), _EMPTY],  # neutral
        [(-0.052, 1.2, 0.085, -1.8), (-0.022, 0.8, 0.056, -1.3), _EMPTY],  # mouth_open
        [(-0.022, -1.0, 0.052, -2.5), (0.004, -1.45, 0.018, -1.8), _EMPTY],  # smile
        [(-0.045, -0.55, 0.125, -3.9), (-0.018, -0.62, 0.100, -3.6), (-0.030, -0.62, 0.030, -1.3)],  # open smile
    ],
    F32,
)


def as_generator(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, None or a legacy RandomState."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.RandomState):
        return np.random.default_rng(rng.randint(0, 2**31 - 1, size=4))
    return np.random.default_rng(rng)


def _draw(rng: np.random.Generator, probs) -> np.ndarray:
    """One categorical draw per row of ``probs`` (n, k) (rows need not be normalised)."""
    probs = np.asarray(probs, np.float64)
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(len(probs))[:, None]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _rows(n: int, probs) -> np.ndarray:
    return np.broadcast_to(np.asarray(probs, np.float64), (n, len(probs)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _row_uniforms(factors: np.ndarray, k: int, salt: int = 0) -> np.ndarray:
    """(n, k) uniforms in [0, 1) that depend only on each row's factor values (and ``salt``)."""
    h = np.full(len(factors), np.uint64(salt) + np.uint64(0x1234567), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(factors.shape[1]):
            h = _splitmix64(h ^ factors[:, j].astype(np.uint64))
        cols = [_splitmix64(h + np.uint64(j + 1)) for j in range(k)]
    bits = np.stack(cols, axis=1) >> np.uint64(11)
    return bits.astype(np.float64) / float(2**53)


# --- attributes ----------------------------------------------------------------------------------
# CelebA attributes that the factors express, as functions of the factor matrix.
_ATTRIBUTE_RULES = {
    "5_o_Clock_Shadow": lambda f: f[:, _F["beard"]] == 1,
    "Bangs": lambda f: f[:, _F["bangs"]] == 1,
    "Black_Hair": lambda f: f[:, _F["hair_color"]] == 0,
    "Blond_Hair": lambda f: f[:, _F["hair_color"]] == 2,
    "Brown_Hair": lambda f: f[:, _F["hair_color"]] == 1,
    "Chubby": lambda f: f[:, _F["face_width"]] == 4,
    "Eyeglasses": lambda f: f[:, _F["eyeglasses"]] == 1,
    "Goatee": lambda f: f[:, _F["beard"]] == 2,
    "Gray_Hair": lambda f: f[:, _F["hair_color"]] == 3,
    "Male": lambda f: f[:, _F["sex"]] == 1,
    "Mouth_Slightly_Open": lambda f: (f[:, _F["smile"]] == 1) | (f[:, _F["smile"]] == 3),
    "No_Beard": lambda f: f[:, _F["beard"]] <= 1,
    "Pale_Skin": lambda f: f[:, _F["skin_tone"]] == 0,
    "Smiling": lambda f: f[:, _F["smile"]] >= 2,
    "Wearing_Hat": lambda f: f[:, _F["hat"]] == 1,
    "Wearing_Lipstick": lambda f: f[:, _F["lipstick"]] == 1,
    "Young": lambda f: f[:, _F["age"]] == 0,
}
EXPRESSIBLE_ATTRIBUTES = [name for name in CELEBA_ATTRIBUTES if name in _ATTRIBUTE_RULES]

# The other CelebA attributes carry no image signal here. They are drawn at random (seeded by the
# row's factors), with rates conditional on one expressible attribute so that the obvious
# correlations of CelebA survive: (condition, rate when it is 1, rate when it is 0). The
# marginal rates come out close to CelebA's.
_RANDOM_ATTRIBUTES = {
    "Arched_Eyebrows": ("Male", 0.035, 0.44),
    "Attractive": ("Male", 0.275, 0.68),
    "Bags_Under_Eyes": ("Young", 0.12, 0.47),
    "Bald": ("Male", 0.048, 0.0),
    "Big_Lips": ("Male", 0.16, 0.30),
    "Big_Nose": ("Male", 0.41, 0.10),
    "Blurry": ("Male", 0.05, 0.05),
    "Bushy_Eyebrows": ("Male", 0.25, 0.06),
    "Double_Chin": ("Chubby", 0.45, 0.025),
    "Heavy_Makeup": ("Wearing_Lipstick", 0.82, 0.01),
    "High_Cheekbones": ("Smiling", 0.77, 0.155),
    "Mustache": ("Male", 0.095, 0.0),
    "Narrow_Eyes": ("Male", 0.12, 0.12),
    "Oval_Face": ("Male", 0.22, 0.32),
    "Pointy_Nose": ("Male", 0.14, 0.38),
    "Receding_Hairline": ("Young", 0.05, 0.18),
    "Rosy_Cheeks": ("Male", 0.008, 0.115),
    "Sideburns": ("Male", 0.143, 0.0),
    "Straight_Hair": ("Male", 0.21, 0.21),
    "Wavy_Hair": ("Male", 0.11, 0.47),
    "Wearing_Earrings": ("Male", 0.01, 0.32),
    "Wearing_Necklace": ("Male", 0.01, 0.20),
    "Wearing_Necktie": ("Male", 0.16, 0.005),
}
assert set(EXPRESSIBLE_ATTRIBUTES) | set(_RANDOM_ATTRIBUTES) == set(CELEBA_ATTRIBUTES)


# --- the painter ----------------------------------------------------------------------------------
def _c(x) -> np.ndarray:
    """(k,) -> (k, 1, 1) for broadcasting over a window."""
    return np.asarray(x, F32)[:, None, None]


class _Painter:
    """A chunk of canvases (k, 3, H, W) float32 in 0..255 plus anti-aliased shape primitives.

    Shape primitives return a *ramp*: coverage before clipping, (k, h, w) over a window, where
    1 and more is inside, 0 and less outside, and the transition is about one pixel wide.
    Intersections are ``np.minimum`` of ramps, unions ``np.maximum``.
    """

    def __init__(self, n: int, height: int, width: int, frame: float):
        self.H, self.W = height, width
        self.pw = 2.0 / frame  # one pixel in face-frame units
        self.u = ((np.arange(width) + 0.5 - width / 2) * self.pw).astype(F32)
        self.v = ((np.arange(height) + 0.5 - height / 2) * self.pw).astype(F32)
        self.img = np.empty((n, 3, height, width), F32)

    def window(self, umin, umax, vmin, vmax, margin: int = 2):
        """Pixel slices (rows, cols) covering face-frame box [umin, umax] x [vmin, vmax] (plus margin)."""
        j0 = int(np.floor(float(umin) / self.pw + self.W / 2 - 0.5)) - margin
        j1 = int(np.ceil(float(umax) / self.pw + self.W / 2 - 0.5)) + margin + 1
        i0 = int(np.floor(float(vmin) / self.pw + self.H / 2 - 0.5)) - margin
        i1 = int(np.ceil(float(vmax) / self.pw + self.H / 2 - 0.5)) + margin + 1
        j0, i0 = min(max(j0, 0), self.W), min(max(i0, 0), self.H)
        j1, i1 = max(min(j1, self.W), j0), max(min(i1, self.H), i0)
        return slice(i0, i1), slice(j0, j1)  # possibly empty: the shapes then draw nothing

    def box(self, cx, cy, hw, hh, margin: int = 2):
        """Window around boxes centred at (cx, cy) with half sizes (hw, hh), union over the chunk."""
        cx, cy = np.asarray(cx), np.asarray(cy)
        return self.window((cx - hw).min(), (cx + hw).max(), (cy - hh).min(), (cy + hh).max(), margin)

    def grids(self, win, cx, cy):
        ys, xs = win
        return self.u[xs][None, None, :] - _c(cx), self.v[ys][None, :, None] - _c(cy)

    def ellipse(self, win, cx, cy, a, b, p=2.0, r=None, soft=0.0):
        """Inside of |du/a|^p + |dv/b|^p = 1 (p=2: an ellipse; larger p: a rounded rectangle).

        ``soft``: width of the edge in face-frame units when wider than a pixel (shading).
        """
        du, dv = self.grids(win, cx, cy)
        a, b = np.asarray(a, F32), np.asarray(b, F32)
        if np.isscalar(p) and p == 2.0:
            x = du / _c(a)
            y = dv / _c(b)
            x *= x
            y *= y
            p_arr = 2.0
        else:
            p_arr = _c(np.broadcast_to(np.asarray(p, F32), a.shape))
            x = np.power(np.abs(du) / _c(a), p_arr)
            y = np.power(np.abs(dv) / _c(b), p_arr)
        r = np.sqrt(a * b) if r is None else np.asarray(r, F32)
        s = _c(r) / (p_arr * max(self.pw, soft))  # d(distance)/d(level) near the outline, in pixels
        y *= -s
        y += 0.5 + s
        x *= s
        return np.subtract(y, x, dtype=F32)

    def ring(self, win, cx, cy, a, b, t, r=None):
        """An elliptic outline of half-thickness ``t``."""
        du, dv = self.grids(win, cx, cy)
        a, b = np.asarray(a, F32), np.asarray(b, F32)
        r = np.sqrt(a * b) if r is None else np.asarray(r, F32)
        s = _c(r) / (2 * self.pw)
        x = du / _c(a)
        x *= x
        x *= s
        y = dv / _c(b)
        y *= y
        y -= 1
        y *= s
        g = x + y
        np.abs(g, out=g)
        np.subtract(_c(np.asarray(t, F32) / self.pw + 0.5), g, out=g)
        return g

    def lens(self, win, cx, cy, t0, t2, b0, b2, halfw=None):
        """Between the parabolas v = cy + t0 + t2 du^2 (top) and v = cy + b0 + b2 du^2 (bottom)."""
        du, dv = self.grids(win, cx, cy)
        du2 = du * du
        dvp = dv / self.pw
        top = (_c(t0) + _c(t2) * du2) / self.pw
        top -= 0.5
        top = np.subtract(dvp, top, dtype=F32)
        bot = (_c(b0) + _c(b2) * du2) / self.pw
        bot += 0.5
        bot = np.subtract(bot, dvp, dtype=F32)
        np.minimum(top, bot, out=top)
        if halfw is not None:
            side = (_c(halfw) - np.abs(du)) / self.pw + 0.5
            np.minimum(top, side, out=top)
        return top

    def above(self, win, c):
        """Coverage ramp of v < c(u): c is (k,) or (k, 1, w); returns (k, h, 1) or (k, h, w)."""
        ys, _ = win
        c = _c(c) if np.ndim(c) == 1 else c
        return (c - self.v[ys][None, :, None]) / self.pw + 0.5

    def below(self, win, c):
        ys, _ = win
        c = _c(c) if np.ndim(c) == 1 else c
        return (self.v[ys][None, :, None] - c) / self.pw + 0.5

    def over(self, win, ramp, color, idx=None, opacity=None):
        """Composite ``color`` (k, 3) or (3,) with coverage ``ramp`` over the canvases ``idx``."""
        np.clip(ramp, 0.0, 1.0, out=ramp)
        if opacity is not None:
            ramp *= opacity if np.isscalar(opacity) else _c(opacity)
        color = np.asarray(color, F32)
        color = color[:, :, None, None] if color.ndim == 2 else color[None, :, None, None]
        ys, xs = win
        if idx is None:
            target = self.img[:, :, ys, xs]
            diff = color - target
            diff *= ramp[:, None]
            target += diff
        else:
            target = self.img[idx, :, ys, xs]
            diff = color - target
            diff *= ramp[:, None]
            target += diff
            self.img[idx, :, ys, xs] = target


# --- the scene: per-face parameters in face-frame units -------------------------------------------
class _PerFace:
    """Base of the scene's parameter groups: every field holds one entry per face (first axis)."""


class _Restricted:
    """A parameter group restricted to the faces ``idx``, each array indexed when first read.

    A layer reads a handful of the scene's arrays; indexing all of them for every layer would
    cost about a tenth of the render time.
    """

    def __init__(self, params: _PerFace, idx: np.ndarray):
        self._params = params
        self._idx = idx

    def __getattr__(self, name: str):
        value = getattr(self._params, name)
        value = _Restricted(value, self._idx) if isinstance(value, _PerFace) else value[self._idx]
        self.__dict__[name] = value
        return value

    def __len__(self) -> int:
        return len(self._idx)


@dataclass
class _Head(_PerFace):
    x: np.ndarray  # centre; shifted towards the side the face turns to
    yaw: np.ndarray  # -1..1; > 0: turned to the viewer's right
    half_width: np.ndarray
    jaw_half_width: np.ndarray
    jaw_half_height: np.ndarray
    jaw_exponent: np.ndarray  # of the jaw's superellipse: 2 round, larger square
    skin: np.ndarray  # (n, 3)
    blush: np.ndarray  # (n, 3): the lifted cheeks of a smile
    neck_half_width: np.ndarray
    ear_left_x: np.ndarray  # far off the canvas where the hair covers the ears
    ear_right_x: np.ndarray


@dataclass
class _Eyes(_PerFace):
    left_x: np.ndarray
    right_x: np.ndarray
    left_half_width: np.ndarray
    right_half_width: np.ndarray
    half_height: np.ndarray
    iris_shift: np.ndarray
    lid_thickness: np.ndarray


def _eye_sides(eyes: _Eyes) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(centre x, half width) of the left eye, then of the right one."""
    return (eyes.left_x, eyes.left_half_width), (eyes.right_x, eyes.right_half_width)


@dataclass
class _Brows(_PerFace):
    y: np.ndarray
    thickness: np.ndarray
    curvature: np.ndarray
    half_width: np.ndarray
    color: np.ndarray  # (n, 3)


@dataclass
class _Nose(_PerFace):
    x: np.ndarray
    half_width: np.ndarray


@dataclass
class _Mouth(_PerFace):
    x: np.ndarray
    shapes: np.ndarray  # (n, 3, 4): lips, inside, teeth lenses as in MOUTHS
    lip_color: np.ndarray  # (n, 3)


@dataclass
class _Hair(_PerFace):
    color: np.ndarray  # (n, 3)
    back_color: np.ndarray  # (n, 3): the hair behind the head, in its shadow
    back_x: np.ndarray  # the hair behind the head turns less than the face
    back_half_width: np.ndarray
    back_cy: np.ndarray
    back_half_height: np.ndarray
    long_cy: np.ndarray  # the mass down the back of long hair; far off the canvas otherwise
    long_half_width: np.ndarray
    long_half_height: np.ndarray
    cap_half_width: np.ndarray  # the hair over the top of the head
    cap_half_height: np.ndarray
    hairline_y: np.ndarray  # at the middle of the forehead
    hairline_curvature: np.ndarray  # how far the hairline curves down at the temples
    beard_color: np.ndarray  # (n, 3)
    stubble_color: np.ndarray  # (n, 3)


@dataclass
class _Backdrop(_PerFace):
    top: np.ndarray  # (n, 3), the gradient's colour at the top of the canvas
    bottom: np.ndarray
    shirt: np.ndarray


@dataclass
class _Features(_PerFace):
    """Which faces have each optional layer."""

    long_hair: np.ndarray
    ears: np.ndarray
    bangs: np.ndarray
    glasses: np.ndarray
    stubble: np.ndarray
    goatee: np.ndarray
    full_beard: np.ndarray
    hat: np.ndarray
    old: np.ndarray
    smiling: np.ndarray
    teeth: np.ndarray


@dataclass
class _Scene(_PerFace):
    head: _Head
    eyes: _Eyes
    brows: _Brows
    nose: _Nose
    mouth: _Mouth
    hair: _Hair
    backdrop: _Backdrop
    has: _Features

    def __len__(self) -> int:
        return len(self.head.x)


def _scene(f: np.ndarray) -> _Scene:
    """The scene parameters of each face from its factor row."""
    factor = {name: f[:, j] for name, j in _F.items()}
    male = factor["sex"] == 1
    old = factor["age"] == 1
    smiling = factor["smile"] >= 2
    short_hair = factor["hair_volume"] <= 1
    yaw = ((factor["rotation"] - 2) / 2).astype(F32)
    head = _head_params(factor, yaw, male, old, short_hair)
    hair = _hair_params(factor, head)
    has = _Features(
        long_hair=~short_hair,
        ears=short_hair,
        bangs=factor["bangs"] == 1,
        glasses=factor["eyeglasses"] == 1,
        stubble=factor["beard"] == 1,
        goatee=factor["beard"] == 2,
        full_beard=factor["beard"] == 3,
        hat=factor["hat"] == 1,
        old=old,
        smiling=smiling,
        teeth=factor["smile"] == 3,
    )
    return _Scene(
        head=head,
        eyes=_eye_params(head, male, smiling),
        brows=_brow_params(hair.color, male),
        # nose and mouth shift more with yaw than the eyes: they stand out of the face
        nose=_Nose(x=(head.x + 0.2 * yaw).astype(F32), half_width=np.where(male, 0.075, 0.06).astype(F32)),
        mouth=_mouth_params(head, factor["smile"], factor["lipstick"] == 1),
        hair=hair,
        backdrop=_Backdrop(
            top=BACKGROUND_TOP[factor["background"]],
            bottom=BACKGROUND_BOTTOM[factor["background"]],
            shirt=SHIRT_COLORS[factor["background"]],
        ),
        has=has,
    )


def _head_params(factor: dict, yaw: np.ndarray, male: np.ndarray, old: np.ndarray, short_hair: np.ndarray) -> _Head:
    # a turned face shows less of its far side
    half_width = FACE_HALF_WIDTHS[factor["face_width"]] * (1 - 0.05 * np.abs(yaw))
    x = (0.035 * yaw).astype(F32)
    skin = SKIN_COLORS[factor["skin_tone"]]
    # the jaw meets the cranium at full width; its exponent shapes it: a pointed (female) or
    # square (male) chin, fuller when chubby or older
    jaw_exponent = np.where(male, 2.7, 1.95) + np.where(factor["face_width"] == 4, 0.35, 0.0) + np.where(old, 0.3, 0.0)
    return _Head(
        x=x,
        yaw=yaw,
        half_width=half_width.astype(F32),
        jaw_half_width=half_width.astype(F32),
        jaw_half_height=np.where(male, 0.76, 0.8).astype(F32),
        jaw_exponent=jaw_exponent.astype(F32),
        skin=skin,
        blush=np.minimum(skin * np.array([1.04, 0.9, 0.9], F32) + np.array([14, 6, 8], F32), 255),
        neck_half_width=np.where(male, 0.26, 0.22).astype(F32),
        # the far ear tucks behind the head when it turns
        ear_left_x=np.where(short_hair, x - half_width * 0.97 - 0.07 * yaw, 50.0).astype(F32),
        ear_right_x=np.where(short_hair, x + half_width * 0.97 - 0.07 * yaw, 50.0).astype(F32),
    )


def _eye_params(head: _Head, male: np.ndarray, smiling: np.ndarray) -> _Eyes:
    yaw = head.yaw
    spread = EYE_DX * (1 - 0.14 * np.abs(yaw))
    return _Eyes(
        left_x=(head.x - spread + 0.12 * yaw).astype(F32),
        right_x=(head.x + spread + 0.12 * yaw).astype(F32),
        left_half_width=(0.085 * (1 + 0.12 * yaw)).astype(F32),
        right_half_width=(0.085 * (1 - 0.12 * yaw)).astype(F32),
        # a real smile narrows the eyes
        half_height=(np.where(male, 0.046, 0.052) * np.where(smiling, 0.76, 1.0)).astype(F32),
        iris_shift=(0.02 * yaw).astype(F32),
        # eyelashes make the female lid thicker
        lid_thickness=np.where(male, 0.006, 0.016).astype(F32),
    )


def _brow_params(hair_color: np.ndarray, male: np.ndarray) -> _Brows:
    # thick and straight (male) or thin and arched (female)
    return _Brows(
        y=np.where(male, -0.105, -0.125).astype(F32),
        thickness=np.where(male, 0.05, 0.03).astype(F32),
        curvature=np.where(male, 0.9, 3.4).astype(F32),
        half_width=np.where(male, 0.115, 0.11).astype(F32),
        color=hair_color * 0.55 + np.array([20, 14, 10], F32) * 0.45,
    )


def _mouth_params(head: _Head, smile: np.ndarray, lipstick: np.ndarray) -> _Mouth:
    shapes = MOUTHS[smile]
    shapes[:, :, [1, 3]] /= MOUTH_WIDTH**2
    shapes[lipstick, 0, 0] *= 1.3  # painted lips look fuller
    shapes[lipstick, 0, 2] *= 1.3
    natural = head.skin * np.array([0.78, 0.56, 0.58], F32) + np.array([30, 8, 12], F32)
    return _Mouth(
        x=(head.x + 0.15 * head.yaw).astype(F32),
        shapes=shapes,
        lip_color=np.where(lipstick[:, None], LIPSTICK, natural).astype(F32),
    )


def _hair_params(factor: dict, head: _Head) -> _Hair:
    volume_index = factor["hair_volume"]
    volume = volume_index.astype(F32)
    half_width, yaw = head.half_width, head.yaw
    color = HAIR_COLORS[factor["hair_color"]]
    top = HEAD_CY - 0.03 - (HEAD_B_TOP + 0.06 + 0.055 * volume)
    bottom = np.array([0.32, 0.55, 0.85, 0.85], F32)[volume_index]
    long_hair = volume >= 2
    return _Hair(
        color=color,
        back_color=color * 0.86,
        back_x=(head.x - 0.05 * yaw).astype(F32),
        back_half_width=(half_width + 0.045 + 0.045 * volume).astype(F32),
        back_cy=((top + bottom) / 2).astype(F32),
        back_half_height=((bottom - top) / 2).astype(F32),
        long_cy=np.where(long_hair, 0.33 + 0.2 * (volume - 2), 50.0).astype(F32),
        long_half_width=(half_width + 0.1 + 0.07 * (volume - 2)).astype(F32),
        long_half_height=np.where(long_hair, 0.62 + 0.2 * (volume - 2), 0.5).astype(F32),
        cap_half_width=(half_width + 0.025 + 0.02 * volume).astype(F32),
        cap_half_height=(HEAD_B_TOP + 0.035 + 0.035 * volume).astype(F32),
        hairline_y=np.array([-0.53, -0.5, -0.48, -0.47], F32)[volume_index],
        hairline_curvature=np.array([0.8, 1.0, 1.5, 1.7], F32)[volume_index],
        beard_color=color * 0.68 + 6,
        stubble_color=color * 0.45 + np.array([50, 40, 36], F32) * 0.55,
    )


def _faces_with(scene: _Scene, mask: np.ndarray) -> tuple[np.ndarray | None, _Scene | None]:
    """(indices, scene) of the faces in ``mask``: indices None when it is every face, scene None when none."""
    if not mask.any():
        return None, None
    if mask.all():
        return None, scene
    idx = np.flatnonzero(mask)
    return idx, _Restricted(scene, idx)


# --- the layers, back to front --------------------------------------------------------------------
def _paint_background(pt: _Painter, scene: _Scene) -> None:
    t = np.clip((pt.v + 1) / 2, 0, 1)[None, None, :, None]
    top, bottom = scene.backdrop.top, scene.backdrop.bottom
    pt.img[:] = top[:, :, None, None] * (1 - t) + bottom[:, :, None, None] * t


def _paint_shirt(pt: _Painter, scene: _Scene) -> None:
    win = pt.window(-1.2, 1.2, 0.85, 3.0)
    zeros = np.zeros(len(scene), F32)
    ramp = pt.ellipse(win, zeros, zeros + 1.52, zeros + 1.1, zeros + 0.64, p=2.6, r=zeros + 0.64)
    pt.over(win, ramp, scene.backdrop.shirt)


def _paint_hair_behind(pt: _Painter, scene: _Scene) -> None:
    """A cap around the skull, and for long hair a mass down the back."""
    hair = scene.hair
    win = pt.box(hair.back_x, HEAD_CY, hair.back_half_width.max(), HEAD_B_TOP + 0.3)
    ramp = pt.ellipse(win, hair.back_x, hair.back_cy, hair.back_half_width, hair.back_half_height)
    pt.over(win, ramp, hair.back_color)
    idx, sub = _faces_with(scene, scene.has.long_hair)
    if sub is None:
        return
    hair = sub.hair
    win = pt.window((hair.back_x - hair.long_half_width).min(), (hair.back_x + hair.long_half_width).max(),
                    (hair.long_cy - hair.long_half_height).min(), (hair.long_cy + hair.long_half_height).max())
    ramp = pt.ellipse(win, hair.back_x, hair.long_cy, hair.long_half_width, hair.long_half_height, p=3.0,
                      r=np.minimum(hair.long_half_width, hair.long_half_height))
    pt.over(win, ramp, hair.back_color, idx)


def _paint_neck(pt: _Painter, scene: _Scene) -> None:
    # in shadow; drawn after the hair behind the head, which long hair lets show on both sides
    head, n = scene.head, len(scene)
    win = pt.window(-0.45, 0.45, 0.4, 1.5)
    ramp = pt.ellipse(win, head.x * 0.5, np.full(n, 1.0, F32), head.neck_half_width, np.full(n, 0.48, F32), p=4.0,
                      r=head.neck_half_width)
    pt.over(win, ramp, head.skin * 0.84)


def _paint_ears(pt: _Painter, scene: _Scene) -> None:
    idx, sub = _faces_with(scene, scene.has.ears)
    if sub is None:
        return
    ey = np.full(len(sub), 0.07, F32)
    for ear_x in (sub.head.ear_left_x, sub.head.ear_right_x):
        win = pt.box(ear_x, 0.07, 0.09, 0.14)
        ramp = pt.ellipse(win, ear_x, ey, np.full_like(ey, 0.075), np.full_like(ey, 0.125))
        pt.over(win, ramp, sub.head.skin * 0.93, idx)


def _paint_face(pt: _Painter, scene: _Scene) -> None:
    """Upper half an ellipse, lower half the jaw, split at the row of the centre; then shading."""
    head, n = scene.head, len(scene)
    a, hx = head.half_width, head.x
    cy = np.full(n, HEAD_CY, F32)
    split = int(np.clip(np.ceil(HEAD_CY / pt.pw + pt.H / 2 - 0.5), 0, pt.H))
    ys, xs = pt.window((hx - a).min(), (hx + a).max(), HEAD_CY - HEAD_B_TOP, HEAD_CY)
    win = (slice(ys.start, max(min(split, ys.stop), ys.start)), xs)
    ramp = pt.ellipse(win, hx, cy, a, np.full(n, HEAD_B_TOP, F32))
    pt.over(win, ramp, head.skin)
    ys, xs = pt.window((hx - a).min(), (hx + a).max(), HEAD_CY, HEAD_CY + 0.82)
    win = (slice(min(max(ys.start, split), ys.stop), ys.stop), xs)
    ramp = pt.ellipse(win, hx, cy, head.jaw_half_width, head.jaw_half_height, p=head.jaw_exponent,
                      r=np.minimum(head.jaw_half_width, head.jaw_half_height))
    pt.over(win, ramp, head.skin)
    # soft shading: the face is lit from the front, its rim falls off into shadow
    win = pt.window((hx - a).min(), (hx + a).max(), HEAD_CY - HEAD_B_TOP, HEAD_CY + 0.85)
    lit = pt.ellipse(win, hx + 0.04 * head.yaw, cy + 0.02, a * 0.98, np.full(n, 0.9, F32), soft=0.22)
    np.subtract(1.0, lit, out=lit)
    outline = pt.ellipse(win, hx, cy, a + 0.01, np.full(n, 0.85, F32))
    np.minimum(lit, outline, out=lit)
    pt.over(win, lit, head.skin * np.array([0.8, 0.74, 0.74], F32), opacity=0.55)


def _paint_beard(pt: _Painter, scene: _Scene) -> None:
    """Full (opaque) or stubble (translucent), over the jaw and up the cheeks."""
    idx, sub = _faces_with(scene, scene.has.full_beard | scene.has.stubble)
    if sub is None:
        return
    head, k, full = sub.head, len(sub), sub.has.full_beard
    win = pt.box(head.x, 0.45, head.half_width.max() + 0.05, 0.5)
    outer = pt.ellipse(win, head.x, np.full(k, HEAD_CY, F32), head.jaw_half_width + 0.02,
                       head.jaw_half_height + 0.05, p=head.jaw_exponent, r=head.jaw_half_width)
    # no wider than the face: sideburns follow the cheek outline
    side = pt.ellipse(win, head.x, np.full(k, HEAD_CY, F32), head.half_width + 0.012,
                      np.full(k, HEAD_B_TOP + 0.2, F32))
    np.minimum(outer, side, out=outer)
    hole = pt.ellipse(win, sub.mouth.x, np.where(full, -0.02, -0.05).astype(F32),
                      head.half_width * np.where(full, 0.8, 0.84), np.where(full, 0.445, 0.49).astype(F32))
    np.subtract(1.0, hole, out=hole)
    np.minimum(outer, hole, out=outer)
    np.minimum(outer, pt.below(win, np.full(k, 0.02, F32)), out=outer)
    opacity = np.where(full, 1.0, 0.28)
    color = np.where(full[:, None], sub.hair.beard_color, sub.hair.stubble_color)
    pt.over(win, outer, color, idx, opacity=opacity.astype(F32))


def _paint_goatee(pt: _Painter, scene: _Scene) -> None:
    """Chin and moustache: a goatee, and the part of a full beard around the mouth."""
    idx, sub = _faces_with(scene, scene.has.goatee | scene.has.full_beard)
    if sub is None:
        return
    mx, k = sub.mouth.x, len(sub)
    win = pt.box(mx, MOUTH_Y + 0.12, 0.3, 0.25)
    chin = pt.ellipse(win, mx, np.full(k, MOUTH_Y + 0.13, F32), np.full(k, 0.125, F32), np.full(k, 0.17, F32))
    stache = pt.lens(win, mx, np.full(k, MOUTH_Y, F32), np.full(k, -0.1, F32), np.full(k, 0.55, F32),
                     np.full(k, 0.0, F32), np.full(k, 0.42, F32), halfw=np.full(k, 0.24, F32))
    np.maximum(chin, stache, out=chin)
    pt.over(win, chin, sub.hair.beard_color, idx)


def _paint_age(pt: _Painter, scene: _Scene) -> None:
    """Forehead lines, smile folds, under-eye bags."""
    idx, sub = _faces_with(scene, scene.has.old)
    if sub is None:
        return
    line_color = sub.head.skin * np.array([0.66, 0.6, 0.6], F32)
    _paint_forehead_lines(pt, sub, idx, line_color)
    _paint_smile_folds(pt, sub, idx, line_color)
    _paint_eye_bags(pt, sub, idx, line_color)


def _paint_forehead_lines(pt: _Painter, sub: _Scene, idx: np.ndarray | None, line_color: np.ndarray) -> None:
    k = len(sub)
    win = pt.box(sub.head.x, -0.33, 0.24, 0.12)
    ramp = None
    for y, half in ((-0.26, 0.19), (-0.32, 0.17), (-0.38, 0.14)):
        line = pt.lens(win, sub.head.x, np.full(k, y, F32), np.full(k, -0.014, F32), np.full(k, 0.7, F32),
                       np.full(k, 0.014, F32), np.full(k, 0.7, F32), halfw=np.full(k, half, F32))
        ramp = line if ramp is None else np.maximum(ramp, line, out=ramp)
    pt.over(win, ramp, line_color, idx, opacity=0.85)


def _paint_smile_folds(pt: _Painter, sub: _Scene, idx: np.ndarray | None, line_color: np.ndarray) -> None:
    """From the nose wings to beyond the mouth corners."""
    mx, k = sub.mouth.x, len(sub)
    win = pt.box(mx, MOUTH_Y - 0.05, 0.4, 0.25)
    ramp = pt.ring(win, mx, np.full(k, MOUTH_Y - 0.12, F32), np.full(k, 0.31, F32), np.full(k, 0.27, F32),
                   np.full(k, 0.02, F32))
    band = pt.below(win, np.full(k, NOSE_Y - 0.02, F32))
    np.minimum(band, pt.above(win, np.full(k, MOUTH_Y + 0.04, F32)), out=band)
    np.minimum(ramp, band, out=ramp)
    pt.over(win, ramp, line_color, idx, opacity=0.9)


def _paint_eye_bags(pt: _Painter, sub: _Scene, idx: np.ndarray | None, line_color: np.ndarray) -> None:
    """A shaded crescent under each eye with a crease below it."""
    k = len(sub)
    for eye_x, eye_half_width in _eye_sides(sub.eyes):
        win = pt.box(eye_x, EYE_Y + 0.06, 0.13, 0.11)
        bag = pt.lens(win, eye_x, np.full(k, EYE_Y, F32), np.full(k, 0.025, F32), np.full(k, 0.0, F32),
                      np.full(k, 0.085, F32), np.full(k, -3.5, F32), halfw=eye_half_width * 1.1)
        pt.over(win, bag, line_color, idx, opacity=0.45)
        ramp = pt.ring(win, eye_x, np.full(k, EYE_Y + 0.005, F32), eye_half_width * 1.08, np.full(k, 0.085, F32),
                       np.full(k, 0.012, F32))
        np.minimum(ramp, pt.below(win, np.full(k, EYE_Y + 0.05, F32)), out=ramp)
        pt.over(win, ramp, line_color, idx, opacity=0.9)


def _paint_nose(pt: _Painter, scene: _Scene) -> None:
    """A shadow under the tip, and one down the side the face turns away from."""
    nose, head, n = scene.nose, scene.head, len(scene)
    win = pt.box(nose.x, NOSE_Y, 0.1, 0.07)
    ramp = pt.ellipse(win, nose.x + 0.012 * head.yaw, np.full(n, NOSE_Y, F32), nose.half_width,
                      np.full(n, 0.036, F32))
    pt.over(win, ramp, head.skin * 0.72, opacity=0.75)
    win = pt.box(nose.x, NOSE_Y - 0.1, 0.1, 0.12)
    side = np.where(head.yaw >= 0, -1.0, 1.0).astype(F32)
    ramp = pt.lens(win, nose.x + side * 0.055, np.full(n, NOSE_Y - 0.06, F32), np.full(n, -0.11, F32),
                   np.zeros(n, F32), np.full(n, 0.045, F32), np.zeros(n, F32), halfw=np.full(n, 0.011, F32))
    pt.over(win, ramp, head.skin * 0.78, opacity=0.6)


def _paint_cheeks(pt: _Painter, scene: _Scene) -> None:
    """The cheeks a smile lifts."""
    idx, sub = _faces_with(scene, scene.has.smiling)
    if sub is None:
        return
    k = len(sub)
    for eye_x in (sub.eyes.left_x, sub.eyes.right_x):
        cx = eye_x * 1.06
        win = pt.box(cx, 0.22, 0.2, 0.16)
        cheek = pt.ellipse(win, cx, np.full(k, 0.21, F32), np.full(k, 0.11, F32), np.full(k, 0.08, F32), soft=0.07)
        pt.over(win, cheek, sub.head.blush, idx, opacity=0.55)


def _paint_eyes(pt: _Painter, scene: _Scene) -> None:
    """White, iris, upper lid."""
    eyes, n = scene.eyes, len(scene)
    half_height = eyes.half_height
    for eye_x, eye_half_width in _eye_sides(eyes):
        ey = np.full(n, EYE_Y, F32)
        win = pt.box(eye_x, EYE_Y, 0.11, 0.08)
        ramp = pt.ellipse(win, eye_x, ey, eye_half_width, half_height, r=half_height)
        pt.over(win, ramp, SCLERA)
        ramp = pt.ellipse(win, eye_x + eyes.iris_shift, ey + 0.004, half_height * 0.88, half_height * 0.88)
        white = pt.ellipse(win, eye_x, ey, eye_half_width + 0.01, half_height + 0.01, r=half_height)
        np.minimum(ramp, white, out=ramp)
        pt.over(win, ramp, IRIS)
        ramp = pt.ring(win, eye_x, ey, eye_half_width, half_height, eyes.lid_thickness, r=half_height)
        np.minimum(ramp, pt.above(win, ey - 0.005), out=ramp)
        pt.over(win, ramp, LID)


def _paint_brows(pt: _Painter, scene: _Scene) -> None:
    brows = scene.brows
    for eye_x in (scene.eyes.left_x, scene.eyes.right_x):
        win = pt.box(eye_x, brows.y.mean(), 0.15, 0.08)
        half = brows.thickness / 2
        ramp = pt.lens(win, eye_x, brows.y, -half, brows.curvature, half, brows.curvature, halfw=brows.half_width)
        pt.over(win, ramp, brows.color)


def _paint_mouth(pt: _Painter, scene: _Scene) -> None:
    """Lips, the inside, teeth (clipped to the inside)."""
    mouth = scene.mouth
    my = np.full(len(scene), MOUTH_Y, F32)
    win = pt.box(mouth.x, MOUTH_Y + 0.04, 0.3, 0.13)
    ramp = pt.lens(win, mouth.x, my, *mouth.shapes[:, 0].T)
    pt.over(win, ramp, mouth.lip_color)
    inside = pt.lens(win, mouth.x, my, *mouth.shapes[:, 1].T)
    pt.over(win, inside.copy(), MOUTH_INSIDE)  # a copy: compositing clips its ramp, the teeth need it unclipped
    idx, sub = _faces_with(scene, scene.has.teeth)
    if sub is None:
        return
    teeth = pt.lens(win, sub.mouth.x, my[: len(sub)], *sub.mouth.shapes[:, 2].T)
    np.minimum(teeth, inside if idx is None else inside[idx], out=teeth)
    pt.over(win, teeth, TEETH, idx)


def _paint_hair_top(pt: _Painter, scene: _Scene) -> None:
    """Hair over the top of the head; the hairline curves down at the temples."""
    hair, hx = scene.hair, scene.head.x
    cy = np.full(len(scene), HEAD_CY, F32)
    win = pt.box(hx, HEAD_CY - 0.1, hair.cap_half_width.max(), 0.95)
    ramp = pt.ellipse(win, hx, cy - 0.015, hair.cap_half_width, hair.cap_half_height)
    du = pt.u[win[1]][None, None, :] - _c(hx)
    line = _c(hair.hairline_y) + _c(hair.hairline_curvature) * du * du
    np.minimum(ramp, pt.above(win, line), out=ramp)
    pt.over(win, ramp, hair.color)


def _paint_bangs(pt: _Painter, scene: _Scene) -> None:
    """A scalloped fringe over the forehead."""
    idx, sub = _faces_with(scene, scene.has.bangs)
    if sub is None:
        return
    hair, hx, k = sub.hair, sub.head.x, len(sub)
    win = pt.box(hx, HEAD_CY - 0.45, hair.cap_half_width.max(), 0.45)
    ramp = pt.ellipse(win, hx, np.full(k, HEAD_CY - 0.015, F32), hair.cap_half_width + 0.005,
                      hair.cap_half_height + 0.005)
    du = pt.u[win[1]][None, None, :] - _c(hx)
    fringe = -0.2 + 0.25 * du * du - 0.022 * np.abs(np.sin(du * 26.0))
    np.minimum(ramp, pt.above(win, fringe.astype(F32)), out=ramp)
    pt.over(win, ramp, hair.color, idx)


def _paint_glasses(pt: _Painter, scene: _Scene) -> None:
    """Tinted lenses, frames, bridge and arms."""
    idx, sub = _faces_with(scene, scene.has.glasses)
    if sub is None:
        return
    head, eyes, k = sub.head, sub.eyes, len(sub)
    ey = np.full(k, EYE_Y + 0.005, F32)
    win = pt.box(head.x, EYE_Y, head.half_width.max() + 0.05, 0.13)
    # each lens as wide as its eye, so the far one is foreshortened like it
    left_half_width = np.full(k, 0.13, F32) * (eyes.left_half_width / 0.085)
    right_half_width = np.full(k, 0.13, F32) * (eyes.right_half_width / 0.085)
    half_height = np.full(k, 0.1, F32)
    lenses = pt.ellipse(win, eyes.left_x, ey, left_half_width, half_height, r=half_height)
    np.maximum(lenses, pt.ellipse(win, eyes.right_x, ey, right_half_width, half_height, r=half_height), out=lenses)
    pt.over(win, lenses, GLASSES_LENS, idx, opacity=0.3)
    rim = np.full(k, 0.019, F32)
    frame = pt.ring(win, eyes.left_x, ey, left_half_width, half_height, rim, r=half_height)
    np.maximum(frame, pt.ring(win, eyes.right_x, ey, right_half_width, half_height, rim, r=half_height), out=frame)
    bridge = pt.lens(win, (eyes.left_x + eyes.right_x) / 2, ey - 0.03, np.full(k, -0.016, F32),
                     np.full(k, 0.0, F32), np.full(k, 0.016, F32), np.full(k, 0.0, F32),
                     halfw=(eyes.right_x - eyes.left_x) / 2 - 0.1)
    np.maximum(frame, bridge, out=frame)
    left = eyes.left_x - left_half_width
    right = eyes.right_x + right_half_width
    for centre, end in (((left + (head.x - head.half_width)) / 2, left),
                        ((right + (head.x + head.half_width)) / 2, right)):
        arm = pt.lens(win, centre, ey - 0.035, np.full(k, -0.014, F32), np.full(k, 0.0, F32),
                      np.full(k, 0.014, F32), np.full(k, 0.0, F32), halfw=np.abs(end - centre) + 0.004)
        np.maximum(frame, arm, out=frame)
    pt.over(win, frame, GLASSES_FRAME, idx)


def _paint_hat(pt: _Painter, scene: _Scene) -> None:
    """A dome over the skull and a band."""
    idx, sub = _faces_with(scene, scene.has.hat)
    if sub is None:
        return
    head, k = sub.head, len(sub)
    win = pt.box(head.x, -0.7, head.half_width.max() + 0.2, 0.45)
    dome = pt.ellipse(win, head.x, np.full(k, -0.36, F32), head.half_width + 0.1, np.full(k, 0.6, F32))
    np.minimum(dome, pt.above(win, np.full(k, -0.36, F32)), out=dome)
    pt.over(win, dome, HAT, idx)
    band = pt.lens(win, head.x, np.full(k, -0.39, F32), np.full(k, -0.07, F32), np.full(k, 0.04, F32),
                   np.full(k, 0.07, F32), np.full(k, 0.04, F32), halfw=head.half_width + 0.13)
    pt.over(win, band, HAT_BAND, idx)


_LAYERS = (
    _paint_background, _paint_shirt, _paint_hair_behind, _paint_neck, _paint_ears, _paint_face, _paint_beard,
    _paint_goatee, _paint_age, _paint_nose, _paint_cheeks, _paint_eyes, _paint_brows, _paint_mouth,
    _paint_hair_top, _paint_bangs, _paint_glasses, _paint_hat,
)


# --- the dataset ---------------------------------------------------------------------------------
class SyntheticFaces:
    """Procedural cartoon faces with 14 known generative factors (see the module docstring).

    ``size``: an int (square) or (height, width). ``frame``: side in pixels of the square that
    the unit face frame maps to, centred in the canvas (default: ``min(height, width)``).
    ``prior``: ``"celeba"`` (correlated, imbalanced, CelebA-like attribute rates) or
    ``"uniform"`` (independent, uniform factors). ``chunk``: faces rendered at once (default:
    about half a million pixels' worth).
    """

    def __init__(self, size=64, prior: str = "celeba", *, frame: int | None = None, chunk: int | None = None):
        if isinstance(size, (int, np.integer)):
            height = width = int(size)
        else:
            height, width = (int(s) for s in size)
        if height < 8 or width < 8:
            raise ValueError(f"image size {height}x{width} is too small (at least 8x8)")
        if prior not in ("celeba", "uniform"):
            raise ValueError(f"unknown prior {prior!r}; use 'celeba' or 'uniform'")
        self.height, self.width = height, width
        self.frame = int(frame) if frame is not None else min(height, width)
        if self.frame < 8:
            raise ValueError(f"frame {self.frame} is too small")
        self.prior = prior
        # about half a million pixels per chunk keeps the working set in cache
        self.chunk = int(chunk) if chunk else int(np.clip(2**19 // (height * width), 8, 256))
        if self.chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.factor_names: list[str] = list(FACTOR_NAMES)
        self.factor_sizes: list[int] = list(FACTOR_SIZES)
        self.factor_values: dict[str, list[str]] = {name: list(values) for name, values in FACTORS}
        self.attribute_names: list[str] = list(EXPRESSIBLE_ATTRIBUTES)

    def __repr__(self) -> str:
        return f"SyntheticFaces(size=({self.height}, {self.width}), frame={self.frame}, prior={self.prior!r})"

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    # --- factors ---------------------------------------------------------------------------------
    def sample_factors(self, n: int, rng=None) -> np.ndarray:
        """``n`` factor rows, int64 (n, num_factors), from the prior."""
        rng = as_generator(rng)
        n = int(n)
        if self.prior == "uniform":
            return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], axis=1).astype(np.int64)
        return self._sample_celeba(n, rng)

    @staticmethod
    def _sample_celeba(n: int, rng: np.random.Generator) -> np.ndarray:
        f = np.zeros((n, len(FACTOR_NAMES)), np.int64)
        u = rng.random((n, 8))
        male = u[:, 0] < 0.42
        old = u[:, 1] < np.where(male, 0.36, 0.135)
        f[:, _F["sex"]] = male
        f[:, _F["age"]] = old
        f[:, _F["skin_tone"]] = _draw(rng, _rows(n, [0.04, 0.58, 0.25, 0.13]))
        f[:, _F["face_width"]] = _draw(
            rng, np.where(male[:, None], [0.08, 0.20, 0.32, 0.30, 0.10], [0.22, 0.32, 0.28, 0.15, 0.03])
        )
        f[:, _F["rotation"]] = _draw(rng, _rows(n, [0.11, 0.2, 0.38, 0.2, 0.11]))
        beard = np.where(male, _draw(rng, _rows(n, [0.357, 0.262, 0.143, 0.238])), 0)
        f[:, _F["beard"]] = beard
        f[:, _F["hair_volume"]] = _draw(
            rng, np.where(male[:, None], [0.45, 0.40, 0.12, 0.03], [0.03, 0.12, 0.40, 0.45])
        )
        # Hair colour: gray mostly when older (and male); blond mostly female, rare with a beard.
        gray = np.where(old, np.where(male, 0.20, 0.09), 0.004)
        base = np.where(
            male[:, None], [0.295, 0.215, 0.045, 0.0, 0.445], [0.225, 0.225, 0.25, 0.0, 0.30]
        ).astype(np.float64)
        base[beard >= 2, 2] *= 0.25
        base /= base.sum(axis=1, keepdims=True)
        base *= (1 - gray)[:, None]
        base[:, 3] = gray
        f[:, _F["hair_color"]] = _draw(rng, base)
        f[:, _F["bangs"]] = u[:, 2] < np.where(male, 0.055, 0.22)
        smiling = u[:, 3] < np.where(male, 0.41, 0.53)
        opened = u[:, 4] < np.where(smiling, 0.75, 0.23)
        f[:, _F["smile"]] = 2 * smiling + opened
        f[:, _F["eyeglasses"]] = u[:, 5] < np.where(male, np.where(old, 0.18, 0.10), np.where(old, 0.05, 0.02))
        f[:, _F["lipstick"]] = (~male) & (u[:, 6] < 0.81)
        f[:, _F["hat"]] = u[:, 7] < np.where(male, 0.06, 0.043)
        f[:, _F["background"]] = rng.integers(0, 4, n)
        return f

    def _check(self, factors) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim == 1:
            factors = factors[None]
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must have shape (n, {self.num_factors}), got {factors.shape}")
        factors = factors.astype(np.int64, copy=False)
        bad = (factors < 0) | (factors >= np.asarray(self.factor_sizes))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"factor {self.factor_names[col]} = {factors[row, col]} (row {row}) is outside "
                f"0..{self.factor_sizes[col] - 1}"
            )
        return factors

    def factor_grid(self, base, factor: str | int) -> np.ndarray:
        """Rows equal to ``base`` except ``factor``, which runs through all its values."""
        j = self.factor_names.index(factor) if isinstance(factor, str) else int(factor)
        rows = np.repeat(self._check(base)[:1], self.factor_sizes[j], axis=0)
        rows[:, j] = np.arange(self.factor_sizes[j])
        return rows

    # --- attributes ------------------------------------------------------------------------------
    def attributes(self, factors) -> np.ndarray:
        """uint8 (n, len(attribute_names)) 0/1 attributes derived from the factors."""
        f = self._check(factors)
        return np.stack([_ATTRIBUTE_RULES[a](f) for a in self.attribute_names], axis=1).astype(np.uint8)

    def all_celeba_attributes(self, factors) -> np.ndarray:
        """uint8 (n, 40) in CelebA's order, for writing ``list_attr_celeba.txt``.

        The attributes in ``attribute_names`` are derived from the factors; the others carry no
        image signal: they are random draws with CelebA-like rates (conditional on sex, age,
        smile, lipstick or chubbiness, so that CelebA's obvious correlations survive), seeded by
        each row's factor values, so the same factors always give the same 40 values.
        """
        f = self._check(factors)
        known = {a: _ATTRIBUTE_RULES[a](f) for a in _ATTRIBUTE_RULES}
        draws = _row_uniforms(f, len(CELEBA_ATTRIBUTES), salt=40)
        out = np.zeros((len(f), len(CELEBA_ATTRIBUTES)), np.uint8)
        for j, name in enumerate(CELEBA_ATTRIBUTES):
            if name in known:
                out[:, j] = known[name]
            else:
                cond, p1, p0 = _RANDOM_ATTRIBUTES[name]
                out[:, j] = draws[:, j] < np.where(known[cond], p1, p0)
        return out

    # --- geometry --------------------------------------------------------------------------------
    def landmarks(self, factors) -> np.ndarray:
        """int64 (n, 10): CelebA's five landmarks (eyes, nose, mouth corners) as x, y pixels."""
        scene = _scene(self._check(factors))
        ox, oy, scale = self.width / 2, self.height / 2, self.frame / 2
        lips = scene.mouth.shapes[:, 0]
        half = np.sqrt(np.maximum((lips[:, 2] - lips[:, 0]) / np.maximum(lips[:, 1] - lips[:, 3], 1e-3), 0))
        corner_y = MOUTH_Y + lips[:, 0] + lips[:, 1] * half**2
        eyes, nose_x, mouth_x = scene.eyes, scene.nose.x, scene.mouth.x
        pts = [
            (eyes.left_x, np.full_like(eyes.left_x, EYE_Y)),
            (eyes.right_x, np.full_like(eyes.right_x, EYE_Y)),
            (nose_x, np.full_like(nose_x, NOSE_Y)),
            (mouth_x - half * 0.92, corner_y),
            (mouth_x + half * 0.92, corner_y),
        ]
        cols = []
        for x, y in pts:
            cols += [x * scale + ox, y * scale + oy]
        return np.rint(np.stack(cols, axis=1)).astype(np.int64)

    def bboxes(self, factors) -> np.ndarray:
        """int64 (n, 4): x, y, width, height of the face (hair included) in pixels."""
        head = _scene(self._check(factors)).head
        ox, oy, scale = self.width / 2, self.height / 2, self.frame / 2
        x0 = (head.x - head.half_width - 0.06) * scale + ox
        x1 = (head.x + head.half_width + 0.06) * scale + ox
        y0 = np.full_like(x0, (HEAD_CY - HEAD_B_TOP - 0.08) * scale + oy)
        y1 = np.full_like(x0, (HEAD_CY + 0.8) * scale + oy)
        return np.rint(np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)).astype(np.int64)

    # --- rendering -------------------------------------------------------------------------------
    def render(self, factors) -> np.ndarray:
        """uint8 (n, H, W, 3) images of the faces with the given factor rows (deterministic)."""
        f = self._check(factors)
        out = np.empty((len(f), self.height, self.width, 3), np.uint8)
        for lo in range(0, len(f), self.chunk):
            hi = min(lo + self.chunk, len(f))
            img = self._render_chunk(f[lo:hi])
            img += 0.5
            out[lo:hi] = img.transpose(0, 2, 3, 1)
        return out

    def sample(self, n: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images and their factors from the prior."""
        factors = self.sample_factors(n, rng)
        return self.render(factors), factors

    def _render_chunk(self, f: np.ndarray) -> np.ndarray:
        scene = _scene(f)
        painter = _Painter(len(f), self.height, self.width, self.frame)
        for paint in _LAYERS:
            paint(painter, scene)
        return painter.img


# --- partitions and packed datasets --------------------------------------------------------------
def generate_celeba_like_partition(n: int, rng=None) -> np.ndarray:
    """int8 (n,) partition with CelebA's official proportions (about 80.3 / 9.8 / 9.9 %).

    Without ``rng`` it is contiguous like CelebA's own file (train first, then valid, then test);
    with ``rng`` (a Generator or seed) the same counts are shuffled.
    """
    total = sum(CELEBA_PARTITION_SIZES)
    n_train = int(round(n * CELEBA_PARTITION_SIZES[0] / total))
    n_valid = int(round(n * CELEBA_PARTITION_SIZES[1] / total))
    n_train = min(n_train, n)
    n_valid = min(n_valid, n - n_train)
    part = np.full(n, 2, np.int8)
    part[:n_train] = 0
    part[n_train : n_train + n_valid] = 1
    if rng is not None:
        part = as_generator(rng).permutation(part)
    return part


def _preprocessing_text(faces: SyntheticFaces, seed: int) -> str:
    return (
        f"synthetic faces rendered at {faces.height}x{faces.width} (face frame {faces.frame} px), "
        f"prior={faces.prior}, seed={seed}; anti-aliased analytic shapes, no resizing"
    )


def write_synthetic_packed(
    out: str | os.PathLike,
    n: int,
    size=64,
    seed: int = 0,
    prior: str = "celeba",
    chunk: int = 1024,
    progress: bool = True,
):
    """Render ``n`` synthetic faces straight into a packed dataset at ``out``."""
    from facevae.data.packed import write_rendered

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    faces = SyntheticFaces(size=size, prior=prior)
    rng = np.random.default_rng(seed)
    factors = faces.sample_factors(n, rng)
    partition = generate_celeba_like_partition(n, rng)
    return write_rendered(
        out, factors, faces.render, faces.height, faces.width, chunk=chunk, progress=progress,
        what="writing synthetic faces",
        attributes=faces.attributes(factors),
        attribute_names=faces.attribute_names,
        partition=partition,
        image_ids=[f"synth_{i + 1:06d}" for i in range(n)],
        factors=factors,
        factor_names=faces.factor_names,
        factor_sizes=faces.factor_sizes,
        source="synthetic",
        preprocessing=_preprocessing_text(faces, seed),
    )


def factor_info(faces: SyntheticFaces | None = None) -> dict:
    """The small JSON-able description of the factors (names, sizes, value names)."""
    faces = faces or SyntheticFaces()
    return {
        "factor_names": faces.factor_names,
        "factor_sizes": faces.factor_sizes,
        "factor_values": faces.factor_values,
        "attribute_names": faces.attribute_names,
    }


def save_factor_info(path: str | os.PathLike, faces: SyntheticFaces | None = None) -> None:
    Path(path).write_text(json.dumps(factor_info(faces), indent=2) + "\n")


__all__ = [
    "SyntheticFaces",
    "FACTORS",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "EXPRESSIBLE_ATTRIBUTES",
    "generate_celeba_like_partition",
    "write_synthetic_packed",
    "factor_info",
    "save_factor_info",
    "as_generator",
]
