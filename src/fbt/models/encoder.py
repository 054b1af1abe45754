"""The translation encoder: a standard pre-norm Transformer encoder over the whole source at once.

Blocks are the GPT blocks (gpt.py) with a padding mask instead of a causal one; positions are learned and
absolute, up to `context`. Shapes: B batch, S source length, D width, H heads, E head width.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.models.gpt import GPTLayer
from fbt.models.layers import run_layer


class TransformerEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.pos_embed = nn.Embedding(config.context, config.dim)
        self.layers = nn.ModuleList(GPTLayer(config) for _ in range(config.encoder_layers))
        self.norm_out = nn.LayerNorm(config.dim)
        self.checkpoint_activations = False  # see layers.run_layer

    def forward(self, embedded: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Embedded source (B, S, D) and visible (B, S), False at padding -> encoder output (B, S, D)."""
        B, S, D = embedded.shape
        if S > self.config.context:
            raise FbtError(f"the source has {S} tokens; the encoder reads at most its context of {self.config.context}")
        x = embedded + self.pos_embed(torch.arange(S, device=embedded.device))
        mask = visible[:, None, None, :]  # (B, 1, 1, S): every query sees every real source token
        empty = x.new_zeros(B, self.config.heads, 0, self.config.head_width)
        for layer in self.layers:
            x, _, _ = run_layer(layer, self.checkpoint_activations, x, empty, empty, mask)
        return self.norm_out(x)
