"""The Feedback Transformer's step, shared by the language model (feedback.py), the translation decoder
(feedback_decoder.py) and the RL policy core (rl/policies.py).

At step t every layer attends to the window of memories m_{t-n} .. m_{t-1} (n <= S, the span) through their
keys/values and learned relative-position keys; m_t mixes the step's input x^0 and every layer's output
x^1 .. x^L, and its keys/values are pushed into the window, dropping the oldest once S are held. As in the
authors' pre-norm code, a memory is layer-normalised before its key/value projections (see `kv_projections`).

The window (MemoryWindow) is one layout for every host: the memories (B, n, D), their keys and values in head
layout (B, H, n, E) with shared K/V or (L, B, H, n, E) with per-layer K/V, and which memories each row may
read. The language model and the decoder grow n from 0 and every row reads all of it (`visible` None). The
RL core keeps n = S slots from the start, zero memories included, and masks the slots not yet written or of
an earlier episode (`visible` (B, S)): environments start episodes at different steps, which a window shared
by the batch cannot express otherwise. That mask is the one difference between the hosts.

Shapes: B batch, D width, L layers, H heads, E head width (D / H unless set), A = H·E, S span, n memories in
the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from fbt.models.adaptive_span import AdaptiveSpan, renormalise, span_words
from fbt.models.config import ModelConfig, kv_choice
from fbt.models.layers import BernoulliDropout, FeedForward, run_layer


class FeedbackLayer(nn.Module):
    """Pre-norm block whose attention reads the shared memory instead of its own layer's states."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        D, A = config.dim, config.attention_dim
        self.heads, self.head_width = config.heads, config.head_width
        self.norm_attn = nn.LayerNorm(D)
        self.query = nn.Linear(D, A, bias=False)
        self.out = nn.Linear(A, D, bias=False)
        self.norm_ff = nn.LayerNorm(D)
        # Dropout as the fast segment draws it (BernoulliDropout), so both paths apply one mask on any device.
        self.ff = FeedForward(D, config.ff, config.dropout, BernoulliDropout)
        self.attn_dropout = BernoulliDropout(config.dropout)
        if config.adaptive_span:
            self.adaptive_span = AdaptiveSpan(
                config.heads, config.span, config.adaptive_span_ramp, config.adaptive_span_init
            )
        if not config.shared_kv:
            # The released enwik8 run projects the shared memory separately for each layer.
            self.key = nn.Linear(D, A, bias=False)
            self.value = nn.Linear(D, A, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        pos_keys: torch.Tensor,
        visible: torch.Tensor | None = None,
    ):
        """One step: x (B, D); keys, values (B, H, n, E) of the memories; pos_keys (E, n); visible (B, n)
        marks the memories each row may read (None: all), e.g. not those of an earlier RL episode."""
        x = self.attend(x, keys, values, pos_keys, visible)
        return x + self.ff(self.norm_ff(x))

    def attend(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        pos_keys: torch.Tensor,
        visible: torch.Tensor | None = None,
    ):
        """The attention half of `forward`: x (B, D) plus its read of the memory."""
        B = x.shape[0]
        if keys.shape[2] > 0:  # with no memory yet the attention output is zero
            q = self.query(self.norm_attn(x)).view(B, self.heads, 1, self.head_width)  # (B, H, 1, E)
            scores = (q @ keys.transpose(2, 3) + q @ pos_keys) / math.sqrt(q.shape[-1])  # (B, H, 1, n)
            if visible is None:
                probs = torch.softmax(scores, dim=-1)
            else:
                # A row that sees no memory reads nothing (zero), as at the start of a stream.
                hidden, empty = ~visible[:, None, None, :], ~visible.any(-1)[:, None, None, None]
                scores = scores.masked_fill(hidden, float("-inf")).masked_fill(empty, 0.0)
                probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
            if hasattr(self, "adaptive_span"):  # column j of the n memories is at distance n - j
                distances = torch.arange(probs.shape[-1], 0, -1, device=probs.device)
                probs = renormalise(probs, self.adaptive_span.mask(distances)[:, None, :])  # mask (H, 1, n)
            attended = (self.attn_dropout(probs) @ values).reshape(B, self.heads * self.head_width)  # (B, A)
            x = x + self.out(attended)
        return x


class MemoryWindow(NamedTuple):
    """The memories a step reads (see the module's docstring)."""

    memory: torch.Tensor  # (B, n, D)
    keys: torch.Tensor  # (B, H, n, E) shared, or (L, B, H, n, E) per layer
    values: torch.Tensor
    visible: torch.Tensor | None = None  # (B, n): the memories each row may read; None: all


