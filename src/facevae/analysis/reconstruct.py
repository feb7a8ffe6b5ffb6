"""Reconstructions of test images: originals above what the model makes of them, with the error.

``reconstruct(run, n=16)`` encodes the first ``n`` test images (after ``offset``) to their posterior
means (with their own attributes as the condition, for a conditional model), decodes them, and
writes ``RUN/analysis/reconstruct.png`` (rows of originals, each above its reconstructions,
captioned with the per-image error) and ``reconstruct.json``:

    {"images": [{"position": 0, "row": 17, "image_id": "...", "mse": 0.004, "psnr_db": 24.0,
                 "recon_bits_per_dim": 3.1}, ...],
     "mean": {"mse": ..., "psnr_db": ..., "recon_bits_per_dim": ...}, "png": "...", "json": "..."}

``mse`` is the mean squared error of pixels in [0, 1] (the decoder's mean image against the
original), ``psnr_db`` = 10·log10(1/mse), and ``recon_bits_per_dim`` the observation model's
negative log-likelihood of the original given the posterior mean, in bits per sub-pixel.
``position`` is the image's place in the test split, ``row`` its row in the packed dataset.

"""

from __future__ import annotations

import os

import numpy as np
import torch

from facevae.analysis.shared import DECODE_BATCH, as_run, check_positive, image_id, run_label, write_result
from facevae.common.grids import save_labelled_grid
from facevae.models.likelihoods import bits_per_dim
from facevae.training.rundir import Run

GRID_COLUMNS = 8


# --- reconstructions ------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_errors(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Reconstructions of ``x`` (posterior mean decoded) and per-image mse, psnr_db, recon_bits_per_dim."""
    recons, mses, bits = [], [], []
    for i in range(0, len(x), DECODE_BATCH):
        xb, yb = x[i:i + DECODE_BATCH], y[i:i + DECODE_BATCH]
        c = run.condition_of(yb)
        observation = run.model.decode(run.model.encode(xb, c).codes(), c)
        recon = observation.image()
        recons.append(recon)
        mses.append(((recon - xb) ** 2).flatten(1).mean(1))
        bits.append(bits_per_dim(observation.log_prob(xb), xb[0].numel()))
    recon, mse, bits = torch.cat(recons), torch.cat(mses), torch.cat(bits)
    psnr = 10 * torch.log10(1.0 / mse.clamp(min=1e-12))
    return recon, {"mse": mse.numpy(), "psnr_db": psnr.numpy(), "recon_bits_per_dim": bits.numpy()}


def reconstruct(run: Run | str | os.PathLike, n: int = 16, offset: int = 0, ncol: int = GRID_COLUMNS) -> dict:
    """Write reconstruct.png / reconstruct.json for ``n`` test images from ``offset``; return the JSON dict."""
    run = as_run(run)
    check_positive("n", n)
    check_positive("offset", offset, 0)
    total = len(run.data.indices("test"))
    if offset >= total:
        raise ValueError(f"offset {offset} is past the end of the test split ({total} images)")
    x, y, rows = run.test_batch(n, offset)
    recon, err = reconstruction_errors(run, x, y)
    n = len(x)
    images = []
    for i in range(n):
        entry = {"position": offset + i, "row": int(rows[i]), "image_id": image_id(run, int(rows[i]))}
        entry.update({k: float(v[i]) for k, v in err.items()})
        images.append(entry)
    mean = {k: float(np.mean(v)) for k, v in err.items()}

    # Interleave: a row of originals, then the same images' reconstructions under them; a short
    # last block is padded with blank cells so that every image stays above its reconstruction.
    ncol = max(1, min(ncol, n))
    blank = torch.ones((1, *x.shape[1:]))
    grid, labels = [], []
    for lo in range(0, n, ncol):
        hi = min(lo + ncol, n)
        pad = ncol - (hi - lo)
        grid += [x[lo:hi], blank.expand(pad, -1, -1, -1), recon[lo:hi], blank.expand(pad, -1, -1, -1)]
        labels += [f"original · test {offset + i}" for i in range(lo, hi)] + [""] * pad
        labels += [f"recon · MSE {err['mse'][i]:.4f} ({err['psnr_db'][i]:.1f} dB)" for i in range(lo, hi)] + [""] * pad
    out = run.analysis_dir
    png = out / "reconstruct.png"
    title = (f"{run_label(run)}: {n} test images (rows of originals, each above its reconstructions "
             f"from the posterior mean) — mean MSE {mean['mse']:.4f}, {mean['psnr_db']:.1f} dB, "
             f"{mean['recon_bits_per_dim']:.2f} bits/dim")
    save_labelled_grid(torch.cat(grid), png, ncol=ncol, labels=labels, title=title)
    result = {"run": str(run.root), "n": n, "offset": offset, "images": images, "mean": mean,
              "png": str(png), "json": str(out / "reconstruct.json")}
    write_result(out / "reconstruct.json", result)
    return result
