"""Feedback Transformer (Fan, Lavril, Grave, Joulin, Sukhbaatar, arXiv 2002.09402).

Every layer at step t attends to one shared stream of memories m_{t-S} .. m_{t-1}, where
m_t = sum_l softmax(w)_l x_t^l mixes the embedding (l = 0) and every layer's output (l = 1..L).
The current step is never a key: its memory exists only once all layers have run, so the model runs
token by token inside a segment. As in the authors' pre-norm code, the memory is layer-normalised before its
key/value projections (see `kv_projections`): without it memory -> value -> residual -> memory is a loop with
no normalisation, and training diverges. Relative positions are learned key embeddings shared by all layers:
score_j = (q . k_j + q . p_{t-j}) / sqrt(E). The step is feedback_step.py's, shared with the translation
decoder and the RL policy core.

Shapes: B batch, T time (segment), D width, L layers, H heads, E head width (D / H unless set), A = H·E,
S span, n number of visible memories (n <= S), V vocabulary.

State: a dict with the stream's last n <= S memories, "memory" (B, n, D), and the "keys" and "values" of the
last n' of them, (B, n', A) with shared K/V or (L, B, n', A) with per-layer K/V: n' = n, or with adaptive
spans the heads' reach, as far as a step reads (the memories are kept to S, for spans that grow).
Keys/values were computed with the weights of the forward that produced them: a training forward recomputes
them from the memory, because the weights have moved since; an evaluation forward reuses them, which makes
decoding cheap.
"""

from __future__ import annotations

import torch
from torch import nn

from fbt.models import adaptive_span
from fbt.models.config import ModelConfig, kv_choice
from fbt.models.family import ModelFamily, attention_line, layers_line
from fbt.models.feedback_segment import fast_forward
from fbt.models.feedback_step import FeedbackStack, kv_line
from fbt.models.layers import init_position_keys, init_weights
from fbt.models.pretrained import PretrainedLM


class FeedbackTransformer(ModelFamily, PretrainedLM, adaptive_span.AdaptiveSpanHost, FeedbackStack):
    # keys/values (B, n, A) shared, (L, B, n, A) per layer: the batch is third from the end either way
    state_batch_dims = {"memory": 0, "keys": -3, "values": -3}
    options = (
        "heads",
        "head_dim",
        "ff",
        "span",
        "shared_kv",
        "memory",
        "memory_layer",
        *adaptive_span.OPTIONS,
    )

    def __init__(self, config: ModelConfig):
        super().__init__(config, inputs={"embed": nn.Embedding(config.vocab_size, config.dim)})
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        init_weights(self, config.layers, config.init)
        init_position_keys(self.pos_keys, config.init)
        # True: the segment's recurrence runs as one autograd node with a hand-written backward
        # (feedback_segment.py), with checkpoint_activations recomputing groups of steps in backward. False:
        # the plain autograd loop of `forward` below, the reference it is tested against (and the only path
        # that calls memory_probe). Same logits, state and gradients up to float rounding.
        self.fast = True

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"{layers_line(config)}{attention_line(config)}{kv_line(config)}, memory from {config.memory}"

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        D, A, F, L = config.dim, config.attention_dim, config.ff, config.layers
        # q and out per layer; the memory's K/V once per token when shared, per layer otherwise.
        kv = 4 * D * A * (1 if config.shared_kv else L)
        return L * (4 * D * A + 4 * D * F + 6 * config.span * A) + kv + 2 * D * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return config.span

    @classmethod
    def reach(cls, config: ModelConfig) -> int:
        return config.span

    @classmethod
    def label(cls, config: ModelConfig) -> str:
        return super().label(config) + ("" if config.shared_kv else f" {kv_choice(False)}-kv")

    def start_state(self, state: dict | None, batch: int, like: torch.Tensor, reach: int) -> dict:
        """The carried state with keys/values valid for the current weights, for the last `reach` memories (all
        of them without adaptive spans): those a step can read."""
        if state is None:
            memory = like.new_zeros(batch, 0, self.config.dim)
        else:
            memory = state["memory"]
            if memory.shape[0] != batch:
                raise ValueError(f"state batch {memory.shape[0]} differs from input batch {batch}")
            if not self.training and state["keys"].shape[-2] >= min(memory.shape[1], reach):
                return state
        keys, values = self.project_memory(memory[:, memory.shape[1] - min(memory.shape[1], reach) :])
        return {"memory": memory, "keys": keys, "values": values}

    @torch.no_grad()
    def diagnostics(self, state: dict | None) -> dict:
        """What a training log shows to see a run drift: the carried memory's RMS, the layer mix and the
        learned spans."""
        out: dict = adaptive_span.span_report(self, self.config.adaptive_span_loss)
        if state is not None and state["memory"].numel():
            out["memory_rms"] = state["memory"].float().square().mean().sqrt().item()
        if self.config.memory == "all":
            out["memory_weights"] = " ".join(f"{w:.4f}" for w in torch.softmax(self.memory_weights, 0).tolist())
        return out

    def forward(self, tokens: torch.Tensor, state: dict | None = None):
        if self.fast:
            return fast_forward(self, tokens, state)
        embedded = self.embed(tokens)  # (B, T, D)
        reach = adaptive_span.reach(self, self.config.span)
        start = self.start_state(state, tokens.shape[0], embedded, reach)
        window = self.open_window(start["memory"], start["keys"], start["values"])
        tops = []
        for t in range(tokens.shape[1]):
            x, window = self.step(embedded[:, t], window, t, reach=reach)
            tops.append(x)
        logits = self.head(self.norm_out(torch.stack(tops, dim=1)))  # (B, T, V)
        # Keys/values of the memories within reach, (..., B, n', A); the memories themselves, up to S.
        keys, values = (self.merge_heads(kv)[..., -reach:, :].detach() for kv in (window.keys, window.values))
        return logits, {"memory": window.memory.detach(), "keys": keys, "values": values}
