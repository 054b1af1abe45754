"""`lm`: subword language modelling with a BPE tokenizer; perplexity per token and bits per byte (the loss
over the bytes the predicted tokens stand for, so byte-level and subword runs compare on one scale)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from fbt.data.text import load_subword_split, read_text_bytes, subword_split_text
from fbt.tasks.base import Task

if TYPE_CHECKING:
    from fbt.training.config import TrainConfig


class SubwordLmTask(Task):
    needs_tokenizer = True
    valid_metric = "valid_bits_per_byte"
    test_metric = "bits_per_byte"

    @classmethod
    def training_text(cls, config: TrainConfig) -> Iterator[str]:
        text = subword_split_text(read_text_bytes(config.data, config.target_column), "train")
        yield from text.splitlines(True)

    def load_split(self, data: str, split: str, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return load_subword_split(read_text_bytes(data, config.target_column), split, self.tokenizer.encode)

    def target_bytes(self, targets: torch.Tensor) -> int:
        return int(self.tokenizer.token_bytes.to(targets.device)[targets].sum())
