"""Checkpoints written atomically and read without unpickling code; weights exported as safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from safetensors.torch import load_file, save_file

from facevae.common.errors import RunError
from facevae.common.files import write_json_atomic


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def safe_load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, never code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unpickling refusal or a damaged file
        raise ValueError(f"{path}: refused to load (not a plain-weights checkpoint: {str(exc).splitlines()[0]})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with a same-folder rename (fsspec's goes through /tmp) and safe loading."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return safe_load(path, map_location=map_location or "cpu")


def export_weights(model: torch.nn.Module, run_dir: str | os.PathLike, info: dict) -> Path:
    """model.safetensors (written atomically) + model.json (``info``): all that loading needs, no pickle."""
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = run_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, run_dir / "model.safetensors")
    write_json_atomic(run_dir / "model.json", info)
    return run_dir / "model.safetensors"


def read_exported(run_dir: str | os.PathLike, what: str = "model") -> tuple[dict, dict]:
    """(CPU state dict, info) of :func:`export_weights`' files; a one-line error for an unfinished run."""
    run_dir = Path(run_dir)
    weights, info_path = run_dir / "model.safetensors", run_dir / "model.json"
    if not weights.is_file() or not info_path.is_file():
        raise RunError(f"{run_dir}: no finished {what} (model.safetensors); train it to the end or --resume it")
    return load_file(str(weights), device="cpu"), json.loads(info_path.read_text())
