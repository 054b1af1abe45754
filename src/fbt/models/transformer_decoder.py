"""The standard Transformer decoder for translation: causal self-attention, cross-attention, feed-forward.

Pre-norm blocks (the GPT block of gpt.py with a cross-attention between its two halves) and learned absolute
positions up to `context`. Training reads the whole target at once; decoding passes one token at a time with
the state as cache.

Shapes: B batch, T new target tokens, n cached target tokens, S source length, D width, L layers, H heads,
E head width. State (batch first, so beam search reorders it with one index): "keys"/"values" (B, L, H, n, E)
of the target so far, "cross_keys"/"cross_values" (B, L, H, S, E) of the encoder output, "source_visible"
(B, 1, 1, S).
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.models.gpt import GPTLayer
from fbt.models.layers import CrossAttention, run_layer, source_state


class TransformerDecoderLayer(GPTLayer):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.cross = CrossAttention(config.dim, config.heads, config.head_width, config.dropout)

    def forward(self, x, past_keys, past_values, visible, cross_keys, cross_values, source_visible):
        """x (B, T, D); past (B, H, n, E); visible (T, n + T); cross (B, H, S, E); source_visible (B, 1, 1, S)."""
        x, keys, values = self.attend(x, past_keys, past_values, visible)
        x = self.cross(x, cross_keys, cross_values, source_visible)
        return x + self.ff(self.norm_ff(x)), keys, values


class TransformerDecoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.pos_embed = nn.Embedding(config.context, config.dim)
        self.layers = nn.ModuleList(TransformerDecoderLayer(config) for _ in range(config.layers))
        self.checkpoint_activations = False  # see layers.run_layer
        self.norm_out = nn.LayerNorm(config.dim)

    def start(self, encoded: torch.Tensor, source_visible: torch.Tensor) -> dict:
        """The state before the first target token: the encoder output's keys/values, an empty cache."""
        cfg = self.config
        empty = encoded.new_zeros(encoded.shape[0], cfg.layers, cfg.heads, 0, cfg.head_width)
        return {"keys": empty, "values": empty, **source_state(self.layers, encoded, source_visible)}

    def forward(self, embedded: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Embedded target tokens (B, T, D) after the n in the cache -> hidden states (B, T, D), new state."""
        B, T, _ = embedded.shape
        n = state["keys"].shape[3]
        if n + T > self.config.context:
            raise FbtError(f"the decoder reads at most its context of {self.config.context} target tokens")
        x = embedded + self.pos_embed(torch.arange(n, n + T, device=embedded.device))
        visible = torch.ones(T, n + T, dtype=torch.bool, device=embedded.device).tril(diagonal=n)
        keys, values = [], []
        for index, layer in enumerate(self.layers):
            x, layer_k, layer_v = run_layer(
                layer,
                self.checkpoint_activations,
                x,
                state["keys"][:, index],
                state["values"][:, index],
                visible,
                state["cross_keys"][:, index],
                state["cross_values"][:, index],
                state["source_visible"],
            )
            keys.append(layer_k)
            values.append(layer_v)
        new_state = {**state, "keys": torch.stack(keys, dim=1), "values": torch.stack(values, dim=1)}
        return self.norm_out(x), new_state
