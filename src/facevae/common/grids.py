"""Labelled image grids: examples with captions, and row-by-row comparisons.

Every function accepts images as numpy arrays or torch tensors, uint8 or float in [0, 1],
channels last ``(n, H, W, 3)`` or first ``(n, 3, H, W)``, grey ``(n, H, W)`` / ``(n, H, W, 1)`` /
``(n, 1, H, W)`` or boolean (dSprites); see :func:`to_uint8_images`. Small images are shown
enlarged with nearest-neighbour scaling (every pixel visible, nothing invented), so a 64-pixel
face fills a 128-pixel cell.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from facevae.common.files import atomic_path, make_dir  # noqa: E402

DPI = 100
CELL_PIXELS = 128  # smallest side of a displayed image cell
CAPTION_FONTSIZE = 7.0
TITLE_FONTSIZE = 11.0
PAD_IN = 0.08
NBSP = "\u00a0"  # textwrap never breaks here

ATTRIBUTE_SHORT_NAMES = {
    "5_o_Clock_Shadow": "Stubble",
    "Arched_Eyebrows": "Arched brows",
    "Bags_Under_Eyes": "Eye bags",
    "Big_Lips": "Big lips",
    "Big_Nose": "Big nose",
    "Black_Hair": "Black hair",
    "Blond_Hair": "Blond hair",
    "Brown_Hair": "Brown hair",
    "Bushy_Eyebrows": "Bushy brows",
    "Double_Chin": "Double chin",
    "Eyeglasses": "Glasses",
    "Gray_Hair": "Gray hair",
    "Heavy_Makeup": "Makeup",
    "High_Cheekbones": "High cheeks",
    "Mouth_Slightly_Open": "Mouth open",
    "Narrow_Eyes": "Narrow eyes",
    "No_Beard": "No beard",
    "Oval_Face": "Oval face",
    "Pale_Skin": "Pale skin",
    "Pointy_Nose": "Pointy nose",
    "Receding_Hairline": "Receding hair",
    "Rosy_Cheeks": "Rosy cheeks",
    "Straight_Hair": "Straight hair",
    "Wavy_Hair": "Wavy hair",
    "Wearing_Earrings": "Earrings",
    "Wearing_Hat": "Hat",
    "Wearing_Lipstick": "Lipstick",
    "Wearing_Necklace": "Necklace",
    "Wearing_Necktie": "Necktie",
}

_WORD_SHORT = {
    "colour": "col", "color": "col", "rotation": "rot", "volume": "vol", "background": "bg",
    "position": "pos", "orientation": "orient", "thickness": "thick", "length": "len",
    "expression": "expr", "eyeglasses": "glasses", "horizontal": "horiz", "vertical": "vert",
    "object": "obj", "number": "num",
}


def abbreviate_attribute(name: str) -> str:
    """A short, readable form of an attribute name ('Mouth_Slightly_Open' -> 'Mouth open')."""
    if name in ATTRIBUTE_SHORT_NAMES:
        return ATTRIBUTE_SHORT_NAMES[name]
    short = name.replace("_", " ")
    if short.lower().startswith("wearing "):
        short = short[len("wearing "):].strip().capitalize()
    return short


def abbreviate_factor(name: str) -> str:
    """A short form of a factor name ('hair_colour' -> 'hair col', 'face_rotation' -> 'face rot')."""
    return " ".join(_WORD_SHORT.get(w.lower(), w) for w in name.replace("-", "_").split("_") if w)


def attribute_caption(row: np.ndarray, names: Sequence[str], rates: np.ndarray | None = None, limit: int = 4) -> str:
    """The positive attributes of one image, rarest first (when ``rates`` given), up to ``limit``."""
    positive = [i for i, v in enumerate(np.asarray(row).reshape(-1)) if v]
    if rates is not None:
        positive.sort(key=lambda i: (rates[i], i))
    # Non-breaking spaces keep each item on one line when the caption is wrapped.
    shown = [abbreviate_attribute(names[i]).replace(" ", NBSP) for i in positive[:limit]]
    if len(positive) > limit:
        shown.append(f"+{len(positive) - limit}{NBSP}more")
    return ", ".join(shown) if shown else "(no attribute)"


def factor_caption(values: np.ndarray, names: Sequence[str]) -> str:
    """Ground-truth factor values of one image: 'hair col 2, bangs 1, ...'."""
    items = zip(names, np.asarray(values).reshape(-1))
    return ", ".join(f"{abbreviate_factor(n)} {int(v)}".replace(" ", NBSP) for n, v in items)


def to_uint8_images(images) -> np.ndarray:
    """Any reasonable image batch as uint8 ``(n, H, W, 3)``.

    Accepts numpy arrays or torch tensors; uint8, bool, or float (assumed in [0, 1], clipped);
    ``(H, W)``, ``(H, W, C)`` single images or batches ``(n, H, W)``, ``(n, H, W, C)``,
    ``(n, C, H, W)`` with C 1 or 3.
    """
    if hasattr(images, "detach"):  # torch tensor
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3) and a.shape[0] not in (1, 3):
        a = a[None]  # one (H, W, C) image
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a[None]  # one (C, H, W) image
    if a.ndim == 3:  # (n, H, W) grey
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"expected images shaped (n, H, W, 3) or (n, 3, H, W), got {a.shape}")
    if a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    if a.shape[-1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 colour channels, got images shaped {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def _default_scale(height: int, width: int) -> int:
    return max(1, math.ceil(CELL_PIXELS / max(1, min(height, width))))


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for part in str(text).split("\n"):
        lines += textwrap.wrap(part, width=width, break_long_words=True, break_on_hyphens=False) or [""]
    return lines


def _chars_per_line(cell_px: float, fontsize: float) -> int:
    char_px = fontsize * DPI / 72 * 0.56  # average glyph width of DejaVu Sans, roughly
    return max(6, int(cell_px / char_px))


def image_grid(images, nrow: int = 8, labels: Sequence[str] | None = None, title: str | None = None,
               scale: int | None = None, *, fontsize: float = CAPTION_FONTSIZE, max_label_lines: int = 6) -> Figure:
    """A matplotlib Figure of ``images`` in rows of ``nrow`` (as torchvision's ``make_grid``).

    Each image may carry a caption under it (``labels``, wrapped to the cell width, at most
    ``max_label_lines`` lines); ``title`` goes on top; ``scale`` enlarges each image by an integer
    factor (default: enough for a 128-pixel cell). Save with ``fig.savefig(path, dpi=100)``.
    """
    imgs = to_uint8_images(images)
    n, h, w, _ = imgs.shape
    if n == 0:
        raise ValueError("no images to put in a grid")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    ncol = max(1, min(int(nrow), n))
    nrows = math.ceil(n / ncol)
    scale = int(scale) if scale else _default_scale(h, w)
    cell_w, cell_h = w * scale / DPI, h * scale / DPI  # inches

    wrapped = None
    caption_h = 0.0
    if labels is not None:
        width_chars = _chars_per_line(w * scale, fontsize)
        wrapped = []
        for label in labels:
            lines = _wrap(label, width_chars)
            if len(lines) > max_label_lines:
                lines = lines[: max_label_lines - 1] + [lines[max_label_lines - 1][: width_chars - 1] + "…"]
            wrapped.append("\n".join(lines))
        max_lines = max(text.count("\n") + 1 for text in wrapped)
        caption_h = max_lines * fontsize * 1.22 / 72 + 0.05

    fig_w = ncol * cell_w + (ncol + 1) * PAD_IN
    title_lines = _wrap(title, _chars_per_line(fig_w * DPI, TITLE_FONTSIZE)) if title else []
    title_h = (len(title_lines) * TITLE_FONTSIZE * 1.3 / 72 + 0.15) if title_lines else 0.0
    row_h = cell_h + caption_h + PAD_IN
    fig_h = title_h + nrows * row_h + PAD_IN
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")

    if title_lines:
        fig.text(0.5, 1 - 0.08 / fig_h, "\n".join(title_lines), ha="center", va="top",
                 fontsize=TITLE_FONTSIZE, fontweight="bold")
    for i in range(n):
        r, c = divmod(i, ncol)
        left = PAD_IN + c * (cell_w + PAD_IN)
        top = fig_h - title_h - PAD_IN - r * row_h
        ax = fig.add_axes((left / fig_w, (top - cell_h) / fig_h, cell_w / fig_w, cell_h / fig_h))
        ax.imshow(imgs[i], interpolation="nearest")
        ax.set_axis_off()
        if wrapped is not None:
            fig.text((left + cell_w / 2) / fig_w, (top - cell_h - 0.03) / fig_h, wrapped[i],
                     ha="center", va="top", fontsize=fontsize, linespacing=1.1)
    return fig


def save_labelled_grid(images, path: str | os.PathLike, ncol: int = 8, labels: Sequence[str] | None = None,
                       title: str | None = None, scale: int | None = None) -> Path:
    """Save :func:`image_grid` as a PNG at ``path``; return the path."""
    fig = image_grid(images, nrow=ncol, labels=labels, title=title, scale=scale)
    return save_figure(fig, path, dpi=DPI, facecolor="white")


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig`` through a temporary file and a rename (see facevae.common.files): a full disk or a
    read-only folder is a one-line FileWriteError naming ``path``, and never leaves half a PNG."""
    path = Path(path)
    make_dir(path.parent)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    return path


def save_comparison_grid(rows: Sequence, row_labels: Sequence[str], path: str | os.PathLike,
                         title: str | None = None, col_labels: Sequence[str] | None = None,
                         scale: int | None = None) -> Path:
    """Rows of images, one label per row on the left (e.g. originals over reconstructions).

    ``rows`` is a list of image batches, all the same image size; a row shorter than the longest
    leaves its last cells blank. ``col_labels`` (optional) go above the first row, e.g. the
    traversal values of a latent dimension.
    """
    batches = [to_uint8_images(r) for r in rows]
    if not batches:
        raise ValueError("no rows to compare")
    if len(row_labels) != len(batches):
        raise ValueError(f"{len(row_labels)} row labels for {len(batches)} rows")
    h, w = batches[0].shape[1:3]
    if any(b.shape[1:3] != (h, w) for b in batches):
        raise ValueError("all rows must hold images of the same size: "
                         + ", ".join(f"{b.shape[1]}x{b.shape[2]}" for b in batches))
    ncol = max(len(b) for b in batches)
    if ncol == 0:
        raise ValueError("no images to compare")
    if col_labels is not None and len(col_labels) != ncol:
        raise ValueError(f"{len(col_labels)} column labels for {ncol} columns")
    scale = int(scale) if scale else _default_scale(h, w)
    cell_w, cell_h = w * scale / DPI, h * scale / DPI
    label_fs = 9.0
    label_lines = [_wrap(lbl, 16) for lbl in row_labels]
    longest = max((len(line) for lines in label_lines for line in lines), default=4)
    label_w = longest * label_fs * 0.6 / 72 + 0.2
    col_h = (CAPTION_FONTSIZE * 2.6 / 72) if col_labels is not None else 0.0
    grid_w = ncol * cell_w + (ncol - 1) * PAD_IN / 2
    fig_w = label_w + grid_w + 2 * PAD_IN
    title_lines = _wrap(title, _chars_per_line(fig_w * DPI, TITLE_FONTSIZE)) if title else []
    title_h = (len(title_lines) * TITLE_FONTSIZE * 1.3 / 72 + 0.15) if title_lines else 0.0
    row_h = cell_h + PAD_IN / 2
    fig_h = title_h + col_h + len(batches) * row_h + 1.5 * PAD_IN
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    if title_lines:
        fig.text(0.5, 1 - 0.08 / fig_h, "\n".join(title_lines), ha="center", va="top",
                 fontsize=TITLE_FONTSIZE, fontweight="bold")
    x0 = PAD_IN + label_w
    if col_labels is not None:
        for c, lbl in enumerate(col_labels):
            fig.text((x0 + c * (cell_w + PAD_IN / 2) + cell_w / 2) / fig_w,
                     (fig_h - title_h - PAD_IN - col_h / 2) / fig_h, str(lbl),
                     ha="center", va="center", fontsize=CAPTION_FONTSIZE)
    for r, batch in enumerate(batches):
        top = fig_h - title_h - col_h - PAD_IN - r * row_h
        fig.text((x0 - 0.1) / fig_w, (top - cell_h / 2) / fig_h, "\n".join(label_lines[r]),
                 ha="right", va="center", fontsize=label_fs)
        for c in range(len(batch)):
            left = x0 + c * (cell_w + PAD_IN / 2)
            ax = fig.add_axes((left / fig_w, (top - cell_h) / fig_h, cell_w / fig_w, cell_h / fig_h))
            ax.imshow(batch[c], interpolation="nearest")
            ax.set_axis_off()
    return save_figure(fig, path, dpi=DPI, facecolor="white")
