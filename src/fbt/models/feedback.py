"""Feedback Transformer (Fan, Lavril, Grave, Joulin, Sukhbaatar, arXiv 2002.09402).

Every layer at step t attends to one shared stream of memories m_{t-S} .. m_{t-1}, where
m_t = sum_l softmax(w)_l x_t^l mixes the embedding (l = 0) and every layer's output (l = 1..L).
The current step is never a key: its memory exists only once all layers have run, so the model runs
token by token inside a segment. As in the authors' pre-norm code, the memory is layer-normalised before its
key/value projections (see `kv_projections`): without it memory -> value -> residual -> memory is a loop with
no normalisation, and training diverges. Relative positions are learned key embeddings shared by all layers:
score_j = (q . k_j + q . p_{t-j}) / sqrt(head_dim).

Shapes: B batch, T time (segment), D width, L layers, H heads, E head width (D / H), S span,
n number of visible memories (n <= S), V vocabulary.

State: a dict with the stream's last n <= S memories, "memory" (B, n, D), and their "keys" and "values",
(B, n, D) with shared K/V or (L, B, n, D) with per-layer K/V. Keys/values were computed with the weights of
the forward that produced them: a training forward recomputes them from the memory, because the weights
have moved since; an evaluation forward reuses them, which makes decoding cheap.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fbt.models.config import ModelConfig
from fbt.models.feedback_segment import fast_forward
from fbt.models.layers import BernoulliDropout, FeedForward, init_position_keys, init_weights
from fbt.models.pretrained import PretrainedLM


class FeedbackLayer(nn.Module):
    """Pre-norm block whose attention reads the shared memory instead of its own layer's states."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        D = config.dim
        self.heads = config.heads
        self.norm_attn = nn.LayerNorm(D)
        self.query = nn.Linear(D, D, bias=False)
        self.out = nn.Linear(D, D, bias=False)
        self.norm_ff = nn.LayerNorm(D)
        # Dropout as the fast segment draws it (BernoulliDropout), so both paths apply one mask on any device.
        self.ff = FeedForward(D, config.ff, config.dropout, BernoulliDropout)
        self.attn_dropout = BernoulliDropout(config.dropout)
        if not config.shared_kv:
            # The released enwik8 run projects the shared memory separately for each layer.
            self.key = nn.Linear(D, D, bias=False)
            self.value = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos_keys: torch.Tensor,
                visible: torch.Tensor | None = None):  # fmt: skip
        """One step: x (B, D); keys, values (B, H, n, E) of the memories; pos_keys (E, n); visible (B, n)
        marks the memories each row may read (None: all), e.g. not those of an earlier RL episode."""
        x = self.attend(x, keys, values, pos_keys, visible)
        return x + self.ff(self.norm_ff(x))

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos_keys: torch.Tensor,
               visible: torch.Tensor | None = None):  # fmt: skip
        """The attention half of `forward`: x (B, D) plus its read of the memory."""
        B, D = x.shape
        if keys.shape[2] > 0:  # with no memory yet the attention output is zero
            q = self.query(self.norm_attn(x)).view(B, self.heads, 1, D // self.heads)  # (B, H, 1, E)
            scores = (q @ keys.transpose(2, 3) + q @ pos_keys) / math.sqrt(q.shape[-1])  # (B, H, 1, n)
            if visible is None:
                probs = torch.softmax(scores, dim=-1)
            else:
                # A row that sees no memory reads nothing (zero), as at the start of a stream.
                hidden, empty = ~visible[:, None, None, :], ~visible.any(-1)[:, None, None, None]
                scores = scores.masked_fill(hidden, float("-inf")).masked_fill(empty, 0.0)
                probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
            x = x + self.out((self.attn_dropout(probs) @ values).reshape(B, D))
        return x


class FeedbackMemory:
    """The memory's pieces shared by the language model and the translation decoder (feedback_decoder.py):
    its K/V projections and the mix of layer states. Needs `config`, `layers` and the parameters named here."""

    def add_memory_parameters(self, config: ModelConfig) -> None:
        """The shared K/V projection (unless per layer), the position keys and the layer-mix weights."""
        D, E, S = config.dim, config.head_dim, config.span
        if config.shared_kv:
            self.norm_memory = nn.LayerNorm(D)
            self.key = nn.Linear(D, D, bias=False)
            self.value = nn.Linear(D, D, bias=False)
        # Column i is the key of relative distance S - i, so the n most recent memories use the last n columns.
        self.pos_keys = nn.Parameter(torch.zeros(E, S))
        if config.memory == "all":
            # One scalar per layer including the embedding; zeros make the initial mix uniform.
            self.memory_weights = nn.Parameter(torch.zeros(config.layers + 1))

    def kv_projections(self) -> list[tuple[nn.LayerNorm, nn.Linear, nn.Linear]]:
        """(norm, key, value) of each K/V projection: one shared, or one per layer.

        The memory is layer-normalised before its projection, as in the authors' pre-norm code: without it
        memory -> value -> residual -> memory is a loop with no normalisation, and training diverges. Per-layer
        K/V use layer l's attention norm (the one its query passes through); shared K/V use one norm of their
        own (the authors tie every layer's attention norm to layer 0's in that case; we keep queries' norms
        per layer)."""
        if self.config.shared_kv:
            return [(self.norm_memory, self.key, self.value)]
        return [(layer.norm_attn, layer.key, layer.value) for layer in self.layers]

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of memories (B, n, D): (B, n, D) shared, or (L, B, n, D) per layer."""
        projected = [(key(norm(memory)), value(norm(memory))) for norm, key, value in self.kv_projections()]
        if self.config.shared_kv:
            return projected[0]
        return torch.stack([k for k, _ in projected]), torch.stack([v for _, v in projected])

    def mix_memory(self, states: list[torch.Tensor]) -> torch.Tensor:
        """m_t from the L + 1 states [x^0 .. x^L] of one step, each (B, D)."""
        source = self.config.memory
        if source == "top":
            return states[-1]
        if source == "layer":
            return states[self.config.memory_layer]
        weights = torch.softmax(self.memory_weights, dim=0)  # (L + 1,)
        return torch.einsum("l,lbd->bd", weights, torch.stack(states))

    def push_memory(
        self, window_k: torch.Tensor, window_v: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append m_t (B, D) to the per-head K/V windows (..., B, H, n, E), dropping the oldest once S are held."""
        H, E = self.config.heads, self.config.head_dim
        k, v = self.project_memory(memory.unsqueeze(1))  # (..., B, 1, D)
        keep = max(0, window_k.shape[-2] - self.config.span + 1)
        window_k = torch.cat([window_k[..., keep:, :], k.unflatten(-1, (H, E)).transpose(-2, -3)], dim=-2)
        window_v = torch.cat([window_v[..., keep:, :], v.unflatten(-1, (H, E)).transpose(-2, -3)], dim=-2)
        return window_k, window_v


class FeedbackTransformer(FeedbackMemory, PretrainedLM, nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        D = config.dim
        self.embed = nn.Embedding(config.vocab_size, D)
        self.layers = nn.ModuleList(FeedbackLayer(config) for _ in range(config.layers))
        self.add_memory_parameters(config)
        self.norm_out = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.vocab_size, bias=False)
        init_weights(self, config.layers, config.init)
        init_position_keys(self.pos_keys, config.init)
        # True: the segment's recurrence runs as one autograd node with a hand-written backward
        # (feedback_segment.py). False: the plain autograd loop of `forward` below, the reference it is tested
        # against. Same logits, state and gradients up to float rounding.
        self.fast = True
        self.checkpoint_activations = False  # fast path only: recompute groups of steps in backward
        # Reference path only: called as probe(t, m_t) -> m_t for each new memory (fbt analyze memory).
        self.memory_probe = None

    def start_state(self, state: dict | None, batch: int, like: torch.Tensor) -> dict:
        """The carried state with keys/values valid for the current weights."""
        if state is None:
            memory = like.new_zeros(batch, 0, self.config.dim)
        else:
            memory = state["memory"]
            if memory.shape[0] != batch:
                raise ValueError(f"state batch {memory.shape[0]} differs from input batch {batch}")
            if not self.training:
                return state
        keys, values = self.project_memory(memory)
        return {"memory": memory, "keys": keys, "values": values}

    @torch.no_grad()
    def diagnostics(self, state: dict | None) -> dict:
        """What a training log shows to see a run drift: the carried memory's RMS and the layer mix."""
        out: dict = {}
        if state is not None and state["memory"].numel():
            out["memory_rms"] = state["memory"].float().square().mean().sqrt().item()
        if self.config.memory == "all":
            out["memory_weights"] = " ".join(f"{w:.4f}" for w in torch.softmax(self.memory_weights, 0).tolist())
        return out

    # ---- the recurrence ----

    def forward(self, tokens: torch.Tensor, state: dict | None = None):
        if self.fast:
            return fast_forward(self, tokens, state)
        B, T = tokens.shape
        cfg = self.config
        H, E, S = cfg.heads, cfg.head_dim, cfg.span
        embedded = self.embed(tokens)  # (B, T, D)
        start = self.start_state(state, B, embedded)
        # Windows of the visible keys/values in head layout (..., B, H, n, E); carried ones first.
        window_k = start["keys"].unflatten(-1, (H, E)).transpose(-2, -3)
        window_v = start["values"].unflatten(-1, (H, E)).transpose(-2, -3)
        memories, tops = [], []
        for t in range(T):
            n = window_k.shape[-2]
            pos = self.pos_keys[:, S - n :]  # (E, n)
            x = embedded[:, t]
            states = [x]
            for index, layer in enumerate(self.layers):
                layer_k = window_k if cfg.shared_kv else window_k[index]
                layer_v = window_v if cfg.shared_kv else window_v[index]
                x = layer(x, layer_k, layer_v, pos)
                states.append(x)
            memory = self.mix_memory(states)  # (B, D)
            if self.memory_probe is not None:
                memory = self.memory_probe(t, memory)
            window_k, window_v = self.push_memory(window_k, window_v, memory)
            memories.append(memory)
            tops.append(x)
        logits = self.head(self.norm_out(torch.stack(tops, dim=1)))  # (B, T, V)
        memory = torch.cat([start["memory"], torch.stack(memories, dim=1)], dim=1)[:, -S:]
        keys = window_k.transpose(-2, -3).flatten(-2)  # (..., B, n, D)
        values = window_v.transpose(-2, -3).flatten(-2)
        return logits, {"memory": memory.detach(), "keys": keys.detach(), "values": values.detach()}
