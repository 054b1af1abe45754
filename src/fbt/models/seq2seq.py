"""Encoder-decoder for translation: a standard Transformer encoder and a feedback or standard decoder.

One BPE vocabulary for both languages, so source and target share one embedding table; the output head is
separate. The trainer's interface holds: `logits, state = model(batch, None)` with a `TranslationBatch`
(teacher forcing; state is always None, sentences are independent). Decoding uses `encode` once and then
`decode` one step at a time with the decoder state as cache; `reorder_state` serves beam search.

Shapes: B batch, S source length, T target length, D width, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.data.tokenizer import PAD_ID
from fbt.data.translation import TranslationBatch
from fbt.models.config import ModelConfig
from fbt.models.encoder import TransformerEncoder
from fbt.models.family import ModelFamily, attention_line
from fbt.models.feedback_decoder import FeedbackDecoder
from fbt.models.feedback_step import kv_line
from fbt.models.layers import init_position_keys, init_weights
from fbt.models.pretrained import PretrainedSeq2Seq
from fbt.models.transformer_decoder import TransformerDecoder


class Seq2Seq(ModelFamily, PretrainedSeq2Seq, nn.Module):
    # The decoding state of either decoder (feedback_decoder.py, transformer_decoder.py): batch first
    state_batch_dims = dict.fromkeys(("memory", "keys", "values", "cross_keys", "cross_values", "source_visible"), 0)
    options = (
        "heads",
        "head_dim",
        "ff",
        "span",
        "context",
        "shared_kv",
        "memory",
        "memory_layer",
        "decoder",
        "encoder_layers",
    )
    translates = True

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        plural = "s" if config.layers > 1 else ""
        shape = (
            f"{config.model}, {config.encoder_layers}-layer encoder, {config.decoder} decoder of "
            f"{config.layers} layer{plural}, d{config.dim}{attention_line(config)}"
        )
        return shape + (kv_line(config) if config.decoder == "feedback" else "")

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        """Per target token, with one source token encoded per target token and attention over the whole
        context (an upper bound, as GPT's count)."""
        D, A, F, L, C = config.dim, config.attention_dim, config.ff, config.layers, config.context
        encoder = config.encoder_layers * (8 * D * A + 4 * D * F + 4 * C * A)
        cross = L * (8 * D * A + 4 * C * A)  # q, out; K, V of one source token; scores, weighted values
        if config.decoder == "feedback":
            kv = 4 * D * A * (1 if config.shared_kv else L)
            decoder = L * (4 * D * A + 4 * D * F + 6 * config.span * A) + kv
        else:
            decoder = L * (8 * D * A + 4 * D * F + 4 * C * A)
        return encoder + cross + decoder + 2 * D * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return config.span if config.decoder == "feedback" else config.context

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.encoder = TransformerEncoder(config)
        self.decoder = FeedbackDecoder(config) if config.decoder == "feedback" else TransformerDecoder(config)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Output projections shrink with the depth of their own stack (layers.py).
        init_weights(self, config.layers, config.init)
        init_weights(self.encoder, config.encoder_layers, config.init)
        if config.decoder == "feedback":
            init_position_keys(self.decoder.pos_keys, config.init)

    def encode(self, source: torch.Tensor) -> dict:
        """Source ids (B, S), <pad> after each sentence's </s> -> the decoder's state before its first step."""
        visible = source != PAD_ID  # (B, S)
        encoded = self.encoder(self.embed(source), visible)  # (B, S, D)
        return self.decoder.start(encoded, visible)

    def decode(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Target ids (B, T) after those already in `state` -> logits (B, T, V) and the state after them."""
        hidden, state = self.decoder(self.embed(tokens), state)
        return self.head(hidden), state

    def forward(self, batch: TranslationBatch, state: None = None) -> tuple[torch.Tensor, None]:
        """Teacher forcing: logits (B, T, V) for every decoder input position of the batch."""
        logits, _ = self.decode(batch.target, self.encode(batch.source))
        return logits, None

    def reorder_state(self, state: dict, index: torch.Tensor) -> dict:
        """The state of the sentences (or beams) `index` (B',), in that order."""
        dims = self.state_batch_dims
        return {name: tensor.index_select(dims[name] % tensor.dim(), index) for name, tensor in state.items()}

    @torch.no_grad()
    def diagnostics(self, state: None) -> dict:
        if self.config.decoder == "feedback" and self.config.memory == "all":
            weights = torch.softmax(self.decoder.memory_weights, 0).tolist()
            return {"memory_weights": " ".join(f"{w:.4f}" for w in weights)}
        return {}
