"""Named recipes: model and training settings chosen for what a run is for (``--preset NAME``).

A preset fills in the settings the command line did not give; every setting typed on the command
line wins over it. The run's config.yaml records the settings that resulted (and the preset's name).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    purpose: str
    settings: dict  # ModelConfig and TrainConfig fields by name
    needs_gpu: str = ""  # why it is no use without one, when that is so


PRESETS: dict[str, Preset] = {
    "hvae-cpu32": Preset(
        "the hierarchical VAE on 2 CPU cores in minutes: 32x32 faces, three latent scales (4x4 to 16x16)",
        {"model": "hvae", "image_size": 32, "hvae_groups": [2, 2, 1], "hvae_channels": 8, "hvae_latent_channels": 8,
         "hvae_cells": 1, "hvae_pre_blocks": 1, "hvae_expansion": 3, "mixtures": 10, "spectral_lambda": 0.1,
         "kl_warmup_steps": 500, "batch_size": 32, "lr": 1e-2, "lr_warmup_steps": 100, "skip_updates": 10.0,
         "channels_last": True, "patience": 0},
    ),
    "hvae-gpu64": Preset(
        "the hierarchical VAE for one GPU hour on CelebA 64x64: three latent scales (8x8 to 32x32), NVAE's cells",
        {"model": "hvae", "image_size": 64, "hvae_groups": [8, 4, 2], "hvae_channels": 32, "hvae_latent_channels": 20,
         "hvae_cells": 2, "hvae_pre_blocks": 1, "hvae_expansion": 6, "mixtures": 10, "spectral_lambda": 0.1,
         "kl_warmup_steps": 10000, "batch_size": 64, "lr": 1e-2, "lr_warmup_steps": 1000, "skip_updates": 10.0,
         "precision": "bf16-mixed", "channels_last": True, "on_device": True,
         "max_time": "00:01:00:00", "epochs": 1000, "patience": 0},
        "on a CPU it trains at about 1 image/s, and its batch of 64 needs more than 24 GiB (docs/benchmarks.md)",
    ),
}


def apply_preset(settings: dict, name: str | None, given: set[str] = frozenset()) -> dict:
    """``settings`` with the preset's values wherever the command line did not give one (``given``)."""
    if name is None:
        return settings
    if name not in PRESETS:
        raise ValueError(f"unknown --preset {name!r}; choose from {', '.join(PRESETS)}")
    unknown = set(PRESETS[name].settings) - set(settings)
    if unknown:  # a preset naming a setting that no longer exists is a bug here, not the user's
        raise KeyError(f"preset {name} sets unknown settings {sorted(unknown)}")
    return {**settings, **{k: v for k, v in PRESETS[name].settings.items() if k not in given}}


def preset_warning(name: str | None, accelerator: str) -> str | None:
    """A warning when the preset is for a GPU and the run will have none."""
    preset = PRESETS.get(name) if name else None
    if preset is None or not preset.needs_gpu or accelerator == "gpu":
        return None
    import torch

    if torch.cuda.is_available() and accelerator != "cpu":
        return None
    return f"--preset {name} is for a GPU and this run has none: {preset.needs_gpu}"


def presets_help() -> str:
    return "; ".join(f"{name}: {p.purpose}" for name, p in PRESETS.items())
