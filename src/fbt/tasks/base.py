"""What every task answers, with the answers of a token-stream task as defaults.

A task is one kind of training data and what its numbers mean: its ids, the batches each split gives, how
prompts encode, what a pass's metrics are, which settings and models it accepts, what generating from a run
does and how a run of it is judged. The trainer, evaluator, API and CLI ask the task; none knows task names.

Most tasks are token streams: a split is aligned inputs (N,) and targets (N,), read as B parallel streams of
T-token segments (`SegmentStream`). Such a task sets `vocab_size` and implements `load_split`, `encode` and
`decode`; it inherits the rest. A task of other batches (translation's sentence pairs) overrides what differs.

Class attributes and class methods answer without a tokenizer, before a run's task is built (when a config
is checked, runs are listed or the CLI gives hints); the rest are asked of the run's task.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from fbt.data.streams import SegmentStream
from fbt.data.tokenizer import BpeTokenizer
from fbt.errors import FbtError
from fbt.formatting import format_count
from fbt.models import family_names, model_class
from fbt.sampling import generate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from fbt.models.config import ModelConfig
    from fbt.training.config import TrainConfig

UNCONDITIONAL_START = "\n"  # byte-level text has no start token: unconditional samples follow a line break


@dataclass(frozen=True)
class EvalSettings:
    """How a split is read and scored; each task uses the settings that apply to it."""

    batch: int | None = None  # token streams: B streams (None: the run's)
    segment: int | None = None  # token streams: T tokens per segment (None: the run's)
    beam: int = 1  # decoded outputs: beam width
    length_penalty: float = 1.0  # decoded outputs: beam scores divided by length ** length_penalty
    progress: bool = False
    outputs: str | None = None  # decoded outputs: also written to this file, one line per example


@dataclass(frozen=True)
class SamplingSettings:
    """How `fbt generate` samples: the continuation's length, temperature, top-k, top-p and seed."""

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    seed: int = 0


def translates(model: str) -> bool:
    """Whether model family `model` reads translation batches (sentence pairs) instead of token streams."""
    return model_class(model).translates


def model_mismatch(task: str, model: str) -> str:
    """The one-line error of a task given a model that cannot train it."""
    names = " or ".join(name for name in family_names() if translates(name))
    return (
        f"translation trains the {names} model (--model {names}), and {names} only translates: got --task "
        f"{task} with --model {model}"
    )


