"""A pass over a split with the model's state carried from segment to segment."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from fbt.data.streams import SegmentStream
from fbt.progress import progress_display
from fbt.training.distributed import Ranks, rows_of
from fbt.training.loss import segment_loss

if TYPE_CHECKING:
    from fbt.tasks import Task


@torch.no_grad()
def evaluate(
    model: nn.Module,
    stream: SegmentStream,
    task: Task,
    device: torch.device,
    max_tokens: int = 0,
    progress: bool = False,
    ranks: Ranks | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict:
    """Mean loss, accuracy (and perplexity, bits per byte where they apply) over the first `max_tokens`
    tokens (0: all). Under torchrun each rank runs its rows and the sums (not the means) are added up."""
    ranks = ranks or Ranks()
    was_training = model.training
    model.eval()
    loss_sum, correct, scored, seen, scored_bytes = 0.0, 0, 0, 0, 0
    state = None
    total = stream.segments_per_pass()
    bar = progress_display(stream.iterate_once(), total=total, desc="eval", leave=False, unit="seg", shown=progress)
    for inputs, targets in bar:
        seen += targets.numel()  # global, so every rank stops after the same segment
        rows = ranks.rows(targets.shape[0], even=task.even_split)
        inputs, targets = rows_of(inputs, rows), targets[rows]
        with autocast():
            logits, state = model(inputs.to(device), state)
        loss, count, right = segment_loss(logits.float(), targets.to(device))
        loss_sum += loss.item()
        scored += count
        correct += right
        scored_bytes += task.target_bytes(targets)
        if max_tokens and seen >= max_tokens:
            break
    model.train(was_training)
    loss_sum, correct, scored, scored_bytes = ranks.sum([loss_sum, correct, scored, scored_bytes])
    return task.metrics(loss_sum, int(correct), int(scored), int(scored_bytes))
