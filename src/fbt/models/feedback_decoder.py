"""The feedback decoder for translation (Fan et al., arXiv 2002.09402, section 4.2): the Feedback Transformer
of feedback.py reading the source too.

At target step t every layer attends, in order, to the feedback memory of the previous target steps
m_{t-S} .. m_{t-1} (the same memory for all layers, as in the language model), to the encoder output
(cross-attention), then runs its feed-forward block; m_t mixes the embedding and every layer's output with
softmax(w). A new sentence starts with an empty memory. The recurrence makes the decoder run step by step in
training too; in decoding each step is one call with the state as cache.

Shapes: B batch, T target steps, n visible memories (n <= S, the span), S source length, D width, L layers,
H heads, E head width. State (batch first): "memory" (B, n, D); its "keys"/"values" (B, n, D) with shared K/V
or (B, L, n, D) per layer; "cross_keys"/"cross_values" (B, L, H, S, E); "source_visible" (B, 1, 1, S).
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.models.config import ModelConfig
from fbt.models.feedback import FeedbackLayer, FeedbackMemory
from fbt.models.layers import CrossAttention, run_layer, source_state


class FeedbackDecoderLayer(FeedbackLayer):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.cross = CrossAttention(config.dim, config.heads, config.dropout)

    def forward(self, x, keys, values, pos_keys, cross_keys, cross_values, source_visible):
        """One step: x (B, D); memory keys/values (B, H, n, E); pos_keys (E, n); cross (B, H, S, E)."""
        x = self.attend(x, keys, values, pos_keys)
        x = self.cross(x[:, None], cross_keys, cross_values, source_visible)[:, 0]
        return x + self.ff(self.norm_ff(x))


class FeedbackDecoder(FeedbackMemory, nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(FeedbackDecoderLayer(config) for _ in range(config.layers))
        self.add_memory_parameters(config)
        self.norm_out = nn.LayerNorm(config.dim)
        self.checkpoint_activations = False  # see layers.run_layer

    def start(self, encoded: torch.Tensor, source_visible: torch.Tensor) -> dict:
        """The state before the first target token: no memory yet, the encoder output's keys/values."""
        memory = encoded.new_zeros(encoded.shape[0], 0, self.config.dim)
        keys, values = self.batch_first(*self.project_memory(memory))
        return {"memory": memory, "keys": keys, "values": values, **source_state(self.layers, encoded, source_visible)}

    def batch_first(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """project_memory's per-layer (L, B, n, D) as (B, L, n, D); shared (B, n, D) as it is."""
        if self.config.shared_kv:
            return keys, values
        return keys.movedim(0, 1), values.movedim(0, 1)

    def forward(self, embedded: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Embedded target tokens (B, T, D) -> hidden states (B, T, D) and the state after them."""
        cfg = self.config
        H, E, S = cfg.heads, cfg.head_dim, cfg.span

        def heads(kv: torch.Tensor) -> torch.Tensor:  # (B, n, D) or (B, L, n, D) -> (..., B, H, n, E)
            kv = kv if cfg.shared_kv else kv.movedim(1, 0)
            return kv.unflatten(-1, (H, E)).transpose(-2, -3)

        window_k, window_v = heads(state["keys"]), heads(state["values"])
        memories, tops = [], []
        for t in range(embedded.shape[1]):
            n = window_k.shape[-2]
            pos = self.pos_keys[:, S - n :]  # (E, n)
            x = embedded[:, t]
            states = [x]
            for index, layer in enumerate(self.layers):
                layer_k = window_k if cfg.shared_kv else window_k[index]
                layer_v = window_v if cfg.shared_kv else window_v[index]
                x = run_layer(
                    layer, self.checkpoint_activations, x, layer_k, layer_v, pos, state["cross_keys"][:, index],
                    state["cross_values"][:, index], state["source_visible"],
                )  # fmt: skip
                states.append(x)
            memory = self.mix_memory(states)  # (B, D)
            window_k, window_v = self.push_memory(window_k, window_v, memory)
            memories.append(memory)
            tops.append(x)
        memory = torch.cat([state["memory"], torch.stack(memories, dim=1)], dim=1)[:, -S:]
        keys, values = (w.transpose(-2, -3).flatten(-2) for w in (window_k, window_v))  # (..., B, n, D)
        keys, values = self.batch_first(keys, values)
        return self.norm_out(torch.stack(tops, dim=1)), {**state, "memory": memory, "keys": keys, "values": values}
