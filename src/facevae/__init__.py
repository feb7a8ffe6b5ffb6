"""facevae: learn and measure what variational autoencoders learn about faces."""

__version__ = "0.1.0"


def load(run_dir, device="cpu"):
    """A trained model from ``runs/NAME`` (model.safetensors + model.json), without Lightning."""
    from facevae.training.run import load as _load

    return _load(run_dir, device=device)
