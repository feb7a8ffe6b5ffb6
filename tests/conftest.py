"""Shared fixtures: small CelebA-format folders made by the tests themselves."""

from __future__ import annotations

import os
import signal
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

from facevae.common.threads import share_cores, threads_per_process
from facevae.data.attributes import CELEBA_ATTRIBUTES

# pytest-xdist runs several workers on the machine's cores: each takes its share, and the training
# subprocesses the tests start inherit it (torch reads OMP_NUM_THREADS when it is first imported).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(threads_per_process(_workers))
    share_cores(_workers)

# Some tests press Ctrl-C on the subprocesses they start. A suite started in the background by a
# non-interactive shell inherits SIGINT ignored, and so would they: give them Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def celeba_image(i: int) -> Image.Image:
    """A 178×218 picture with structure at every scale, different for every index."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:218, 0:178].astype(np.float32)
    cx, cy, r = 89 + rng.normal(0, 8), 109 + rng.normal(0, 8), rng.uniform(35, 60)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < r**2)[..., None]
    base = np.stack([x / 178 * 255, y / 218 * 255, np.full_like(x, rng.uniform(0, 255))], -1)
    colour = rng.uniform(0, 255, 3)
    return Image.fromarray(np.where(disc, colour, base).astype(np.uint8))


def write_celeba_files(root: Path, n: int, *, zip_images: bool = False, csv: bool = False, subdirs: bool = False) -> Path:
    """A CelebA folder of ``n`` images in the distributed layout (or the CSV / Anno-Eval-Img variants)."""
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((n, 40)) < 0.3, 1, -1)
    partition = np.minimum(np.arange(n) * 3 // n, 2)
    anno_dir = root / "Anno" if subdirs else root
    eval_dir = root / "Eval" if subdirs else root
    img_parent = root / "Img" if subdirs else root
    for d in (anno_dir, eval_dir, img_parent):
        d.mkdir(exist_ok=True)
    if csv:
        rows = ["image_id," + ",".join(CELEBA_ATTRIBUTES)] + [f"{i}," + ",".join(map(str, s)) for i, s in zip(ids, signs)]
        (anno_dir / "list_attr_celeba.csv").write_text("\n".join(rows) + "\n")
        rows = ["image_id,partition"] + [f"{i},{p}" for i, p in zip(ids, partition)]
        (eval_dir / "list_eval_partition.csv").write_text("\n".join(rows) + "\n")
    else:
        rows = [str(n), " ".join(CELEBA_ATTRIBUTES)] + [i + " " + " ".join(f"{v:2d}" for v in s) for i, s in zip(ids, signs)]
        (anno_dir / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
        (eval_dir / "list_eval_partition.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, partition)))
    if zip_images:
        with zipfile.ZipFile(img_parent / "img_align_celeba.zip", "w") as zf:
            for k, name in enumerate(ids):
                path = root / ".tmp.jpg"
                celeba_image(k).save(path, quality=95)
                zf.write(path, f"img_align_celeba/{name}")
                path.unlink()
    else:
        folder = img_parent / "img_align_celeba"
        folder.mkdir(exist_ok=True)
        for k, name in enumerate(ids):
            celeba_image(k).save(folder / name, quality=95)
    return root


@pytest.fixture
def celeba_dir(tmp_path) -> Path:
    return write_celeba_files(tmp_path / "celeba", 40)


TINY_TRAIN = ["--width", "1", "--latent-dim", "8", "--image-size", "32", "--batch-size", "32", "--eval-k", "4",
              "--eval-batches", "1", "--no-progress", "--epochs", "2"]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """240 synthetic faces (64×64) with ground-truth factors and the official-like partition."""
    from facevae.data.synthetic import write_synthetic_packed

    return write_synthetic_packed(tmp_path_factory.mktemp("synth") / "data", 240, size=64, seed=1, progress=False).root


def _train(tmp_path_factory, data: Path, name: str, *extra: str) -> Path:
    from facevae.cli import main

    run = tmp_path_factory.mktemp("runs") / name
    assert main(["train", "--data", str(data), "--run-dir", str(run), *TINY_TRAIN, *extra]) == 0
    return run


@pytest.fixture(scope="session")
def cvae_run(tmp_path_factory, synth_data) -> Path:
    """A tiny finished conditional run (all 17 synthetic attributes as the condition). Read-only."""
    return _train(tmp_path_factory, synth_data, "cvae", "--model", "cvae")


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory, synth_data) -> Path:
    """A tiny finished unconditional run. Read-only."""
    return _train(tmp_path_factory, synth_data, "vae", "--model", "vae")


class SimulatedCrash(RuntimeError):
    pass


class CrashAt(L.Callback):
    """Stands in for a kill: the run dies after optimiser step ``step`` (checkpoints run after this hook)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"killed after step {self.step}")
