"""GPT-2-style decoder with learned absolute positions and a fixed context window.

Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019); the layout follows
nanoGPT: pre-norm blocks, causal self-attention, a final LayerNorm and an output head (not tied here).

Shapes: B batch, T time (new tokens), D width, L layers, H heads, E head width (D / H unless set), C context,
n number of cached tokens (n <= C), V vocabulary.

State: a dict with the window's tokens "tokens" (B, n) and every layer's keys and values of them,
"keys" and "values" (L, B, H, n, E); the next position is n. The cached keys/values are reused as they
are, in training too (they are detached, as every carried state).

Past the context: a query sees at most C tokens including itself, at positions 0..C-1. A forward whose T new
tokens fit beside the n cached ones (n + T <= C) continues at positions n..n+T-1 and reads the cache. When
they do not fit, the last C - T cached tokens and the T new ones are re-encoded from scratch as one window at
positions 0..C-1 (the cached keys/values cannot be reused: their positions shift). Token by token this is
exactly nanoGPT's `generate`, which crops the input to the last C tokens; once the window is full every
decoded token costs a forward over C tokens. A forward over more than C new tokens raises FbtError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.models.family import ModelFamily, attention_line, layers_line
from fbt.models.layers import FeedForward, init_weights, run_layer
from fbt.models.pretrained import PretrainedLM


class GPTLayer(nn.Module):
    """Pre-norm block: causal self-attention over [cache; segment], then the feed-forward block."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        D, A = config.dim, config.attention_dim
        self.heads, self.head_width = config.heads, config.head_width
        self.attn_dropout = config.dropout  # a probability: SDPA applies it to the attention weights
        self.norm_attn = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * A, bias=False)  # queries, keys and values (H·E each) in one matmul
        self.out = nn.Linear(A, D, bias=False)
        self.norm_ff = nn.LayerNorm(D)
        self.ff = FeedForward(D, config.ff, config.dropout)

    def forward(
        self, x: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D); past keys/values (B, H, n, E); visible (T, n + T), True where a query may look.

        Returns the layer output (B, T, D) and the keys/values of [cache; segment], (B, H, n + T, E).
        """
        x, keys, values = self.attend(x, past_keys, past_values, visible)
        return x + self.ff(self.norm_ff(x)), keys, values

    def attend(
        self, x: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attention half of `forward` (visible may also be (B, 1, T, n + T) to mask padding per row)."""
        B, T, _ = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(B, T, 3, self.heads, self.head_width)
        q, k, v = qkv.transpose(1, 3).unbind(2)  # (B, H, T, E) each
        keys = torch.cat([past_keys, k], dim=2)  # (B, H, n + T, E)
        values = torch.cat([past_values, v], dim=2)
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, dropout_p=dropout)
        attended = y.transpose(1, 2).reshape(B, T, self.heads * self.head_width)  # (B, H, T, E) -> (B, T, H·E)
        x = x + self.out(attended)
        return x, keys, values


class GPT(ModelFamily, PretrainedLM, nn.Module):
    state_batch_dims = {"tokens": 0, "keys": 1, "values": 1}
    options = ("heads", "head_dim", "ff", "context")

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"{layers_line(config)}{attention_line(config)}, context {config.context}"

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        D, A, F, L = config.dim, config.attention_dim, config.ff, config.layers
        # q, k, v, out; scores and the weighted values over the context.
        return L * (8 * D * A + 4 * D * F + 4 * config.context * A) + 2 * D * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return config.context

    @classmethod
    def reach(cls, config: ModelConfig) -> int:
        return config.context

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        D = config.dim
        self.embed = nn.Embedding(config.vocab_size, D)
        self.pos_embed = nn.Embedding(config.context, D)
        self.layers = nn.ModuleList(GPTLayer(config) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        init_weights(self, config.layers, config.init)
        self.checkpoint_activations = False  # see layers.run_layer

    @property
    def max_forward_tokens(self) -> int:
        """Tokens one forward reads at most: longer inputs go in windows with the state carried."""
        return self.config.context

    def empty_state(self, batch: int, tokens: torch.Tensor) -> dict:
        cfg = self.config
        cache = self.embed.weight.new_zeros(cfg.layers, batch, cfg.heads, 0, cfg.head_width)
        return {"tokens": tokens.new_zeros(batch, 0), "keys": cache, "values": cache}

    def forward(self, tokens: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        B, T = tokens.shape
        C = self.config.context
        if T > C:
            raise FbtError(f"GPT reads at most its context of {C} tokens at once, got {T}")
        if state is None:
            state = self.empty_state(B, tokens)
        elif state["tokens"].shape[0] != B:
            raise ValueError(f"state batch {state['tokens'].shape[0]} differs from input batch {B}")
        n = state["tokens"].shape[1]
        if n + T > C:
            # The window is full: re-encode the last C - T cached and the T new tokens at positions 0..C-1.
            window = torch.cat([state["tokens"][:, n - (C - T) :], tokens], dim=1)  # (B, C)
            logits, state = self(window)
            return logits[:, -T:], state
        positions = torch.arange(n, n + T, device=tokens.device)
        x = self.embed(tokens) + self.pos_embed(positions)  # (B, T, D)
        # New token t sits at position n + t and sees cached and new tokens up to itself.
        visible = torch.ones(T, n + T, dtype=torch.bool, device=tokens.device).tril(diagonal=n)
        keys, values = [], []
        for index, layer in enumerate(self.layers):
            x, layer_k, layer_v = run_layer(
                layer, self.checkpoint_activations, x, state["keys"][index], state["values"][index], visible
            )
            keys.append(layer_k)
            values.append(layer_v)
        logits = self.head(self.norm_out(x))  # (B, T, V)
        state = {
            "tokens": torch.cat([state["tokens"], tokens], dim=1),  # (B, n + T)
            "keys": torch.stack(keys).detach(),  # (L, B, H, n + T, E)
            "values": torch.stack(values).detach(),
        }
        return logits, state
