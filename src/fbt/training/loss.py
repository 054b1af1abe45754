"""Cross-entropy over scored positions only (code-exec scores print answers; text scores every byte)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fbt.data.targets import IGNORE_INDEX


def segment_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Summed loss over scored positions of logits (B, T, V) and targets (B, T); also count and correct."""
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    flat_targets = targets.reshape(-1)
    scored = flat_targets != IGNORE_INDEX
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = (flat_logits.argmax(-1) == flat_targets)[scored].sum().item()
    return total, int(scored.sum().item()), int(correct)
