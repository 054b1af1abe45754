"""The two task kinds: their vocabularies, data splits, prompts and what their metrics mean.

- `text`: byte-level language modelling of any file; targets are the next byte; reported in bits per byte.
- `code-exec`: the variable-tracking task; targets are aligned labels, scored only at `print` answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fbt.data.code_exec import IGNORE_INDEX, TOKEN_TO_ID, VOCAB, load_code_exec_split
from fbt.data.text import load_text_split
from fbt.errors import FbtError

TASK_NAMES = ("text", "code-exec")


@dataclass(frozen=True)
class Task:
    name: str

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise FbtError(f"unknown task {self.name!r}; choose one of {', '.join(TASK_NAMES)}")

    @property
    def vocab_size(self) -> int:
        return 256 if self.name == "text" else len(VOCAB)

    def load_split(self, data: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (N,) and targets (N,) of one split, both int64; targets IGNORE_INDEX where unscored."""
        if not data:
            raise FbtError(f"no data given for task {self.name}: pass --data")
        if self.name == "text":
            return load_text_split(data, split)
        return load_code_exec_split(data, split)

    def encode(self, prompt: str) -> list[int]:
        if self.name == "text":
            return list(prompt.encode("utf-8"))
        ids = []
        for token in prompt.split():
            if token not in TOKEN_TO_ID:
                raise FbtError(f"token {token!r} is not in the code-exec vocabulary ({' '.join(VOCAB)})")
            ids.append(TOKEN_TO_ID[token])
        return ids

    def decode(self, ids: list[int]) -> str:
        if self.name == "text":
            return bytes(ids).decode("utf-8", errors="replace")
        return " ".join(VOCAB[i] for i in ids)

    def metrics(self, loss_sum: float, correct: int, scored: int) -> dict:
        """Summary of a pass: mean loss (nats), accuracy, and bits per byte for text."""
        if scored == 0:
            raise FbtError("the split has no scored positions")
        loss = loss_sum / scored
        result = {"loss": loss, "accuracy": correct / scored, "scored_tokens": scored}
        if self.name == "text":
            result["bits_per_byte"] = loss / math.log(2)
        return result


__all__ = ["IGNORE_INDEX", "TASK_NAMES", "Task"]
