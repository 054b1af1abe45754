"""Transformer with a Transformer-XL cache: the baseline of the Feedback Transformer paper.

Dai et al., "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context" (arXiv 1901.02860),
as used by Fan et al., "Addressing Some Limitations of Transformers with Feedback Memory" (arXiv 2002.09402).

Layer l attends to its own layer's inputs x^l: those of the previous S tokens (carried, detached, from earlier
segments) and those of the causal current segment, all in parallel. As in the paper's baseline (the authors'
attention "doesn't include the current position"), a query at position t sees keys at distances 1..S, the S
previous tokens only; the first token of a stream sees nothing and its attention output is zero (the authors'
code attends to a zero-filled cache there instead). `attend_self=True` gives Transformer-XL proper, distances
0..S. Either way the output is the same however a stream is cut into segments. Positions are relative, as in
the feedback model: learned key embeddings p of shape (E, S + 1) shared by all layers (column S - d for
distance d), score_tj = (q_t . k_j + q_t . p_{t-j}) / sqrt(E); there are no absolute positions.

Shapes: B batch, T time (segment), D width, L layers, H heads, E head width (D / H unless set), A = H·E, S span,
n number of carried positions (n <= S), K = n + T keys per query row, V vocabulary.

State: a dict with, for the last n <= S tokens of the stream, every layer's raw input "hidden" (L, B, n, D)
and the keys and values computed from it, "keys" and "values" (L, B, H, n, E) (with adaptive spans, only for
the last of them within the heads' reach). As in Transformer-XL the
hidden states are what is carried: a training forward recomputes keys/values from them with the current
weights (the weights moved since they were cached); an evaluation forward reuses the cached keys/values,
so decoding a token costs one row of projections per layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fbt.models import adaptive_span
from fbt.models.config import ModelConfig
from fbt.models.family import ModelFamily, attention_line, layers_line
from fbt.models.layers import FeedForward, init_position_keys, init_weights, run_layer
from fbt.models.pretrained import PretrainedLM


class XLLayer(nn.Module):
    """Pre-norm block attending to [cached inputs of this layer; causal current segment]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        D, A = config.dim, config.attention_dim
        self.heads, self.head_width = config.heads, config.head_width
        self.norm_attn = nn.LayerNorm(D)
        self.query = nn.Linear(D, A, bias=False)
        self.key = nn.Linear(D, A, bias=False)
        self.value = nn.Linear(D, A, bias=False)
        self.out = nn.Linear(A, D, bias=False)
        self.norm_ff = nn.LayerNorm(D)
        self.ff = FeedForward(D, config.ff, config.dropout)
        self.attn_dropout = nn.Dropout(config.dropout)
        if config.adaptive_span:
            self.adaptive_span = adaptive_span.AdaptiveSpan(
                config.heads, config.span, config.adaptive_span_ramp, config.adaptive_span_init
            )

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_width).transpose(1, 2)  # (B, T, A) -> (B, H, T, E)

    def project(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, n, E) of layer inputs (B, n, D)."""
        normed = self.norm_attn(hidden)
        return self.split_heads(self.key(normed)), self.split_heads(self.value(normed))

    def forward(
        self,
        x: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        pos_keys: torch.Tensor,
        rel_index: torch.Tensor,
        masked: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D); past keys/values (B, H, n, E); rel_index, masked (T, K) from `attention_layout`, whose
        pos_keys (E, S' + 1) hold distances S'..0.

        Returns the layer output (B, T, D) and the keys/values of [cache; segment], (B, H, K, E).
        """
        B, T, _ = x.shape
        normed = self.norm_attn(x)
        q = self.split_heads(self.query(normed))  # (B, H, T, E)
        keys = torch.cat([past_keys, self.split_heads(self.key(normed))], dim=2)  # (B, H, K, E)
        values = torch.cat([past_values, self.split_heads(self.value(normed))], dim=2)
        content = q @ keys.transpose(2, 3)  # (B, H, T, K)
        # q . p for every distance 0..S, then each (query, key) pair picks the column of its distance.
        position = (q @ pos_keys).gather(-1, rel_index.expand(B, self.heads, -1, -1))  # (B, H, T, K)
        scores = (content + position) / math.sqrt(q.shape[-1])
        # A row with no visible key (the first token of a stream, without attend_self) attends to nothing.
        empty = masked.all(-1, keepdim=True)  # (T, 1)
        scores = scores.masked_fill(masked, float("-inf")).masked_fill(empty, 0.0)
        probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
        if hasattr(self, "adaptive_span"):  # distance S' - rel_index; masked pairs are 0 already
            distances = pos_keys.shape[-1] - 1 - rel_index  # (T, K)
            probs = adaptive_span.renormalise(probs, self.adaptive_span.mask(distances))  # mask (H, T, K)
        probs = self.attn_dropout(probs)
        attended = (probs @ values).transpose(1, 2).reshape(B, T, self.heads * self.head_width)  # (B, T, A)
        x = x + self.out(attended)
        return x + self.ff(self.norm_ff(x)), keys, values


