"""The few blocks every Transformer-family model here shares: the feed-forward block and the weight init.

Two inits (`ModelConfig.init`):
- "paper", as in the authors' code: PyTorch's defaults (Linear kaiming-uniform weights and uniform biases,
  Embedding N(0, 1)), relative-position keys N(0, 1), and the output projections of attention and of the
  feed-forward block (weights and biases) divided by sqrt(2L).
- "gpt2": N(0, 0.02) for Linear and Embedding weights and position keys, zero biases, output projections
  N(0, 0.02 / sqrt(2L)).
Either way the output projections are scaled so that the residual stream's variance does not grow with depth.
A projection is marked as such by its name: every nn.Linear registered under the attribute name `out`.
With "gpt2", attention starts nearly uniform over the span and small models sat at chance far longer on
code-exec in our measurements (benchmarks/LEARNING.md); "paper" is the default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_layer(layer: nn.Module, checkpointed: bool, *inputs):
    """layer(*inputs); under activation checkpointing (and when a gradient is being recorded) only the inputs
    are kept and the layer's activations are recomputed in backward: less memory for one more forward."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(layer, *inputs, use_reentrant=False)
    return layer(*inputs)


def checkpoint_group(steps: int) -> int:
    """Steps per recomputed group of a step-by-step model: about sqrt(T) groups of sqrt(T) steps keep the
    fewest activations (the group boundaries plus one group's recomputation)."""
    return max(1, math.isqrt(steps - 1) + 1) if steps > 1 else 1


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turn activation checkpointing on or off in every part of `model` that supports it."""
    for module in model.modules():
        if hasattr(module, "checkpoint_activations"):
            module.checkpoint_activations = enabled


def dropout_noise(like: torch.Tensor, p: float) -> torch.Tensor:
    """Bernoulli(1 - p) / (1 - p) of like's shape: on CPU the very multiplier F.dropout draws (same RNG calls)."""
    return torch.empty_like(like).bernoulli_(1 - p).div_(1 - p)


class BernoulliDropout(nn.Dropout):
    """nn.Dropout as x * dropout_noise(x, p). The fused feedback segment draws its masks this way; F.dropout's
    fused CUDA kernel consumes the RNG differently, so the plain feedback path uses this to draw the same masks
    as the fast one on every device (on CPU it equals nn.Dropout bit for bit)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * dropout_noise(x, self.p) if self.training and self.p > 0 else x


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear, both with bias: (..., D) -> (..., D)."""

    def __init__(self, dim: int, ff: int, dropout: float, dropout_type: type[nn.Dropout] = nn.Dropout):
        super().__init__()
        self.hidden = nn.Linear(dim, ff)
        self.out = nn.Linear(ff, dim)  # named `out`: scaled at init
        self.dropout = dropout_type(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.relu(self.hidden(x))))


def init_weights(module: nn.Module, layers: int, style: str) -> None:
    """Apply the init `style` above to every Linear and Embedding inside `module`; `layers` is the depth L."""
    shrink = 1 / math.sqrt(2 * layers)
    for name, sub in module.named_modules():
        if not isinstance(sub, (nn.Linear, nn.Embedding)):
            continue
        scaled = isinstance(sub, nn.Linear) and name.rsplit(".", 1)[-1] == "out"
        if style == "paper":
            sub.reset_parameters()
            if scaled:
                with torch.no_grad():
                    sub.weight.mul_(shrink)
                    if sub.bias is not None:
                        sub.bias.mul_(shrink)
        else:
            nn.init.normal_(sub.weight, mean=0.0, std=0.02 * shrink if scaled else 0.02)
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                nn.init.zeros_(sub.bias)


def init_position_keys(pos_keys: torch.Tensor, style: str) -> None:
    """Relative-position keys: N(0, 1) as the authors draw them, or N(0, 0.02)."""
    nn.init.normal_(pos_keys, std=1.0 if style == "paper" else 0.02)


class CrossAttention(nn.Module):
    """Pre-norm attention from decoder states to the encoder output, as in the standard encoder-decoder.

    The encoder output's keys and values are projected once per sentence (`project`) and reused at every
    decoding step.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads, self.head_width = heads, head_dim
        self.dropout = dropout  # a probability: SDPA applies it to the attention weights
        self.norm = nn.LayerNorm(dim)
        A = heads * head_dim
        self.query = nn.Linear(dim, A, bias=False)
        self.key = nn.Linear(dim, A, bias=False)
        self.value = nn.Linear(dim, A, bias=False)
        self.out = nn.Linear(A, dim, bias=False)  # named `out`: scaled at init

    def project(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, S, E) of the encoder output (B, S, D)."""
        B, S, _ = encoded.shape
        heads = (B, S, self.heads, self.head_width)
        return self.key(encoded).view(heads).transpose(1, 2), self.value(encoded).view(heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor):
        """x (B, T, D) plus its read of the source; keys/values (B, H, S, E); visible (B, 1, 1, S), False at
        source padding."""
        B, T, _ = x.shape
        q = self.query(self.norm(x)).view(B, T, self.heads, self.head_width).transpose(1, 2)  # (B, H, T, E)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, dropout_p=dropout)
        attended = y.transpose(1, 2).reshape(B, T, self.heads * self.head_width)  # (B, H, T, E) -> (B, T, H·E)
        return x + self.out(attended)


def source_state(layers: nn.ModuleList, encoded: torch.Tensor, source_visible: torch.Tensor) -> dict:
    """What every decoder layer reads of the source, batch first: "cross_keys"/"cross_values" (B, L, H, S, E)
    from each layer's `cross` attention, and "source_visible" (B, 1, 1, S), False at padding."""
    projected = [layer.cross.project(encoded) for layer in layers]
    return {
        "cross_keys": torch.stack([k for k, _ in projected], dim=1),
        "cross_values": torch.stack([v for _, v in projected], dim=1),
        "source_visible": source_visible[:, None, None, :],
    }
