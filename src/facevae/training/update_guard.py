"""Skipping bad updates instead of stopping the run (VDVAE's rule, Child 2021), relative to the run.

An update whose loss or gradient norm is non-finite, or whose gradient norm is more than ``factor``
times the median of the last accepted ones, is skipped: the weights and the optimiser's moments stay
as they were. Deep hierarchical VAEs produce such spikes now and then, and one of them can undo a run.
A run that keeps producing them is broken, and stops as a non-finite loss would.
"""

from __future__ import annotations

import math
from collections import deque

import torch

WINDOW = 100  # accepted norms the median is taken over
WARMUP = 100  # updates before the median is trusted (norms grow fast early on; only non-finite ones are skipped until then)
PATIENCE = 10  # skipped updates in a row that stop the run


class UpdateGuard:
    def __init__(self, factor: float):
        self.factor = float(factor)
        self.norms: deque[float] = deque(maxlen=WINDOW)
        self.skipped = 0
        self.in_a_row = 0

    def accept(self, norm: float) -> bool:
        """Whether an update with this gradient norm (or loss, when non-finite) goes ahead; records it."""
        spike = len(self.norms) >= WARMUP and norm > self.factor * sorted(self.norms)[len(self.norms) // 2]
        if math.isfinite(norm) and not spike:
            self.norms.append(norm)
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        return False

    @property
    def broken(self) -> bool:
        return self.in_a_row >= PATIENCE

    def state_dict(self) -> dict:
        return {"norms": torch.tensor(list(self.norms), dtype=torch.float64), "skipped": self.skipped,
                "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.norms = deque((float(v) for v in state["norms"]), maxlen=WINDOW)
        self.skipped, self.in_a_row = int(state["skipped"]), int(state["in_a_row"])


def gradient_norm(parameters) -> float:
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
