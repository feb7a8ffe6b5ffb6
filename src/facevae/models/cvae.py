"""Conditional VAE: the attributes c go into the encoder (next to the features, before the
posterior heads) and into the decoder (next to z), so z is free to encode what c does not say."""

from __future__ import annotations

import torch
import torch.nn as nn

from facevae.models.config import ModelConfig
from facevae.models.conv import ConvVAE


class AttributeCondition(nn.Module):
    """c (B, A) of 0/1 attributes → the vector the networks see.

    "vector": c itself. "embedding": a learned vector per value of each attribute (the same as one
    nn.Embedding(2, dim) per attribute), summed over attributes. Values between 0 and 1 interpolate
    between the two embeddings, so attribute editing can move smoothly in both modes.
    """

    def __init__(self, num_conditions: int, mode: str = "vector", dim: int = 32):
        super().__init__()
        self.num_conditions, self.mode = num_conditions, mode
        self.dim = num_conditions if mode == "vector" else dim
        if mode == "embedding":
            # std 1/sqrt(A): the sum over A attributes then starts at unit scale, like the features
            self.embeddings = nn.Parameter(torch.randn(num_conditions, 2, dim) / num_conditions**0.5)

    def forward(self, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            raise ValueError("this model is conditional: pass c, the (B, num_conditions) attribute tensor")
        if c.dim() != 2 or c.shape[1] != self.num_conditions:
            raise ValueError(f"c must have shape (B, {self.num_conditions}) (columns in the order of "
                             f"config.condition_names; see ModelConfig.condition_index), got {tuple(c.shape)}")
        c = c.float()
        if self.mode == "vector":
            return c
        off, on = self.embeddings[:, 0], self.embeddings[:, 1]  # (A, dim) each
        return (off + c.unsqueeze(-1) * (on - off)).sum(1)


class CVAE(ConvVAE):
    def __init__(self, config: ModelConfig):
        if config.model == "cvae" and not config.is_conditional:
            raise ValueError("CVAE needs condition_names")
        cond = AttributeCondition(config.num_conditions, config.condition_mode, config.condition_dim) \
            if config.num_conditions else None
        super().__init__(config, cond_dim=cond.dim if cond is not None else 0)
        self.conditioning = cond

    def condition(self, c):
        return None if self.conditioning is None else self.conditioning(c)
