"""One configuration dataclass for every model family, validated, stored as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fbt.configs import config_from_dict
from fbt.errors import FbtError
from fbt.models.registry import family_names, model_class

DECODERS = ("feedback", "transformer")  # seq2seq decoders
MEMORY_SOURCES = ("all", "top", "layer")
INITS = ("paper", "gpt2")  # see layers.py
KV_CHOICES = ("shared", "per-layer")  # the values of --kv, which sets `shared_kv`


@dataclass
class ModelConfig:
    model: str = "feedback"  # a registered model family (registry.py)
    vocab_size: int = 256  # number of token ids; bytes use 256
    dim: int = 256  # residual width D
    layers: int = 4  # number of blocks L
    heads: int = 4  # attention heads H
    head_dim: int = 0  # width E of a head's queries, keys and values; 0: dim / heads (dim divisible by heads)
    ff: int = 1024  # hidden width of the feed-forward block
    span: int = 100  # feedback / transformer-xl: how many past positions a step may attend to
    context: int = 256  # gpt: fixed context window (absolute positions)
    dropout: float = 0.0  # on attention probabilities and the feed-forward hidden layer
    shared_kv: bool = True  # feedback: one K/V projection of the memory for all layers (else one per layer)
    memory: str = "all"  # feedback: memory from "all" layers (learned softmax mix), the "top" layer, or one "layer"
    memory_layer: int = 0  # feedback with memory="layer": 0 is the embedding, L the top output
    init: str = "paper"  # "paper": the authors' (PyTorch defaults, position keys N(0, 1)); "gpt2": N(0, 0.02)
    attend_self: bool = False  # transformer-xl: a query also sees its own position (distance 0), as in
    # Transformer-XL proper; False is the paper's baseline, which sees the previous `span` positions only
    # feedback, transformer-xl: every head learns its span (models/adaptive_span.py): a mask over distances with
    # a linear ramp, starting at init x span, and coefficient x the mean span in tokens added to the loss
    adaptive_span: bool = False
    adaptive_span_ramp: int = 32
    adaptive_span_init: float = 0.0
    adaptive_span_loss: float = 0.0
    decoder: str = "feedback"  # seq2seq: a "feedback" decoder (span, memory, shared_kv apply) or a "transformer" one
    encoder_layers: int = 2  # seq2seq: blocks of the (standard Transformer) encoder; `layers` is the decoder's

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.model not in family_names():
            raise FbtError(f"unknown model {self.model!r}; choose one of {', '.join(family_names())}")
        for name in ("vocab_size", "dim", "layers", "heads", "ff", "span", "context", "encoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FbtError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.head_dim, int) or isinstance(self.head_dim, bool) or self.head_dim < 0:
            raise FbtError(f"head_dim must be a positive integer, or 0 for dim / heads, got {self.head_dim!r}")
        if not self.head_dim and self.dim % self.heads:
            raise FbtError(f"dim {self.dim} is not divisible by heads {self.heads}; give the head width (head_dim)")
        if not 0.0 <= self.dropout < 1.0:
            raise FbtError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.decoder not in DECODERS:
            raise FbtError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if self.memory not in MEMORY_SOURCES:
            raise FbtError(f"unknown memory source {self.memory!r}; choose one of {', '.join(MEMORY_SOURCES)}")
        if self.init not in INITS:
            raise FbtError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if not isinstance(self.adaptive_span_ramp, int) or self.adaptive_span_ramp < 1:
            raise FbtError(f"adaptive_span_ramp must be a positive integer, got {self.adaptive_span_ramp!r}")
        if not 0.0 <= self.adaptive_span_init <= 1.0:
            raise FbtError(f"adaptive_span_init is a ratio of the span in [0, 1], got {self.adaptive_span_init}")
        if not (self.adaptive_span_loss >= 0.0 and math.isfinite(self.adaptive_span_loss)):
            raise FbtError(f"adaptive_span_loss must be >= 0, got {self.adaptive_span_loss}")
        if self.adaptive_span and "adaptive_span" not in model_class(self.model).options:
            raise FbtError(f"{self.model} has no adaptive span (--adaptive-span)")
        if not 0 <= self.memory_layer <= self.layers:
            raise FbtError(f"memory_layer must be in 0..{self.layers}, got {self.memory_layer}")

    @property
    def head_width(self) -> int:
        """E: head_dim, or dim / heads when it is 0."""
        return self.head_dim or self.dim // self.heads

    @property
    def attention_dim(self) -> int:
        """H·E, the width of queries, keys and values (all heads); the output projection maps it back to dim."""
        return self.heads * self.head_width

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return config_from_dict(cls, data, "model")


def kv_choice(shared_kv: bool) -> str:
    """The --kv value of `shared_kv`."""
    return KV_CHOICES[0] if shared_kv else KV_CHOICES[1]


def shared_kv_of(choice: str) -> bool:
    """`shared_kv` of a --kv value."""
    if choice not in KV_CHOICES:
        raise FbtError(f"unknown K/V choice {choice!r}; choose one of {', '.join(KV_CHOICES)}")
    return choice == KV_CHOICES[0]
