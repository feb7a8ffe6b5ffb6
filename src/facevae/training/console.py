"""What a training command shows: the progress bar and the run's own lines, not Lightning's chatter.

Lightning logs at INFO what it found (GPU available, TPU cores), a tip advertising its cloud
service, that each ``limit_*_batches`` it was given "was configured so 100% of the batches will be
used", the model summary and why fit stopped; it also warns about what is deliberate here (few
data-loading workers, a log interval longer than a tiny epoch, a moved or resumed run's checkpoint
folder) and passes on deprecation warnings of its own use of torch. With ``--verbose`` or
``FACEVAE_DEBUG=1`` all of it is shown.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.fabric.utilities.warnings import PossibleUserWarning

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Warnings about what facevae does on purpose (see the module's docstring).
DELIBERATE = (
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r".*The dirpath has changed from.*",  # a copied run resumes where it is, by design
    r".*Checkpoint directory .* exists and is not empty.*",  # what --resume continues
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def verbose_wanted(verbose: bool) -> bool:
    return bool(verbose or os.environ.get("FACEVAE_DEBUG"))


@contextmanager
def lightning_quiet(verbose: bool = False) -> Iterator[None]:
    """Lightning's INFO lines and its advisory warnings hidden for the block, unless ``verbose``."""
    if verbose_wanted(verbose):
        yield
        return
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            for message in DELIBERATE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
