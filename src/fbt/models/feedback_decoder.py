"""The feedback decoder for translation (Fan et al., arXiv 2002.09402, section 4.2): the Feedback Transformer
step (feedback_step.py) reading the source too.

At target step t every layer attends, in order, to the feedback memory of the previous target steps
m_{t-S} .. m_{t-1} (the same memory for all layers, as in the language model), to the encoder output
(cross-attention), then runs its feed-forward block; m_t mixes the embedding and every layer's output with
softmax(w). A new sentence starts with an empty memory. The recurrence makes the decoder run step by step in
training too; in decoding each step is one call with the state as cache.

Shapes: B batch, T target steps, n visible memories (n <= S, the span), S source length, D width, L layers,
H heads, E head width. State (batch first, so that beam search reorders it with one index): "memory"
(B, n, D); its "keys"/"values" (B, n, D) with shared K/V or (B, L, n, D) per layer; "cross_keys"/"cross_values"
(B, L, H, S, E); "source_visible" (B, 1, 1, S).
"""

from __future__ import annotations

import torch

from fbt.models.config import ModelConfig
from fbt.models.feedback_step import FeedbackLayer, FeedbackStack
from fbt.models.layers import CrossAttention, source_state


class FeedbackDecoderLayer(FeedbackLayer):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.cross = CrossAttention(config.dim, config.heads, config.head_width, config.dropout)

    def forward(self, x, keys, values, pos_keys, visible, cross_keys, cross_values, source_visible):
        """One step: x (B, D); memory keys/values (B, H, n, E); pos_keys (E, n); visible None (every memory);
        cross (B, H, S, E); source_visible (B, 1, 1, S)."""
        x = self.attend(x, keys, values, pos_keys, visible)
        x = self.cross(x[:, None], cross_keys, cross_values, source_visible)[:, 0]
        return x + self.ff(self.norm_ff(x))


class FeedbackDecoder(FeedbackStack):
    def __init__(self, config: ModelConfig):
        super().__init__(config, FeedbackDecoderLayer)

    def start(self, encoded: torch.Tensor, source_visible: torch.Tensor) -> dict:
        """The state before the first target token: no memory yet, the encoder output's keys/values."""
        memory = encoded.new_zeros(encoded.shape[0], 0, self.config.dim)
        keys, values = self.project_memory(memory)
        return {
            "memory": memory,
            "keys": self.batch_first(keys),
            "values": self.batch_first(values),
            **source_state(self.layers, encoded, source_visible),
        }

    def batch_first(self, kv: torch.Tensor) -> torch.Tensor:
        """Per-layer keys or values (L, B, n, D) as (B, L, n, D); shared ones (B, n, D) as they are."""
        return kv if self.config.shared_kv else kv.movedim(0, 1)

    def layer_first(self, kv: torch.Tensor) -> torch.Tensor:
        """The inverse of `batch_first`."""
        return kv if self.config.shared_kv else kv.movedim(1, 0)

    def forward(self, embedded: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Embedded target tokens (B, T, D) -> hidden states (B, T, D) and the state after them."""
        window = self.open_window(state["memory"], self.layer_first(state["keys"]), self.layer_first(state["values"]))

        def source(index: int) -> tuple:  # what layer `index` reads of the source
            return state["cross_keys"][:, index], state["cross_values"][:, index], state["source_visible"]

        tops = []
        for t in range(embedded.shape[1]):
            x, window = self.step(embedded[:, t], window, t, source)
            tops.append(x)
        keys, values = (self.batch_first(self.merge_heads(kv)) for kv in (window.keys, window.values))
        new_state = {**state, "memory": window.memory, "keys": keys, "values": values}
        return self.norm_out(torch.stack(tops, dim=1)), new_state
