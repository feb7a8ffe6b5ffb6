"""Checkpoints written atomically and read without unpickling code; weights exported as safetensors."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from facevae.common.errors import RunError
from facevae.common.files import atomic_path, make_dir, read_json, write_bytes_atomic, write_failure, write_json_atomic


class _ErrorRecordingFile:
    """A file for torch.save that keeps the OSError of a failed write: torch reports it only as
    "RuntimeError: [enforce fail at inline_container.cc]", without the errno that says the disk is full."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename: a crash leaves the old file, and a
    failed write (a full disk) removes its temporary and raises a FileWriteError naming ``path``."""
    path = Path(path)
    make_dir(path.parent)
    keep = "the previous version of the file is kept"
    with atomic_path(path, fix=keep) as tmp, open(tmp, "wb") as f:
        recording = _ErrorRecordingFile(f)
        try:
            torch.save(obj, recording)
        except RuntimeError:
            failure = recording.error and write_failure(path, recording.error, fix=keep)
            if failure is None:
                raise
            raise failure from None
        f.flush()
        os.fsync(f.fileno())


def check_complete(path: str | os.PathLike, fix: str = "") -> None:
    """A one-line RunError unless ``path`` is a whole checkpoint (cheap: only its end is read).

    torch.save writes a zip archive whose directory comes last, so a file cut short at any point,
    or never written, lacks it.
    """
    path = Path(path)
    size = path.stat().st_size
    suffix = f"; {fix}" if fix else ""
    if size == 0:
        raise RunError(f"{path}: empty (0 bytes): its write never finished{suffix}")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path}: truncated or damaged ({size:,} bytes, not a whole checkpoint){suffix}")


def safe_load(path: str | os.PathLike, map_location="cpu", fix: str = "") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, never code."""
    suffix = f"; {fix}" if fix else ""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then loads or refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:  # what weights_only refuses: code, or objects it does not know
        raise RunError(f"{path}: refused to load: it holds more than tensors and plain containers "
                       f"({_refusal(exc)}), and loading it could run code{suffix}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for a damaged file
        raise RunError(f"{path}: damaged checkpoint, cannot be read ({_first_line(exc)}){suffix}") from None


def _refusal(exc: BaseException) -> str:
    """What torch's safe unpickler found, without its advice to load the file unsafely."""
    # its paragraphs: the advice, [a request to file an issue,] what it found, a link to the documentation
    found = [p.strip() for p in str(exc).split("\n\n")[1:]
             if p.strip() and not p.strip().endswith(":") and not p.strip().startswith("Check the documentation")]
    return found[0].split(". ")[0].rstrip(".") if found else "not a plain-weights checkpoint"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
    # save() to bytes, then our own write: safetensors' writer reports a full disk as a text, not an errno.
    write_bytes_atomic(run_dir / "model.safetensors", save(state))
    write_json_atomic(run_dir / "model.json", info)
    return run_dir / "model.safetensors"


def read_exported(run_dir: str | os.PathLike, what: str = "model") -> tuple[dict, dict]:
    """(CPU state dict, info) of :func:`export_weights`' files; a one-line error for an unfinished or damaged run."""
    run_dir = Path(run_dir)
    weights, info_path = run_dir / "model.safetensors", run_dir / "model.json"
    if not weights.is_file() or not info_path.is_file():
        raise RunError(f"{run_dir}: no finished {what} (model.safetensors); train it to the end or --resume it")
    fix = reexport_fix(run_dir)
    info = read_json(info_path, RunError, fix)
    size = weights.stat().st_size
    if not size:
        raise RunError(f"{weights}: empty (0 bytes): its write never finished; {fix}")
    try:
        return load_file(str(weights), device="cpu"), info
    except SafetensorError as exc:
        raise RunError(f"{weights}: damaged ({size:,} bytes; {_first_line(exc)}); {fix}") from None


def reexport_fix(run_dir: str | os.PathLike) -> str:
    """How to write model.safetensors and model.json again: resuming a finished run re-exports its best.ckpt."""
    if (Path(run_dir) / "checkpoints" / "best.ckpt").is_file():
        return f"re-export it from checkpoints/best.ckpt with `facevae train --resume {run_dir}`"
    return "the run has no checkpoints/best.ckpt to re-export it from; train it again"
