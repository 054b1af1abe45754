"""The task kinds: their vocabularies, data splits, prompts and what their metrics mean.

- `text`: byte-level language modelling of any file; targets are the next byte; reported in bits per byte.
- `code-exec`: the variable-tracking task; targets are aligned labels, scored only at `print` answers.
- `lm`: subword language modelling with a BPE tokenizer; perplexity per token and bits per byte (the loss
  over the bytes the predicted tokens stand for, so byte-level and subword runs compare on one scale).
- `translation`: sentence pairs for an encoder-decoder; perplexity per target token; BLEU and chrF come from
  decoding (scoring.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fbt.data.code_exec import IGNORE_INDEX, TOKEN_TO_ID, VOCAB, load_code_exec_split
from fbt.data.streams import SegmentStream
from fbt.data.text import load_subword_split, load_text_split, read_text_bytes
from fbt.data.tokenizer import BpeTokenizer
from fbt.errors import FbtError

TASK_NAMES = ("text", "code-exec", "lm", "translation")
TOKENIZED = ("lm", "translation")  # tasks that need a BPE tokenizer


@dataclass(frozen=True)
class Task:
    name: str
    tokenizer: BpeTokenizer | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise FbtError(f"unknown task {self.name!r}; choose one of {', '.join(TASK_NAMES)}")
        if self.name in TOKENIZED and self.tokenizer is None:
            raise FbtError(f"task {self.name} needs a BPE tokenizer")

    @property
    def vocab_size(self) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.vocab_size
        return 256 if self.name == "text" else len(VOCAB)

    def load_split(self, data: str | Path, split: str, column: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (N,) and targets (N,) of one split, both int64; targets IGNORE_INDEX where unscored.
        Language modelling tasks only (translation has sentence pairs, see translation_stream)."""
        if not data:
            raise FbtError(f"no data given for task {self.name}: pass --data")
        if self.name == "text":
            return load_text_split(data, split)
        if self.name == "lm":
            return load_subword_split(read_text_bytes(data, column), split, self.tokenizer.encode)
        if self.name == "code-exec":
            return load_code_exec_split(data, split)
        raise FbtError("translation data are sentence pairs, not one token stream")

    def segment_stream(self, data: str | Path, split: str, batch: int, segment: int, column: str = ""):
        return SegmentStream(*self.load_split(data, split, column), batch, segment)

    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.encode(prompt)
        if self.name == "text":
            return list(prompt.encode("utf-8"))
        ids = []
        for token in prompt.split():
            if token not in TOKEN_TO_ID:
                raise FbtError(f"token {token!r} is not in the code-exec vocabulary ({' '.join(VOCAB)})")
            ids.append(TOKEN_TO_ID[token])
        return ids

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        if self.name == "text":
            return bytes(ids).decode("utf-8", errors="replace")
        return " ".join(VOCAB[i] for i in ids)

    def target_bytes(self, targets: torch.Tensor) -> int:
        """Bytes of text the scored targets (any shape) stand for: 0 where that is not defined."""
        if self.name == "text":
            return int((targets != IGNORE_INDEX).sum())
        if self.name == "lm":
            return int(self.tokenizer.token_bytes.to(targets.device)[targets].sum())
        return 0

    def metrics(self, loss_sum: float, correct: int, scored: int, scored_bytes: int = 0) -> dict:
        """Summary of a pass: mean loss (nats), accuracy; perplexity for subword tasks, bits per byte for
        language modelling."""
        if scored == 0:
            raise FbtError("the split has no scored positions")
        loss = loss_sum / scored
        result = {"loss": loss, "accuracy": correct / scored, "scored_tokens": scored}
        if self.name in TOKENIZED:
            result["perplexity"] = math.exp(min(loss, 700.0))
        if self.name in ("text", "lm") and scored_bytes:
            result["bits_per_byte"] = loss_sum / scored_bytes / math.log(2)
        return result


__all__ = ["IGNORE_INDEX", "TASK_NAMES", "TOKENIZED", "Task"]
