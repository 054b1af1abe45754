"""Optimiser construction and the learning-rate schedule (linear warm-up, then constant, cosine or wsd)."""

from __future__ import annotations

import math

import torch
from torch import nn

from fbt.training.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr)


def learning_rate(step: int, config: TrainConfig, anchor: tuple[int, float] | None = None) -> float:
    """Learning rate of update number `step` (0-based).

    The cosine decays from `lr * scale` at step `start` to zero at `config.steps`, with (start, scale) = anchor,
    by default (warmup, 1.0); wsd holds `lr * scale` until its decay begins, `decay_steps` before the end. A
    resumed run given more steps re-anchors at its own step and current learning rate (see Trainer.resume), so
    it goes on from where it was, to zero at the new end: no jump."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    start, scale = anchor or (config.warmup, 1.0)
    if config.schedule == "wsd":
        start = max(start, config.steps - config.decay_steps)
    progress = (step - start) / max(1, config.steps - start)
    return config.lr * scale * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
