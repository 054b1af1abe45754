"""Model families behind one interface: `logits, state = model(tokens, state=None)`.

`tokens` is (B, T) int64, `logits` (B, T, V). `state` is whatever the model carries between segments
(None starts a fresh stream); models return it detached, so it serves truncated backpropagation through
time in training and is the cache for incremental decoding.

The translation model `seq2seq` (models/seq2seq.py) is the exception: it reads a `TranslationBatch` of
padded sources and targets, `logits, _ = model(batch)`, and decodes with `encode` then `decode`.

A family is one module plus one line in registry.py, or a `register_family(name, cls)` call from outside;
what it declares to the rest of fbt is listed in family.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fbt.models.config import MEMORY_SOURCES, ModelConfig
from fbt.models.family import COMMON_OPTIONS, ModelFamily
from fbt.models.registry import family_names, model_class, register_family

if TYPE_CHECKING:
    import torch
    from torch import nn


def build_model(config: ModelConfig) -> nn.Module:
    return model_class(config.model)(config)


def state_nbytes(state: dict[str, torch.Tensor] | None) -> int:
    """Bytes held by the tensors of a carried state (None: a fresh stream holds nothing)."""
    return 0 if state is None else sum(t.numel() * t.element_size() for t in state.values())


def __getattr__(name: str):
    # Loading pretrained models needs torch; configs and the registry (all `fbt --help` reads) do not.
    if name in ("PretrainedModel", "from_pretrained"):
        from fbt.models import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'fbt.models' has no attribute {name!r}")


__all__ = [
    "COMMON_OPTIONS",
    "MEMORY_SOURCES",
    "ModelConfig",
    "ModelFamily",
    "PretrainedModel",
    "build_model",
    "family_names",
    "from_pretrained",
    "model_class",
    "register_family",
    "state_nbytes",
]