def attention_layout(
    n: int, T: int, S: int, attend_self: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """For T queries over K = n + T keys: the pos_keys column of each pair and which pairs are masked.

    Query t sits at position n + t of [cache; segment]; key j is at distance d = n + t - j, visible when
    1 <= d <= S (0 <= d with attend_self). Column S - d of pos_keys holds distance d (the feedback model's
    convention).
    """
    queries = n + torch.arange(T, device=device)
    distance = queries[:, None] - torch.arange(n + T, device=device)[None, :]  # (T, K)
    masked = (distance < (0 if attend_self else 1)) | (distance > S)
    return (S - distance).clamp(0, S), masked


class TransformerXL(ModelFamily, PretrainedLM, adaptive_span.AdaptiveSpanHost, nn.Module):
    state_batch_dims = {"hidden": 1, "keys": 1, "values": 1}
    options = ("heads", "head_dim", "ff", "span", "attend_self", *adaptive_span.OPTIONS)

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"{layers_line(config)}{attention_line(config)}, {adaptive_span.span_words(config)}"

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        D, A, F, L = config.dim, config.attention_dim, config.ff, config.layers
        # q, k, v, out; scores, position scores and the weighted values over S + 1 positions.
        attention = 6 * (config.span + 1) * A
        return L * (8 * D * A + 4 * D * F + attention) + 2 * D * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return config.span

    @classmethod
    def reach(cls, config: ModelConfig) -> int:
        return config.span * config.layers  # layer l reads layer l - 1's inputs of S tokens back

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        D, E, S = config.dim, config.head_width, config.span
        self.embed = nn.Embedding(config.vocab_size, D)
        self.layers = nn.ModuleList(XLLayer(config) for _ in range(config.layers))
        # S + 1 columns, distances 0..S (distance 0 only used with attend_self).
        self.pos_keys = nn.Parameter(torch.zeros(E, S + 1))
        self.norm_out = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        init_weights(self, config.layers, config.init)
        init_position_keys(self.pos_keys, config.init)
        self.checkpoint_activations = False  # see layers.run_layer

    @torch.no_grad()
    def diagnostics(self, state: dict | None) -> dict:
        """The learned spans, with adaptive spans (for the training log)."""
        return adaptive_span.span_report(self, self.config.adaptive_span_loss)

    def start_state(self, state: dict | None, batch: int, like: torch.Tensor, reach: int) -> dict:
        """The carried state with keys/values valid for the current weights, for the last `reach` positions (all
        of them without adaptive spans): those a query can read."""
        cfg = self.config
        if state is None:
            hidden = like.new_zeros(cfg.layers, batch, 0, cfg.dim)
        else:
            hidden = state["hidden"]
            if hidden.shape[1] != batch:
                raise ValueError(f"state batch {hidden.shape[1]} differs from input batch {batch}")
            if not self.training and state["keys"].shape[3] >= min(hidden.shape[2], reach):
                return state
        read = hidden[:, :, hidden.shape[2] - min(hidden.shape[2], reach) :]
        projected = [layer.project(h) for layer, h in zip(self.layers, read, strict=True)]
        keys = torch.stack([k for k, _ in projected])  # (L, B, H, n, E)
        values = torch.stack([v for _, v in projected])
        return {"hidden": hidden, "keys": keys, "values": values}

    def forward(self, tokens: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        B, T = tokens.shape
        S = self.config.span
        x = self.embed(tokens)  # (B, T, D)
        # With adaptive spans, attention reads only the distances within the heads' reach (their masks are 0
        # beyond it), as if the span were that long; the carried state keeps the inputs of S positions and the
        # keys/values of those in reach.
        reach = adaptive_span.reach(self, S)
        start = self.start_state(state, B, x, reach)
        n, cached = start["hidden"].shape[2], start["keys"].shape[3]
        read = min(n, reach)  # cached positions read: the last of the `cached` keys
        # One layout for all layers: every layer sees the same positions.
        rel_index, masked = attention_layout(read, T, reach, self.config.attend_self, tokens.device)
        pos_keys = self.pos_keys[:, S - reach :]  # distances reach..0
        hidden, keys, values = [], [], []
        for index, layer in enumerate(self.layers):
            # Keep the last S inputs of this layer (cache first, then the segment) for the next forward.
            hidden.append(torch.cat([start["hidden"][index], x], dim=1)[:, -S:])
            past_k, past_v = (kv[index][:, :, cached - read :] for kv in (start["keys"], start["values"]))
            x, layer_k, layer_v = run_layer(
                layer, self.checkpoint_activations, x, past_k, past_v, pos_keys, rel_index, masked
            )
            keys.append(layer_k[:, :, -reach:])  # [read cached; segment]: its last `reach` are the next read
            values.append(layer_v[:, :, -reach:])
        logits = self.head(self.norm_out(x))  # (B, T, V)
        state = {
            "hidden": torch.stack(hidden).detach(),  # (L, B, n', D), n' = min(S, n + T)
            "keys": torch.stack(keys).detach(),  # (L, B, H, n'', E), n'' = min(reach, n + T)
            "values": torch.stack(values).detach(),
        }
        return logits, state
