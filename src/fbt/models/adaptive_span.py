"""Adaptive attention span (Sukhbaatar et al., "Adaptive Attention Span in Transformers", arXiv 1905.07799), as
the Feedback Transformer's enwik8 run uses it.

Every head h of a layer learns how far back it reads: a ratio r_h in [0, 1] sets its span z_h = r_h S (S the
configured span), and a soft mask over distances d = 1..S,

    m_h(d) = clamp((z_h + 1 - d) / R + 1, 0, 1),

is 1 up to distance z_h + 1, falls linearly over the ramp R, and is 0 from z_h + 1 + R on. It multiplies the
attention probabilities after the softmax, which are then renormalised, p_d m_d / (sum_j p_j m_j + 1e-8), as in
the authors' code. The loss adds coefficient x mean_h z_h per layer, so a head pays for the distance it keeps;
after each update the ratios are clamped to [0, 1].

Because the mask is exactly 0 beyond the longest span, memories further back change nothing (up to the 1e-8 of
the renormalisation): a forward reads only the last `reach` positions, the longest span of any head, and a long
configured span costs only what the heads use.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPSILON = 1e-8  # of the renormalisation, as in the authors' code
# The ModelConfig fields a family with adaptive spans reads.
OPTIONS = ("adaptive_span", "adaptive_span_ramp", "adaptive_span_init", "adaptive_span_loss")


def span_mask(lengths: torch.Tensor, distances: torch.Tensor, ramp: int) -> torch.Tensor:
    """m(d) of spans `lengths` (H,) at `distances` (...,): (H, ...)."""
    shape = (-1,) + (1,) * distances.dim()
    return ((lengths.view(shape) + 1 - distances) / ramp + 1).clamp(0, 1)


def renormalise(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """probs * mask over the last dimension, renormalised to sum to (almost) 1."""
    masked = probs * mask
    return masked / (masked.sum(-1, keepdim=True) + EPSILON)


class AdaptiveSpan(nn.Module):
    """The learned spans of one layer's H heads (see the module's docstring)."""

    def __init__(self, heads: int, span: int, ramp: int, init: float):
        super().__init__()
        self.span, self.ramp = span, ramp
        self.ratio = nn.Parameter(torch.full((heads,), float(init)))

    def lengths(self) -> torch.Tensor:
        """z_h = r_h S, (H,)."""
        return self.ratio * self.span

    def mask(self, distances: torch.Tensor) -> torch.Tensor:
        """(H, ...) mask at `distances` (...,)."""
        return span_mask(self.lengths(), distances.to(self.ratio.dtype), self.ramp)

    def reach(self) -> int:
        """The furthest distance any head reads: the longest span plus its ramp, at most S."""
        longest = self.ratio.detach().max().item() * self.span + self.ramp
        return max(1, min(self.span, math.ceil(longest)))

    @torch.no_grad()
    def clamp_(self) -> None:
        self.ratio.clamp_(0, 1)


def span_modules(model: nn.Module) -> list[AdaptiveSpan]:
    return [module for module in model.modules() if isinstance(module, AdaptiveSpan)]


def reach(model: nn.Module, span: int) -> int:
    """How many past positions a forward must read: the furthest reach of any head, or `span` without adaptive
    spans."""
    modules = span_modules(model)
    return max(module.reach() for module in modules) if modules else span


def span_loss(model: nn.Module, coefficient: float) -> torch.Tensor | None:
    """coefficient x (sum over layers of the mean span in tokens), or None without adaptive spans."""
    modules = span_modules(model)
    if not modules or not coefficient:
        return None
    return coefficient * sum(module.lengths().mean() for module in modules)


@torch.no_grad()
def span_report(model: nn.Module, coefficient: float) -> dict:
    """The learned spans for a training log: the span loss, the spans' mean and max in tokens, and every head's
    span, layer by layer."""
    modules = span_modules(model)
    if not modules:
        return {}
    lengths = torch.stack([module.lengths() for module in modules])  # (L, H)
    return {
        "span_loss": coefficient * lengths.mean(-1).sum().item(),
        "span_mean": round(lengths.mean().item(), 2),
        "span_max": round(lengths.max().item(), 2),
        "spans": " | ".join(" ".join(f"{z:.0f}" for z in layer.tolist()) for layer in lengths),
    }


class AdaptiveSpanHost:
    """What a model with adaptive spans gives the trainer (both optional there, see training/trainer.py): the
    span loss to add to its training loss, and the clamp of the ratios after each update."""

    def auxiliary_loss(self) -> torch.Tensor | None:
        return span_loss(self, self.config.adaptive_span_loss)

    def after_update(self) -> None:
        for module in span_modules(self):
            module.clamp_()


def span_words(config) -> str:
    """A model's span in `describe`: "span 64", or "adaptive span <= 8192 (ramp 32)"."""
    if config.adaptive_span:
        return f"adaptive span <= {config.span} (ramp {config.adaptive_span_ramp})"
    return f"span {config.span}"
