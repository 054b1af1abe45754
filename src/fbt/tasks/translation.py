"""`translation`: sentence pairs for an encoder-decoder (the seq2seq model); perplexity per target token;
BLEU and chrF come from decoding (translate.py, scoring.py)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING

from torch import nn

from fbt.data.translation import TranslationStream, encode_pairs, load_split_pairs, read_corpus
from fbt.errors import FbtError
from fbt.tasks.base import EvalSettings, SamplingSettings, Task, model_mismatch, translates
from fbt.translate import score_translations

if TYPE_CHECKING:
    from fbt.data.translation import ParallelCorpus
    from fbt.models.config import ModelConfig
    from fbt.training.config import TrainConfig

EXAMPLE_SOURCE = "En el principio era el Verbo."  # the next-command hint's sentence to translate


def run_corpus(config: TrainConfig, data: str) -> ParallelCorpus:
    """The run's pairs: `data` read with the run's columns (or as sources beside --target-data)."""
    return read_corpus(data, config.source_column, config.target_column, config.target_data, config.group_column)


class TranslationTask(Task):
    needs_tokenizer = True
    valid_metric = "valid_perplexity"
    test_metric = "bleu"
    decodes = True
    even_split = False  # batches of sentences of similar length: shares over ranks differ by at most one
    takes_curriculum = False

    @classmethod
    def check_model(cls, model_config: ModelConfig, train_config: TrainConfig) -> None:
        if not translates(model_config.model):
            raise FbtError(model_mismatch(cls.name, model_config.model))
        if model_config.context < train_config.max_length + 1:
            raise FbtError(
                f"--context {model_config.context} must exceed --max-length {train_config.max_length}: "
                "a sentence and its </s> or <s> must fit the positions"
            )

    @classmethod
    def training_text(cls, config: TrainConfig) -> Iterator[str]:
        sources, targets = load_split_pairs(run_corpus(config, config.data), "train")
        yield from sources
        yield from targets

    @classmethod
    def tokens_per_step(cls, config: TrainConfig) -> int:
        return config.batch_tokens

    @classmethod
    def next_command(cls, run: str) -> str:
        return f"  echo {shlex.quote(EXAMPLE_SOURCE)} | fbt translate {run} --input - --beam 4"

    def streams(
        self,
        config: TrainConfig,
        data: str,
        splits: tuple[str, ...],
        batch: int | None = None,
        segment: int | None = None,
        whole_documents: bool = False,
    ) -> list:
        """A TranslationStream of batches of at most --batch-tokens padded tokens per split (batch and segment
        do not apply; every batch holds whole sentence pairs, so `whole_documents` changes nothing)."""
        corpus = run_corpus(config, data)
        streams = []
        for split in splits:
            sources, targets = encode_pairs(self.tokenizer, *load_split_pairs(corpus, split))
            streams.append(
                TranslationStream(
                    sources, targets, config.batch_tokens, config.max_length, config.seed, shuffle=split == "train"
                )
            )
        return streams

    def batching(self, config: TrainConfig, train: TranslationStream) -> str:
        return (
            f"batches of at most {config.batch_tokens:,} padded tokens, {train.segments_per_pass():,} per pass over "
            f"{train.pairs:,} pairs ({train.dropped:,} with a side over {config.max_length} tokens left out)"
        )

    def decoded_scores(
        self, model: nn.Module, config: TrainConfig, data: str, split: str, settings: EvalSettings
    ) -> dict:
        """BLEU and chrF of translating every pair of `split`."""
        return score_translations(
            model,
            self.tokenizer,
            run_corpus(config, data),
            split,
            settings.beam,
            settings.length_penalty,
            settings.progress,
            settings.outputs,
        )

    def generate(self, model: nn.Module, prompt: str, sampling: SamplingSettings) -> str:
        raise FbtError("a translation run translates: use `fbt translate RUN --input FILE`")
