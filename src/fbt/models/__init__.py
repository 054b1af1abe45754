"""Model families behind one interface: `logits, state = model(tokens, state=None)`.

`tokens` is (B, T) int64, `logits` (B, T, V). `state` is whatever the model carries between segments
(None starts a fresh stream); models return it detached, so it serves truncated backpropagation through
time in training and is the cache for incremental decoding.

The translation model `seq2seq` (models/seq2seq.py) is the exception: it reads a `TranslationBatch` of
padded sources and targets, `logits, _ = model(batch)`, and decodes with `encode` then `decode`.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.models.config import MEMORY_SOURCES, MODEL_NAMES, ModelConfig
from fbt.models.pretrained import PretrainedModel, from_pretrained


def model_class(name: str) -> type[PretrainedModel]:
    """The class of model family `name` (one of MODEL_NAMES)."""
    from fbt.models.feedback import FeedbackTransformer
    from fbt.models.gpt import GPT
    from fbt.models.lstm import LSTMLanguageModel
    from fbt.models.seq2seq import Seq2Seq
    from fbt.models.transformer_xl import TransformerXL

    families = {
        "feedback": FeedbackTransformer,
        "transformer-xl": TransformerXL,
        "gpt": GPT,
        "lstm": LSTMLanguageModel,
        "seq2seq": Seq2Seq,
    }
    return families[name]


def build_model(config: ModelConfig) -> nn.Module:
    return model_class(config.model)(config)


def state_nbytes(state: dict[str, torch.Tensor] | None) -> int:
    """Bytes held by the tensors of a carried state (None: a fresh stream holds nothing)."""
    return 0 if state is None else sum(t.numel() * t.element_size() for t in state.values())


__all__ = [
    "MEMORY_SOURCES",
    "MODEL_NAMES",
    "ModelConfig",
    "PretrainedModel",
    "build_model",
    "from_pretrained",
    "model_class",
    "state_nbytes",
]