class Task:
    """A kind of training data and what its numbers mean (see the module docstring)."""

    name: ClassVar[str] = ""  # the registered name (register_task sets it)
    needs_tokenizer: ClassVar[bool] = False  # ids come from a BPE tokenizer, which the run loads or trains
    valid_metric: ClassVar[str] = "valid_loss"  # the metrics.csv column that says how good a run is
    higher_is_better: ClassVar[bool] = False  # of valid_metric
    test_metric: ClassVar[str] = "loss"  # the `fbt eval` figure `fbt runs` shows as the run's test result
    decodes: ClassVar[bool] = False  # `fbt eval` decodes outputs (and may write them with --outputs)
    tokens_are_bytes: ClassVar[bool] = False  # a loss per token is a loss per byte (figures show bits per byte)
    even_split: ClassVar[bool] = True  # a batch is `batch` streams, split evenly over ranks and micro-batches
    takes_curriculum: ClassVar[bool] = True  # earlier datasets (--curriculum) may train first
    example_prompt: ClassVar[str] = "ROMEO:"  # the prompt of the `fbt generate` hint after training
    vocab_size: int  # ids 0..vocab_size-1 (a tokenizing task: the tokenizer's)

    def __init__(self, tokenizer: BpeTokenizer | None = None):
        if self.needs_tokenizer and tokenizer is None:
            raise FbtError(f"task {self.name} needs a BPE tokenizer")
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self.vocab_size = tokenizer.vocab_size

    # ---- asked before the run's task is built ----

    @classmethod
    def recognises_data(cls, path: str | Path) -> bool:
        """Whether a --data path alone says a run is of this task (when --task is not given)."""
        return False

    @classmethod
    def check_model(cls, model_config: ModelConfig, train_config: TrainConfig) -> None:
        """A one-line FbtError for a model that cannot train this task: token streams train any but seq2seq."""
        if translates(model_config.model):
            raise FbtError(model_mismatch(cls.name, model_config.model))

    @classmethod
    def training_text(cls, config: TrainConfig) -> Iterator[str]:
        """What a tokenizer trained for the run learns from: the train split of the run's data."""
        raise FbtError(f"task {cls.name} trains no tokenizer")

    @classmethod
    def tokens_per_step(cls, config: TrainConfig) -> int:
        return config.batch * config.segment

    @classmethod
    def transformers_tokenizer(cls, tokenizer_file: Path | None) -> PreTrainedTokenizerBase | None:
        """The transformers tokenizer `fbt export --format hf` saves beside a run's model: the BPE of the
        run's tokenizer.json where it has one, else None (the export then holds the model alone)."""
        from fbt.hf.tokenization import bpe_tokenizer

        return bpe_tokenizer(tokenizer_file) if tokenizer_file is not None else None

    @classmethod
    def next_command(cls, run: str) -> str:
        """The hint after training of how to use the run (beside eval and plot)."""
        return f"  fbt generate {run} --prompt {shlex.quote(cls.example_prompt)}"

    # ---- data ----

    def load_split(self, data: str, split: str, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (N,) and targets (N,) of one split, both int64; targets IGNORE_INDEX where unscored."""
        raise NotImplementedError

    def streams(
        self,
        config: TrainConfig,
        data: str,
        splits: tuple[str, ...],
        batch: int | None = None,
        segment: int | None = None,
        whole_documents: bool = False,
    ) -> list:
        """A stream per split of `data`: segments (B, T) of `batch` parallel streams (default: the run's); with
        `whole_documents`, rows of whole documents where the task has them (an evaluation's)."""
        if not data:
            raise FbtError(f"no data given for task {self.name}: pass --data")
        batch, segment = batch or config.batch, segment or config.segment
        streams = []
        for split in splits:
            inputs, targets = self.load_split(data, split, config)
            starts = self.document_starts(inputs) if whole_documents else None
            if starts is None:
                streams.append(SegmentStream(inputs, targets, batch, segment))
            else:
                streams.append(SegmentStream.of_documents(inputs, targets, starts, min(batch, starts.numel()), segment))
        return streams

    def batching(self, config: TrainConfig, train: SegmentStream) -> str:
        """The training header's line of what a step reads, given the train stream."""
        per_step = self.tokens_per_step(config)
        return (
            f"{config.batch} streams x {config.segment} = {per_step:,} per step, "
            f"{format_count(per_step * config.steps)} in all"
        )

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    # ---- metrics ----

    def target_bytes(self, targets: torch.Tensor) -> int:
        """Bytes of text the scored targets (any shape) stand for: 0 where that is not defined."""
        return 0

    def metrics(self, loss_sum: float, correct: int, scored: int, scored_bytes: int = 0) -> dict:
        """Summary of a pass: mean loss (nats), accuracy; perplexity of subword tokens, and bits per byte where
        the targets stand for bytes of text."""
        if scored == 0:
            raise FbtError("the split has no scored positions")
        loss = loss_sum / scored
        result = {"loss": loss, "accuracy": correct / scored, "scored_tokens": scored}
        if self.tokenizer is not None:
            result["perplexity"] = math.exp(min(loss, 700.0))
        if scored_bytes:
            result["bits_per_byte"] = loss_sum / scored_bytes / math.log(2)
        return result

    # ---- a trained model ----

    def document_starts(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """Indices (D,) where the independent documents of the stream `inputs` (N,) begin, the first 0; None for
        running text. An evaluation's rows then start at documents, and a periodic validation's span several."""
        return None

    def document_tokens(self, inputs: torch.Tensor) -> int:
        """Mean length of the stream's documents, 0 where it has none."""
        starts = self.document_starts(inputs)
        return 0 if starts is None else inputs.numel() // starts.numel()

    @classmethod
    def floors(cls, data: str, split: str) -> dict[str, float]:
        """Accuracies of answering `split` without a model, by label: what a model must beat to show it learned
        the task (`fbt plot` draws them under the validation curve). None here."""
        return {}

    def decoded_scores(
        self, model: nn.Module, config: TrainConfig, data: str, split: str, settings: EvalSettings
    ) -> dict:
        """What `fbt eval` reports beside the teacher-forced pass, from the model's own outputs (none here)."""
        return {}

    def breakdown(self, model: nn.Module, config: TrainConfig, data: str, split: str, settings: EvalSettings) -> dict:
        """`fbt eval --breakdown`: the evaluation's accuracy on a split grouped by what each example asks of the
        model, as {"breakdown": [{"feature", "title", "buckets": [{"bucket", "accuracy", "examples"}]}]}
        (none here)."""
        raise FbtError(f"a {self.name} run has no breakdown of its answers by feature (--breakdown)")

    def generate(self, model: nn.Module, prompt: str, sampling: SamplingSettings) -> str:
        """`fbt generate`: the prompt followed by its sampled continuation (an empty prompt samples
        unconditionally, starting after a newline)."""
        device = next(model.parameters()).device
        context = self.encode(prompt) or self.encode(UNCONDITIONAL_START)
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
        settings = (sampling.max_new_tokens, sampling.temperature, sampling.top_k, sampling.top_p)
        new = generate(model, torch.tensor([context], device=device), *settings, generator)
        return prompt + self.decode(new[0].tolist())