class FeedbackStack(nn.Module):
    """The layers, the memory's parameters and the output norm, built from the config, and the step.

    Submodules in registration order (the state_dict's, and the order init and saved optimiser state follow):
    `inputs` (the host's modules read before the layers, e.g. the language model's embedding), `layers`,
    with shared K/V `norm_memory`, `key`, `value`, then `norm_out`; a host registers what follows them (its
    output head). `pos_keys` (E, S) and, with memory "all", `memory_weights` (L + 1) are parameters of the
    module itself. The host initialises the weights.
    """

    def __init__(
        self,
        config: ModelConfig,
        layer: type[FeedbackLayer] = FeedbackLayer,
        inputs: dict[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.config = config
        D, A, E, S = config.dim, config.attention_dim, config.head_width, config.span
        for name, module in (inputs or {}).items():
            self.add_module(name, module)
        self.layers = nn.ModuleList(layer(config) for _ in range(config.layers))
        if config.shared_kv:
            self.norm_memory = nn.LayerNorm(D)
            self.key = nn.Linear(D, A, bias=False)
            self.value = nn.Linear(D, A, bias=False)
        # Column i is the key of relative distance S - i, so the n most recent memories use the last n columns.
        self.pos_keys = nn.Parameter(torch.zeros(E, S))
        if config.memory == "all":
            # One scalar per layer including the embedding; zeros make the initial mix uniform.
            self.memory_weights = nn.Parameter(torch.zeros(config.layers + 1))
        self.norm_out = nn.LayerNorm(D)
        self.checkpoint_activations = False  # see layers.run_layer
        # Called as probe(t, m_t) -> m_t on each new memory of `step` (fbt analyze memory).
        self.memory_probe = None

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
        """Keys and values of memories (B, n, D): (B, n, A) shared, or (L, B, n, A) per layer."""
        projected = [(key(norm(memory)), value(norm(memory))) for norm, key, value in self.kv_projections()]
        if self.config.shared_kv:
            return projected[0]
        return torch.stack([k for k, _ in projected]), torch.stack([v for _, v in projected])

    def split_heads(self, kv: torch.Tensor) -> torch.Tensor:
        """(..., B, n, A) -> (..., B, H, n, E)."""
        return kv.unflatten(-1, (self.config.heads, self.config.head_width)).transpose(-2, -3)

    @staticmethod
    def merge_heads(kv: torch.Tensor) -> torch.Tensor:
        """(..., B, H, n, E) -> (..., B, n, A)."""
        return kv.transpose(-2, -3).flatten(-2)

    def open_window(
        self,
        memory: torch.Tensor,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
    ) -> MemoryWindow:
        """The window of memories (B, n, D) with their keys/values (..., B, n, A), projected here if not given."""
        if keys is None:
            keys, values = self.project_memory(memory)
        return MemoryWindow(memory, self.split_heads(keys), self.split_heads(values), visible)

    def mix_memory(self, states: list[torch.Tensor]) -> torch.Tensor:
        """m_t from the L + 1 states [x^0 .. x^L] of one step, each (B, D)."""
        source = self.config.memory
        if source == "top":
            return states[-1]
        if source == "layer":
            return states[self.config.memory_layer]
        weights = torch.softmax(self.memory_weights, dim=0)  # (L + 1,)
        return torch.einsum("l,lbd->bd", weights, torch.stack(states))

    def push_memory(self, window: MemoryWindow, memory: torch.Tensor) -> MemoryWindow:
        """The window with m_t (B, D) appended, its oldest memory dropped once S are held; m_t is visible."""
        k, v = self.project_memory(memory.unsqueeze(1))  # (..., B, 1, A)
        S = self.config.span

        def kept(tensor: torch.Tensor, dim: int) -> torch.Tensor:  # its last S - 1 entries along dim
            n = tensor.shape[dim]
            return tensor.narrow(dim, max(0, n - S + 1), min(n, S - 1))

        visible = window.visible
        if visible is not None:
            visible = torch.cat([kept(visible, 1), torch.ones_like(visible[:, :1])], dim=1)
        return MemoryWindow(
            torch.cat([kept(window.memory, 1), memory[:, None]], dim=1),
            torch.cat([kept(window.keys, -2), self.split_heads(k)], dim=-2),
            torch.cat([kept(window.values, -2), self.split_heads(v)], dim=-2),
            visible,
        )

    @staticmethod
    def last_memories(window: MemoryWindow, count: int) -> MemoryWindow:
        """The window's last `count` memories (all of them if it holds fewer)."""
        return MemoryWindow(window.memory[:, -count:], window.keys[..., -count:, :], window.values[..., -count:, :])

    def step(
        self,
        x: torch.Tensor,
        window: MemoryWindow,
        t: int,
        layer_inputs: Callable[[int], tuple] | None = None,
        reach: int | None = None,
    ) -> tuple[torch.Tensor, MemoryWindow]:
        """Step t: x^0 (B, D) through every layer, each reading the window, then m_t pushed into it. Returns
        x^L (B, D) and the window after m_t. `layer_inputs(l)` gives layer l's further inputs (the decoder's
        read of the source). With adaptive spans, `reach` (adaptive_span.reach) bounds the memories read: the
        heads' masks are 0 further back."""
        read = window if reach is None or window.visible is not None else self.last_memories(window, reach)
        n = read.keys.shape[-2]
        # (E, n): the keys of distances n .. 1; a masked window holds all S slots and reads every column
        pos = self.pos_keys if read.visible is not None else self.pos_keys[:, self.config.span - n :]
        states = [x]
        for index, layer in enumerate(self.layers):
            keys = read.keys if self.config.shared_kv else read.keys[index]  # (B, H, n, E)
            values = read.values if self.config.shared_kv else read.values[index]
            extra = layer_inputs(index) if layer_inputs else ()
            x = run_layer(layer, self.checkpoint_activations, x, keys, values, pos, read.visible, *extra)
            states.append(x)
        memory = self.mix_memory(states)  # (B, D)
        if self.memory_probe is not None:
            memory = self.memory_probe(t, memory)
        return x, self.push_memory(window, memory)


def kv_line(config: ModelConfig) -> str:
    """A feedback memory's part of `describe`: ", span 64, shared K/V"."""
    return f", {span_words(config)}, {kv_choice(config.shared_kv)} K/V"
