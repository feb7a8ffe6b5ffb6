"""``facevae data show``: a labelled grid of random examples of a packed dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facevae.common.grids import attribute_caption, factor_caption, save_labelled_grid


def show_dataset(dataset, out_path: str | os.PathLike, n: int = 32, seed: int = 0, split: str | None = None,
                 ncol: int = 8) -> Path:
    """A labelled grid of ``n`` random examples of a packed dataset (``facevae data show``).

    Captions are the ground-truth factor values when the dataset has factors (synthetic data),
    otherwise the positive attributes, rarest first, up to four. With ``split``, examples come
    from that split's test part.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if split is None:
        pool = np.arange(len(dataset))
        where = ""
    else:
        pool = dataset.indices(split, "test")
        where = f", test part of split {split!r}"
    if len(pool) == 0:
        raise ValueError(f"{dataset.root}: no images to show{where}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
    images = np.asarray(dataset.images[rows])
    if dataset.factors is not None and dataset.factor_names:
        labels = [factor_caption(dataset.factors[r], dataset.factor_names) for r in rows]
        legend = "captions: ground-truth factor values"
    else:
        rates = dataset.attributes.mean(axis=0) if len(dataset) else None
        labels = [attribute_caption(dataset.attributes[r], dataset.attribute_names, rates) for r in rows]
        legend = "captions: positive attributes, rarest first (up to 4)"
    title = (f"{dataset.root.name}: {len(rows)} of {len(dataset):,} images{where} "
             f"({dataset.meta.height}x{dataset.meta.width}, seed {seed}) — {legend}")
    return save_labelled_grid(images, out_path, ncol=ncol, labels=labels, title=title)
