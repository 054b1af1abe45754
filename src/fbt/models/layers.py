"""The few blocks every Transformer-family model here shares: the feed-forward block and the weight init.

Init (as in the official Feedback Transformer code and GPT-2): normal(0, 0.02) for Linear and Embedding
weights, zero biases, and the output projections of attention and of the feed-forward block scaled by
1/sqrt(2L), so the residual stream's variance does not grow with depth. A projection is marked as such by
its name: every nn.Linear registered under the attribute name `out` gets the scaled init.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear, both with bias: (..., D) -> (..., D)."""

    def __init__(self, dim: int, ff: int, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(dim, ff)
        self.out = nn.Linear(ff, dim)  # named `out`: scaled at init
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.relu(self.hidden(x))))


def init_weights(module: nn.Module, layers: int) -> None:
    """Apply the init above to every Linear and Embedding inside `module`; `layers` is the depth L."""
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            scaled = isinstance(sub, nn.Linear) and name.rsplit(".", 1)[-1] == "out"
            nn.init.normal_(sub.weight, mean=0.0, std=0.02 / math.sqrt(2 * layers) if scaled else 0.02)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
