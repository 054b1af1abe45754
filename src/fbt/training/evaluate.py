"""A pass over a split with the model's state carried from segment to segment."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from fbt.data.streams import SegmentStream
from fbt.tasks import Task
from fbt.training.loss import segment_loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    stream: SegmentStream,
    task: Task,
    device: torch.device,
    max_tokens: int = 0,
    progress: bool = False,
) -> dict:
    """Mean loss, accuracy (and perplexity, bits per byte where they apply) over the first `max_tokens`
    tokens (0: all)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, scored, seen, scored_bytes = 0.0, 0, 0, 0, 0
    state = None
    total = stream.segments_per_pass()
    hidden = None if progress else True  # None: hidden when stderr is not a terminal
    bar = tqdm(stream.iterate_once(), total=total, desc="eval", leave=False, disable=hidden, unit="seg")
    for inputs, targets in bar:
        logits, state = model(inputs.to(device), state)
        loss, count, right = segment_loss(logits.float(), targets.to(device))
        loss_sum += loss.item()
        scored += count
        correct += right
        scored_bytes += task.target_bytes(targets)
        seen += inputs.numel()
        if max_tokens and seen >= max_tokens:
            break
    model.train(was_training)
    return task.metrics(loss_sum, correct, scored, scored_bytes)
