"""`text`: byte-level language modelling of any file (or one column of a TSV file: `target_column`); targets
are the next byte; reported in bits per byte."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fbt.data.targets import IGNORE_INDEX
from fbt.data.text import load_text_split
from fbt.tasks.base import Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from fbt.training.config import TrainConfig


class TextTask(Task):
    vocab_size = 256
    valid_metric = "valid_bits_per_byte"
    test_metric = "bits_per_byte"
    tokens_are_bytes = True

    @classmethod
    def transformers_tokenizer(cls, tokenizer_file: Path | None) -> PreTrainedTokenizerBase:
        from fbt.hf.tokenization import FbtByteTokenizer

        return FbtByteTokenizer()

    def load_split(self, data: str, split: str, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return load_text_split(data, split, config.target_column)

    def encode(self, prompt: str) -> list[int]:
        return list(prompt.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def target_bytes(self, targets: torch.Tensor) -> int:
        return int((targets != IGNORE_INDEX).sum())
