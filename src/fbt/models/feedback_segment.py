"""The exact Feedback Transformer recurrence of one segment as a single autograd node.

`fbt.models.feedback` runs the recurrence through autograd: every step of every layer records a few dozen
small nodes, and their bookkeeping costs more than the arithmetic. Here the whole segment (all T steps, all
L layers) is one `torch.autograd.Function` with a hand-derived backward, computing the same function as the
autograd loop up to float rounding (`FeedbackTransformer.fast` picks the path; `fast_forward` is the glue).

Forward: the keys/values of the carried and of the new memories live in one preallocated buffer in head
layout; each step writes its memory's keys/values in place and reads its window as a view. Everything that
does not depend on the recurrence (embedding, output head, keys/values of the carried memory) stays outside,
in parallel over time. When training, every step's activations go into preallocated buffers.

Backward: only gradients w.r.t. activations run step by step, in reverse time; weight gradients are sums over
steps, formed once per segment as (T·B × ·)ᵀ (T·B × ·) matmuls over the saved buffers. The gradient of memory
m_t comes from the later steps that read it, all done before step t in reverse time: its key's gradient is
sum_{t', l} dscore[t', l, m_t] q[t', l], its value's sum_{t', l} prob[t', l, m_t] dattended[t', l]. Scores'
gradients and probabilities are saved right-aligned in zero-padded rows ("distance layout": column W - d
for distance d), and one strided view reads such a buffer by absolute memory index instead. The steps are
grouped in blocks of BLOCK: when a block is done, its contribution to every earlier memory is added in one
batched matmul (kv_acc), and within a block the few remaining terms are gathered per step.

Adaptive spans (adaptive_span.py): each layer's softmax p is multiplied by its heads' span masks m and
renormalised, p^ = p m / (sum p m + eps); p^ then plays the part p plays without them, and the backward goes
through the renormalisation to p (saved) and to the spans z, whose gradient sums d(p m) p dm/dz over steps and
streams (dm/dz = 1/R inside the ramp). The caller runs the segment with the span cut to the heads' reach.

Large buffers come from a pool and go back to it when the segment's graph is freed, so that training does not
pay for fresh pages every segment.

Precision: the projections' matmuls take their operands in the dtype of the weights passed for them (bf16 under
`--precision bf16`, see fast_forward); the residual stream, LayerNorm, attention and the gradients carried along
the recurrence run in the embedding's dtype (fp32 then). With one dtype throughout (fp32, or float64 for the
gradient checks) the two coincide and nothing is cast.

Shapes: B batch, T time (segment), D width, L layers, H heads, E head width, A = H·E, F feed-forward width,
S span, n visible memories at a step (n <= S), n0 carried memories (n0 <= S), N = n0 + T memories of the
segment, K key/value projections (1 shared, L per layer), BH = B·H, W = S + BLOCK - 1 width of a score row.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from fbt.models import adaptive_span
from fbt.models.layers import checkpoint_group, dropout_noise

# Parameters of one FeedbackLayer, in the order the segment takes them.
LAYER_PARAMETERS = (
    "norm_attn.weight",
    "norm_attn.bias",
    "query.weight",
    "out.weight",
    "norm_ff.weight",
    "norm_ff.bias",
    "ff.hidden.weight",
    "ff.hidden.bias",
    "ff.out.weight",
    "ff.out.bias",
)

_layer_norm_backward = torch.ops.aten.native_layer_norm_backward.default
_threshold_backward = torch.ops.aten.threshold_backward.grad_input
_layer_norm_out = torch.ops.aten.native_layer_norm.out


@dataclass(frozen=True)
class SegmentSpec:
    """What the recurrence needs besides tensors."""

    heads: int
    span: int  # S
    memory: str  # "all", "top" or "layer"
    memory_layer: int  # with memory == "layer": 0 is the embedding, L the top output
    dropout: float  # on attention probabilities and the FFN hidden layer; 0 outside training
    eps: float  # LayerNorm epsilon
    ramp: int = 0  # with adaptive spans (adaptive_span.py) their ramp R; 0: no span masks


class LayerWeights(NamedTuple):
    """One layer's parameters, in LAYER_PARAMETERS order."""

    norm_attn_weight: torch.Tensor
    norm_attn_bias: torch.Tensor
    query: torch.Tensor  # (A, D), pre-scaled by 1/sqrt(E): see segment_weights
    attn_out: torch.Tensor  # (D, A)
    norm_ff_weight: torch.Tensor
    norm_ff_bias: torch.Tensor
    hidden_weight: torch.Tensor  # (F, D)
    hidden_bias: torch.Tensor  # (F,)
    ff_out_weight: torch.Tensor  # (D, F)
    ff_out_bias: torch.Tensor  # (D,)


def layer_norm_backward(grad, x, mean, rstd, weight):
    """Gradient w.r.t. the input x (B, D) of LayerNorm, given its saved mean and rstd (B, 1)."""
    return _layer_norm_backward(grad, x, [x.shape[-1]], mean, rstd, weight, None, [True, False, False])[0]


def layer_norm_param_grads(grad, x, mean, rstd, weight, bias):
    """Gradients w.r.t. LayerNorm weight and bias, summed over the rows of grad and x (R, D)."""
    _, d_weight, d_bias = _layer_norm_backward(grad, x, [x.shape[-1]], mean, rstd, weight, bias, [False, True, True])
    return d_weight, d_bias


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy, never a view (results must not alias pooled buffers)."""
    return tensor.clone(memory_format=torch.contiguous_format)


def rows(tensor: torch.Tensor) -> torch.Tensor:
    """(..., X) -> (R, X), copying only when the leading dimensions do not merge."""
    return tensor.reshape(-1, tensor.shape[-1])


def into(out: torch.Tensor | None, op, *args) -> torch.Tensor:
    """op(*args), written into out if given. When out's dtype is not the operands' (in a bf16 recurrence, dense
    bf16 results entering the fp32 attention and back), op allocates and out takes a cast copy."""
    if out is None:
        return op(*args)
    if out.dtype == args[-1].dtype:
        return op(*args, out=out)
    return out.copy_(op(*args))


class _BufferPool:
    """Large per-segment buffers, reused from one training segment to the next.

    The first write to freshly allocated memory costs a page fault per 4 KiB page; on virtual machines that
    can cost as much as the segment's arithmetic. A training segment takes its buffers here and gives them
    back when it is freed (after its backward). A buffer is only allocated when none of its shape is free,
    so the pool holds at most the largest number of buffers of each shape in use at once; shapes nobody
    took during the last `keep` gives (as while the carried memory grows to the span) are dropped.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.last_use: dict[tuple, int] = {}
        self.gives = 0
        self.lock = threading.Lock()

    def take(self, shape: tuple, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        key = (shape, dtype, like.device)
        with self.lock:
            self.last_use[key] = self.gives
            stack = self.free.get(key)
            if stack:
                return stack.pop()
        return like.new_empty(shape, dtype=dtype)

    def give(self, tensors: list) -> None:
        with self.lock:
            self.gives += 1
            for tensor in tensors:
                self.free.setdefault((tuple(tensor.shape), tensor.dtype, tensor.device), []).append(tensor)
            for key in [key for key, last in self.last_use.items() if last < self.gives - self.keep]:
                self.free.pop(key, None)
                del self.last_use[key]

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.last_use.clear()


_POOL = _BufferPool()


def free_buffers() -> None:
    """Releases the buffers kept for the next training segment (e.g. once training is over)."""
    _POOL.clear()


# Steps per block of the backward: a block's key/value gradients reach earlier memories in one matmul.
BLOCK = 8


def _grid(buffer: torch.Tensor, layer_major: bool = True) -> list:
    """Views [l][t] of the (l, t) slices of a (L, T, ...) buffer, or of a (T, L, ...) one if not layer_major.

    Made once per segment: indexing a Python list in the loop costs far less than slicing a tensor."""
    outer = [inner.unbind(0) for inner in buffer.unbind(0)]
    return outer if layer_major else list(zip(*outer))


class _Segment:
    """One segment's recurrence: prepared weights, the key/value buffer and, for training, saved activations.

    `forward()` runs the steps; with `save` it keeps what `backward()` needs. Buffers read per layer after the
    loop are layer-major (L, T, ...), so each layer's rows are contiguous; those the memory-gradient gathers
    read over later steps and all layers are step-major (T, L, ...). Inside the loops every buffer is reached
    through a grid of per-(layer, step) views.
    """

    def __init__(self, spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, weights, save: bool):
        self.spec, self.save, self.like = spec, save, embedded
        # Matmul operands in the projections' dtype, the rest in the embedding's (see Precision above).
        self.dtype, self.matmul_dtype = embedded.dtype, weights[0].dtype
        self.mixed = self.matmul_dtype != self.dtype
        self.owned = []  # pooled buffers, given back by release()
        B, T, D = embedded.shape
        H, S = spec.heads, spec.span
        E = pos_keys.shape[0]
        K = 1 if keys.dim() == 3 else keys.shape[0]
        n0 = keys.shape[-2]
        self.B, self.T, self.D, self.H, self.E, self.S, self.K, self.n0 = B, T, D, H, E, S, K, n0
        self.A = H * E
        self.BH, self.N, self.p = B * H, n0 + T, spec.dropout
        self.visible = [min(n0 + t, S) for t in range(T)]  # n at each step
        # Key then value projections of the normalised memory, K of each, with the memory norms' affine maps
        # folded in (see segment_weights): kv = LN0(m) @ kv_stackᵀ + kv_bias, kv_stack (2 K A, D).
        self.kv_stack, self.kv_bias = weights[0], weights[1]
        layer_params = weights[2:]
        L = self.L = len(layer_params) // len(LAYER_PARAMETERS)
        self.layers = [LayerWeights(*layer_params[i * 10 : (i + 1) * 10]) for i in range(L)]
        self.F = self.layers[0].hidden_weight.shape[0]
        self.pos_keys = pos_keys  # (E, S); column S - d is distance d
        self.mix_logits = mix_logits
        self.mix = self._mix_coefficients()
        self.span_masks = None if span_lengths is None else self._span_masks(span_lengths)
        self.forward_weights = [
            self._transposed(w.query, w.attn_out, w.hidden_weight, w.ff_out_weight) for w in self.layers
        ]
        (self.kv_stack_t,) = self._transposed(self.kv_stack)

        # Keys/values of all memories in head layout; the carried ones first.
        self.kv = self.buffer(2, K, B, H, self.N, E)
        self.kv[0, :, :, :, :n0] = keys.reshape(K, B, n0, H, E).transpose(2, 3)
        self.kv[1, :, :, :, :n0] = values.reshape(K, B, n0, H, E).transpose(2, 3)
        # Every step's state x^0 (the embedding) .. x^L (the top output).
        self.states = self.buffer(L + 1, T, B, D)
        self.states[0] = embedded.transpose(0, 1)
        self.state_grid = _grid(self.states)
        self.memories = self.buffer(T, B, D) if spec.memory == "all" else None
        # The memories layer-normalised without affine map, LN0(m), their keys/values' input.
        self.memory_norm = (self.buffer(T, B, D, dtype=self.matmul_dtype), self.buffer(T, B, 1), self.buffer(T, B, 1))
        self.memory_norm_grid = list(zip(*(b.unbind(0) for b in self.memory_norm)))
        if save:
            self._allocate_saved()
        else:  # nothing to write into: ops allocate their outputs
            nothing = [[None] * T] * L
            self.query_grid = self.attended_grid = self.mid_grid = self.hidden_grid = nothing
            self.attn_norm_grid = self.ff_norm_grid = nothing

    def _transposed(self, *weights):
        """Transposes of (out, in) weights for x @ Wᵀ; when training, contiguous copies (a plain matmul runs
        faster than one on a transposed view, and they are made once per segment)."""
        if not self.save:
            return tuple(w.t() for w in weights)
        return tuple(self.buffer(*w.shape[::-1], dtype=w.dtype).copy_(w.t()) for w in weights)

    def buffer(self, *shape, zero=False, dtype=None):
        """A buffer of the segment (by default of the residual stream's dtype): pooled when training, plain
        otherwise."""
        dtype = dtype or self.dtype
        if self.save:
            tensor = _POOL.take(shape, self.like, dtype)
            self.owned.append(tensor)
        else:
            tensor = self.like.new_empty(shape, dtype=dtype)
        return tensor.zero_() if zero else tensor

    def release(self):
        """Gives every pooled buffer back; the segment is unusable afterwards."""
        _POOL.give(self.owned)
        self.__dict__.clear()

    def _mix_coefficients(self) -> list:
        """Weight of each state x^0 .. x^L in the memory; None where a state does not enter it."""
        spec, L = self.spec, self.L
        if spec.memory == "all":
            self.mix_weights = torch.softmax(self.mix_logits, dim=0)  # (L + 1,)
            return self.mix_weights.tolist()
        mix = [None] * (L + 1)
        mix[L if spec.memory == "top" else spec.memory_layer] = 1.0
        return mix

    def _span_masks(self, span_lengths):
        """The adaptive span masks (L, H, S) in distance layout (column S - d for distance d) of the spans
        span_lengths (L, H); for the backward, their slopes dmask/dspan: 1/R inside the ramp, else 0."""
        distances = torch.arange(self.S, 0, -1, device=span_lengths.device, dtype=span_lengths.dtype)
        raw = (span_lengths[:, :, None] + 1 - distances) / self.spec.ramp + 1
        self.span_slopes = ((raw > 0) & (raw < 1)).to(raw.dtype) / self.spec.ramp
        return raw.clamp(0, 1)

    def _allocate_saved(self):
        T, L, B, D, A, BH, E, F = self.T, self.L, self.B, self.D, self.A, self.BH, self.E, self.F
        # Widest distance the memory-gradient gathers read (see _flush_block).
        self.W = self.S + BLOCK - 1
        buffer, C = self.buffer, self.matmul_dtype
        self.queries = buffer(T, L, B, A)  # q~ in head layout (B, H, E) = (B, A)
        self.attended = buffer(L, T, B, A, dtype=C)  # attention output before Wo
        self.mids = buffer(L, T, B, D)  # x + attention, the FFN's input
        self.hidden = buffer(L, T, B, F, dtype=C)  # after ReLU and dropout
        # LayerNorm outputs, means and rstds of the attention and FFN sublayers.
        self.attn_norm = (buffer(L, T, B, D, dtype=C), buffer(L, T, B, 1), buffer(L, T, B, 1))
        self.ff_norm = (buffer(L, T, B, D, dtype=C), buffer(L, T, B, 1), buffer(L, T, B, 1))
        # Distance layout: zeros left of the n visible memories.
        self.probs = buffer(T, L, BH, self.W, zero=True)
        if self.span_masks is not None:  # the softmax before the span masks; probs holds it masked and renormalised
            self.softmax = buffer(T, L, BH, self.W, zero=True)
        if self.p > 0:
            self.dropped = buffer(T, L, BH, self.W, zero=True)  # after dropout
            self.noise = buffer(T, L, BH, self.W)
        else:
            self.dropped = self.probs
        self.query_grid = _grid(self.queries, layer_major=False)
        self.attended_grid = _grid(self.attended.view(L, T, BH, 1, E))
        self.mid_grid = _grid(self.mids)
        self.hidden_grid = _grid(self.hidden)
        self.attn_norm_grid = [list(zip(*cells)) for cells in zip(*map(_grid, self.attn_norm))]
        self.ff_norm_grid = [list(zip(*cells)) for cells in zip(*map(_grid, self.ff_norm))]

    def _visible_rows(self, buffer):
        """Views [l][t] (BH, n) of the visible part of each row of a distance-layout (T, L, BH, W) buffer."""
        per_step = [buffer[t, :, :, self.W - n :].unbind(0) for t, n in enumerate(self.visible)]
        return list(zip(*per_step))

    def windows(self, t):
        """Keys (transposed) and values of the memories step t sees: K lists of (BH, E, n), (BH, n, E)."""
        n0, n = self.n0, self.visible[t]
        window = self.kv.view(2, self.K, self.BH, self.N, self.E)[:, :, :, n0 + t - n : n0 + t]
        return [k.transpose(1, 2) for k in window[0]], list(window[1])

    # ---- forward ----

    def forward(self):
        T, L, S, K = self.T, self.L, self.S, self.K
        if self.save:
            self.prob_rows = self._visible_rows(self.probs)
            if self.span_masks is not None:
                self.softmax_rows = self._visible_rows(self.softmax)
            if self.p > 0:
                self.dropped_rows, self.noise_rows = self._visible_rows(self.dropped), self._visible_rows(self.noise)
        for t in range(T):
            n = self.visible[t]
            if n > 0:
                keys, values = self.windows(t)
                pos = self.pos_keys[:, S - n :]  # (E, n)
            for l in range(L):
                x = self.state_grid[l][t]
                if n > 0:
                    k = 0 if K == 1 else l
                    mid = self._attention_forward(t, l, x, keys[k], values[k], pos)
                else:
                    mid = self._skip_attention(t, l, x)
                self._ffn_forward(t, l, mid, out=self.state_grid[l + 1][t])
            self._write_memory(t)

    def _layer_norm(self, x, weight, bias, saved):
        """LayerNorm of x (B, D), a matmul operand; when training, output, mean and rstd go into the saved views.

        In a bf16 recurrence it is computed in fp32 and its output rounded to bf16."""
        if saved is None:
            return torch.native_layer_norm(x, (self.D,), weight, bias, self.spec.eps)[0].to(self.matmul_dtype)
        normed, mean, rstd = saved
        if self.mixed:
            exact, mean[:], rstd[:] = torch.native_layer_norm(x, (self.D,), weight, bias, self.spec.eps)
            return normed.copy_(exact)
        return _layer_norm_out(x, [self.D], weight, bias, self.spec.eps, out0=normed, out1=mean, out2=rstd)[0]

    def _attention_forward(self, t, l, x, keys, values, pos):
        """x + Wo Attn(LN(x)) of layer l at step t; keys (BH, E, n), values (BH, n, E), pos (E, n)."""
        B, A, BH, E, w = self.B, self.A, self.BH, self.E, self.layers[l]
        query_t, out_t = self.forward_weights[l][:2]
        normed = self._layer_norm(x, w.norm_attn_weight, w.norm_attn_bias, self.attn_norm_grid[l][t])
        q = into(self.query_grid[l][t], torch.mm, normed, query_t).to(self.dtype)  # (B, A) = (BH, E)
        heads = q.view(BH, 1, E)
        scores = torch.baddbmm(torch.mm(q.view(BH, E), pos).unsqueeze(1), heads, keys)  # (BH, 1, n)
        probs = softmax = torch.softmax(scores, dim=-1)
        if self.span_masks is not None:
            n = probs.shape[-1]
            mask = self.span_masks[l][:, self.S - n :]  # (H, n)
            probs = adaptive_span.renormalise(probs.view(B, -1, n), mask).view(BH, 1, n)
        dropped = probs
        if self.p > 0:
            noise = dropout_noise(probs, self.p)
            dropped = probs * noise
        attended = into(self.attended_grid[l][t], torch.bmm, dropped, values).to(self.matmul_dtype)  # (BH, 1, E)
        mid = self._residual(x, attended.view(B, A), out_t, out=self.mid_grid[l][t])
        if self.save:
            self.prob_rows[l][t].copy_(probs.squeeze(1))
            if self.span_masks is not None:
                self.softmax_rows[l][t].copy_(softmax.squeeze(1))
            if self.p > 0:
                self.dropped_rows[l][t].copy_(dropped.squeeze(1))
                self.noise_rows[l][t].copy_(noise.squeeze(1))
        return mid

    def _residual(self, x, a, weight_t, out):
        """x + a @ weight_t, into out if given; with bf16 operands the sum is taken in x's dtype."""
        if self.mixed:
            return torch.add(x, torch.mm(a, weight_t), out=out)
        return torch.addmm(x, a, weight_t, out=out)

    def _skip_attention(self, t, l, x):
        """With no visible memory the attention output is zero."""
        if self.save:
            self.mid_grid[l][t].copy_(x)
            self.query_grid[l][t].zero_()  # its row meets the zero scores row in the position gradient
        return x

    def _ffn_forward(self, t, l, mid, out):
        """out = mid + W2 drop(relu(W1 LN(mid) + b1)) + b2."""
        w = self.layers[l]
        hidden_t, out_t = self.forward_weights[l][2:]
        normed = self._layer_norm(mid, w.norm_ff_weight, w.norm_ff_bias, self.ff_norm_grid[l][t])
        hidden = torch.addmm(w.hidden_bias, normed, hidden_t, out=self.hidden_grid[l][t])
        hidden.relu_()
        if self.p > 0:
            hidden.mul_(dropout_noise(hidden, self.p))
        torch.add(mid, torch.addmm(w.ff_out_bias, hidden, out_t), out=out)

    def _write_memory(self, t):
        """m_t from the states of step t; its keys/values go into the buffer at position n0 + t."""
        B, H, E, K, L = self.B, self.H, self.E, self.K, self.L
        if self.spec.memory == "all":
            row = self.memories[t].view(1, -1)
            torch.mm(self.mix_weights.view(1, L + 1), self.states[:, t].view(L + 1, -1), out=row)
        normed = self._layer_norm(self.all_memories()[t], None, None, self.memory_norm_grid[t])
        kv = torch.addmm(self.kv_bias, normed, self.kv_stack_t)  # (B, 2 K A), written in the buffer's dtype
        self.kv[:, :, :, :, self.n0 + t] = kv.view(B, 2, K, H, E).permute(1, 2, 0, 3, 4)

    def all_memories(self):
        """Memories of the segment (T, B, D)."""
        if self.spec.memory == "all":
            return self.memories
        return self.states[self.L if self.spec.memory == "top" else self.spec.memory_layer]

    def outputs(self):
        """Top outputs and memories (B, T, D); keys and values of the new memories, (B, T, A) or (L, B, T, A).

        Copies: the buffers go back to the pool with the segment."""
        B, T, A, K, n0 = self.B, self.T, self.A, self.K, self.n0
        top = _copy(self.states[self.L].transpose(0, 1))
        memories = _copy(self.all_memories().transpose(0, 1))
        new = _copy(self.kv[:, :, :, :, n0:].permute(0, 1, 2, 4, 3, 5)).view(2, K, B, T, A)
        if K == 1:
            new = new.squeeze(1)
        return top, memories, new[0], new[1]

    # ---- backward ----

    def backward(self, d_top, d_memories, d_keys, d_values):
        """Gradients w.r.t. (embedded, keys, values, pos_keys, mix_logits, *weights) given the outputs' grads."""
        T, L, B, D, A, K, BH, E, F = self.T, self.L, self.B, self.D, self.A, self.K, self.BH, self.E, self.F
        buffer = self.buffer
        forward_buffers = len(self.owned)
        self.d_outs = buffer(L, T, B, D)  # w.r.t. each layer's output x^{l+1}
        self.d_mids = buffer(L, T, B, D)  # w.r.t. x + attention
        self.d_pre = buffer(L, T, B, F, dtype=self.matmul_dtype)  # w.r.t. the FFN hidden layer before ReLU
        self.d_ff_normed = buffer(L, T, B, D)
        self.d_attn_normed = buffer(L, T, B, D)
        self.d_queries = buffer(L, T, B, A, dtype=self.matmul_dtype)
        self.d_attended = buffer(T, L, B, A)
        self.d_scores = buffer(T, L, BH, self.W, zero=True)  # distance layout, as probs
        self.d_kv = buffer(T, 2, K, B, A)  # w.r.t. the keys/values of the new memories
        # Key/value gradients of all memories from the steps of flushed blocks (see _flush_block).
        self.kv_acc = buffer(2, K, BH, self.N, E, zero=True)
        self.block_scratch = buffer(BLOCK, L, BH, self.S)
        self.d_memories = buffer(T, B, D)
        if self.span_masks is not None:
            self.d_span_masks = buffer(L, self.H, self.S, zero=True)  # distance layout, as span_masks
        self.d_embedded = self.like.new_empty(B, T, D)  # returned, so not pooled
        self.abs_scores = self._absolute(self.d_scores)
        self.abs_dropped = self._absolute(self.dropped)
        d_out_grid = _grid(self.d_outs)
        # Where each layer writes the gradient w.r.t. its input: the layer below's output, or the embedding.
        self.d_input_grid = [self.d_embedded.unbind(1)] + d_out_grid[:-1]
        self.d_top_grid = d_out_grid[-1]
        self.d_mid_grid = _grid(self.d_mids)
        self.d_pre_grid = _grid(self.d_pre)
        self.d_ff_normed_grid = _grid(self.d_ff_normed)
        self.d_attn_normed_grid = _grid(self.d_attn_normed)
        self.d_query_grid = _grid(self.d_queries.view(L, T, BH, 1, E))
        self.d_attended_grid = _grid(self.d_attended, layer_major=False)
        self.d_score_rows = self._visible_rows(self.d_scores)
        # Output gradients as (T, ...) views; K-leading for keys/values.
        d_top = d_top.transpose(0, 1) if d_top is not None else None
        d_memories = d_memories.transpose(0, 1) if d_memories is not None else None
        d_new_kv = self._new_kv_grads(d_keys, d_values)
        for t in reversed(range(T)):
            self._backward_step(t, d_top, d_memories, d_new_kv)
        grads = self._input_grads()
        _POOL.give(self.owned[forward_buffers:])  # the saved activations stay for another backward
        del self.owned[forward_buffers:]
        return grads

    def _absolute(self, buffer):
        """View (T, L, BH, N - 1) of a distance-layout buffer by absolute memory index a.

        Step t sees memory a at distance d = n0 + t - a, stored in column W - d of its row. Only entries with
        n0 + t - W <= a < n0 + t lie in that row (zeros beyond the span); the gathers read no others.
        Memory N - 1 has no reader in the segment and is left out.
        """
        T, L, R, W = buffer.shape
        return buffer.as_strided((T, L, R, self.N - 1), (L * R * W - 1, R * W, W, 1), W - self.n0)

    def _new_kv_grads(self, d_keys, d_values):
        """Gradients w.r.t. the returned keys/values as (T, K, B, A) views, or None."""

        def steps_first(grad):
            if grad is None:
                return None
            return (grad.unsqueeze(0) if self.K == 1 else grad).permute(2, 0, 1, 3)

        return steps_first(d_keys), steps_first(d_values)

    def _backward_step(self, t, d_top, d_memories, d_new_kv):
        L, S, K = self.L, self.S, self.K
        n = self.visible[t]
        if n > 0:
            keys, values = self.windows(t)
            pos = self.pos_keys[:, S - n :]
        d_memory = self._memory_grad(t, d_memories, d_new_kv)  # complete: every reader of m_t is done
        grad = self.d_top_grid[t]
        if d_top is not None:
            grad.copy_(d_top[t])
        else:
            grad.zero_()
        self._add_memory_grad(grad, L, d_memory)
        for l in reversed(range(L)):
            d_input = self.d_input_grid[l][t]
            d_mid = self._ffn_backward(t, l, grad)
            if n > 0:
                k = 0 if K == 1 else l
                self._attention_backward(t, l, d_mid, keys[k], values[k], pos, out=d_input)
            else:
                d_input.copy_(d_mid)
            self._add_memory_grad(d_input, l, d_memory)
            grad = d_input
        if t % BLOCK == 0:
            self._flush_block(t)

    def _add_memory_grad(self, grad, state, d_memory):
        """m_t = sum_l mix_l x^l: adds mix_l dm_t to the gradient w.r.t. x^state."""
        if d_memory is not None and self.mix[state] is not None:
            grad.add_(d_memory, alpha=self.mix[state])

    def _memory_grad(self, t, d_memories, d_new_kv):
        """dm_t (B, D) = sum over projections of dk_t Wk + dv_t Wv (+ the output's gradient), or None if zero.

        dk_t, dv_t come from the later steps of t's block (gathered here) and from later blocks (kv_acc)."""
        T, K, B, D, A, BH, E = self.T, self.K, self.B, self.D, self.A, self.BH, self.E
        d_kv = self.d_kv[t]  # (2, K, B, A)
        block_end = min(T, t - t % BLOCK + BLOCK)
        if t + 1 < block_end:
            self._gather(self.abs_scores, self.queries, t, block_end, out=d_kv[0])
            self._gather(self.abs_dropped, self.d_attended, t, block_end, out=d_kv[1])
        else:
            d_kv.zero_()
        if block_end < T:
            d_kv.view(2, K, BH, E).add_(self.kv_acc[:, :, :, self.n0 + t])
        for i, grad in enumerate(d_new_kv):
            if grad is not None:
                d_kv[i] += grad[t]
        if t == T - 1 and d_new_kv == (None, None):
            d_memory = None
        else:
            d_kv_c = d_kv.view(2 * K, B, A).to(self.matmul_dtype)
            d_normed = torch.bmm(d_kv_c, self.kv_stack.view(2 * K, A, D)).sum(0).to(self.dtype)
            _, mean, rstd = self.memory_norm_grid[t]
            d_memory = layer_norm_backward(d_normed, self.all_memories()[t], mean, rstd, None)
        if d_memories is not None:
            d_memory = d_memories[t] if d_memory is None else d_memory.add_(d_memories[t])
        if d_memory is not None:
            self.d_memories[t] = d_memory
        else:
            self.d_memories[t].zero_()
        return d_memory

    def _gather(self, coefficients, vectors, t, stop, out):
        """out (K, B, A): sum over steps t' in (t, stop) (and over layers with shared K/V) of
        coefficients[t', l, bh, n0 + t] * vectors[t', l, bh]; vectors (T, L, B, A) in head layout."""
        L, BH, E = self.L, self.BH, self.E
        c = coefficients[t + 1 : stop, :, :, self.n0 + t]  # (R, L, BH)
        v = vectors[t + 1 : stop].view(-1, L, BH, E)  # (R, L, BH, E)
        if self.K == 1:
            torch.bmm(
                c.permute(2, 0, 1).reshape(BH, 1, -1), v.permute(2, 0, 1, 3).reshape(BH, -1, E), out=out.view(BH, 1, E)
            )
        else:
            torch.bmm(
                c.permute(1, 2, 0).reshape(L * BH, 1, -1),
                v.permute(1, 2, 0, 3).reshape(L * BH, -1, E),
                out=out.view(L * BH, 1, E),
            )

    def _flush_block(self, t0):
        """Adds the key/value gradients from the steps of block [t0, t0 + BLOCK) to kv_acc for every earlier
        memory they can see: one (BH, memories, steps x layers) @ (BH, steps x layers, E) matmul each.

        Such a memory a >= n0 + t0 - S sits at distance <= S + BLOCK - 1 = W from every step of the block.
        """
        T, L, BH, E, K, N = self.T, self.L, self.BH, self.E, self.K, self.N
        stop = min(T, t0 + BLOCK)
        lo, hi = max(0, self.n0 + t0 - self.S), self.n0 + t0
        if hi == lo:
            return
        pairs = ((self.abs_scores, self.queries), (self.abs_dropped, self.d_attended))
        for acc, (coefficients, vectors) in zip(self.kv_acc, pairs):
            c = self.block_scratch[: stop - t0, ..., : hi - lo]
            c.copy_(coefficients[t0:stop, :, :, lo:hi])  # (R, L, BH, A), contiguous rows
            v = vectors[t0:stop].view(-1, L, BH, E)  # (R, L, BH, E)
            if K == 1:  # sum over steps and layers
                acc[0, :, lo:hi].baddbmm_(c.permute(2, 3, 0, 1).flatten(2), v.permute(2, 0, 1, 3).flatten(1, 2))
            else:  # sum over steps, per layer
                acc.view(L * BH, N, E)[:, lo:hi].baddbmm_(
                    c.permute(1, 2, 3, 0).flatten(0, 1), v.permute(1, 2, 0, 3).flatten(0, 1)
                )

    def _ffn_backward(self, t, l, grad):
        """Gradient w.r.t. the FFN's input `mid` given grad (B, D) w.r.t. the layer output."""
        w = self.layers[l]
        _, mean, rstd = self.ff_norm_grid[l][t]
        d_hidden = torch.mm(grad.to(self.matmul_dtype), w.ff_out_weight)  # (B, F)
        # hidden = relu(pre) * noise is > 0 exactly where both pass the gradient.
        d_pre = _threshold_backward(d_hidden, self.hidden_grid[l][t], 0, grad_input=self.d_pre_grid[l][t])
        if self.p > 0:
            d_pre.mul_(1 / (1 - self.p))
        d_normed = into(self.d_ff_normed_grid[l][t], torch.mm, d_pre, w.hidden_weight)  # (B, D)
        d_mid = layer_norm_backward(d_normed, self.mid_grid[l][t], mean, rstd, w.norm_ff_weight)
        return torch.add(d_mid, grad, out=self.d_mid_grid[l][t])

    def _attention_backward(self, t, l, d_mid, keys, values, pos, out):
        """out = gradient w.r.t. the layer input x given d_mid (B, D) w.r.t. x + attention."""
        B, A, BH, E, w = self.B, self.A, self.BH, self.E, self.layers[l]
        _, mean, rstd = self.attn_norm_grid[l][t]
        d_attended = into(self.d_attended_grid[l][t], torch.mm, d_mid.to(self.matmul_dtype), w.attn_out)  # (B, A)
        d_dropped = torch.bmm(d_attended.view(BH, 1, E), values.transpose(1, 2))  # (BH, 1, n)
        if self.p > 0:
            d_dropped.mul_(self.noise_rows[l][t].unsqueeze(1))
        probs = self.prob_rows[l][t].unsqueeze(1)
        if self.span_masks is not None:
            d_dropped, probs = self._span_mask_backward(l, t, d_dropped, probs)
        d_scores = torch._softmax_backward_data(d_dropped, probs, -1, d_dropped.dtype)  # (BH, 1, n)
        self.d_score_rows[l][t].copy_(d_scores.squeeze(1))
        d_queries = torch.mm(d_scores.squeeze(1), pos.t()).unsqueeze(1)  # (BH, 1, E)
        d_queries = into(self.d_query_grid[l][t], torch.baddbmm, d_queries, d_scores, keys.transpose(1, 2))
        d_normed = into(self.d_attn_normed_grid[l][t], torch.mm, d_queries.view(B, A), w.query)
        d_x = layer_norm_backward(d_normed, self.state_grid[l][t], mean, rstd, w.norm_attn_weight)
        torch.add(d_x, d_mid, out=out)

    def _span_mask_backward(self, l, t, d_renormed, renormed):
        """Through p^ = p m / (sum p m + eps): the gradient w.r.t. the softmax p given d_renormed (BH, 1, n)
        w.r.t. p^, and p (BH, 1, n) for the softmax's backward. Adds the masks' share of the span gradient."""
        B, S, n = self.B, self.S, renormed.shape[-1]
        mask = self.span_masks[l][:, S - n :]  # (H, n)
        softmax = self.softmax_rows[l][t].view(B, -1, n)
        grad, renormed = d_renormed.view(B, -1, n), renormed.view(B, -1, n)
        total = (softmax * mask).sum(-1, keepdim=True) + adaptive_span.EPSILON
        d_masked = (grad - (grad * renormed).sum(-1, keepdim=True)) / total  # w.r.t. p m, (B, H, n)
        self.d_span_masks[l][:, S - n :] += (d_masked * softmax).sum(0)
        return (d_masked * mask).view(self.BH, 1, n), softmax.view(self.BH, 1, n)

    def _input_grads(self):
        E = self.E
        layer_grads = [g for l in range(self.L) for g in self._layer_grads(l)]
        d_kv = self.d_kv.permute(1, 2, 4, 0, 3).reshape(2 * self.K * self.A, -1).to(self.matmul_dtype)  # (2 K A, T B)
        d_kv_stack = d_kv @ rows(self.memory_norm[0])  # (2 K A, D)
        d_kv_bias = d_kv.sum(1)
        # Scores' gradients by distance: column W - S + c of a row belongs to pos_keys column c.
        d_pos = rows(self.queries).view(-1, E).t() @ rows(self.d_scores[..., self.W - self.S :])
        d_mix = None
        if self.spec.memory == "all":
            # A matrix-vector product as mm: bf16 mv has no fast kernel on CPU.
            d_weights = torch.mm(self.states.view(self.L + 1, -1), self.d_memories.view(-1, 1)).view(-1)  # (L + 1,)
            d_mix = torch._softmax_backward_data(d_weights, self.mix_weights, 0, d_weights.dtype)
        d_spans = None if self.span_masks is None else (self.d_span_masks * self.span_slopes).sum(-1)  # (L, H)
        d_keys, d_values = self._carried_grads()
        return (self.d_embedded, d_keys, d_values, d_pos, d_mix, d_spans, d_kv_stack, d_kv_bias, *layer_grads)

    def _layer_grads(self, l):
        """Layer l's parameter gradients (LAYER_PARAMETERS order): sums over steps as one matmul each."""
        D, A, F, w = self.D, self.A, self.F, self.layers[l]
        first = 1 if self.n0 == 0 else 0  # the first step of a fresh stream skips attention
        if first < self.T:
            normed, mean, rstd = (b[l, first:].flatten(0, 1) for b in self.attn_norm)  # (T B, .)
            d_normed = self.d_attn_normed[l, first:].view(-1, D)
            x = self.states[l, first:].view(-1, D)
            d_norm_attn = layer_norm_param_grads(d_normed, x, mean, rstd, w.norm_attn_weight, w.norm_attn_bias)
            d_query = torch.mm(self.d_queries[l, first:].view(-1, A).t(), normed)
            d_mids = self.d_mids[l, first:].view(-1, D).to(self.matmul_dtype)
            d_out = torch.mm(d_mids.t(), self.attended[l, first:].view(-1, A))
        else:
            d_norm_attn = (torch.zeros_like(w.norm_attn_weight), torch.zeros_like(w.norm_attn_bias))
            d_query, d_out = torch.zeros_like(w.query), torch.zeros_like(w.attn_out)
        normed, mean, rstd = (b[l].flatten(0, 1) for b in self.ff_norm)
        d_norm_ff = layer_norm_param_grads(
            self.d_ff_normed[l].view(-1, D), self.mids[l].view(-1, D), mean, rstd, w.norm_ff_weight, w.norm_ff_bias
        )
        d_pre, d_outs = self.d_pre[l].view(-1, F), self.d_outs[l].view(-1, D).to(self.matmul_dtype)
        d_hidden = (torch.mm(d_pre.t(), normed), d_pre.sum(0))
        d_ff_out = (torch.mm(d_outs.t(), self.hidden[l].view(-1, F)), d_outs.sum(0))
        return (*d_norm_attn, d_query, d_out, *d_norm_ff, *d_hidden, *d_ff_out)

    def _carried_grads(self):
        """Gradients w.r.t. the carried keys/values (B, n0, A) or (L, B, n0, A), complete after the last flush."""
        K, B, H, n0 = self.K, self.B, self.H, self.n0
        grads = _copy(self.kv_acc[..., :n0, :].unflatten(2, (B, H)).transpose(3, 4)).view(2, K, B, n0, self.A)
        return (grads[0, 0], grads[1, 0]) if K == 1 else (grads[0], grads[1])


class FeedbackSegment(torch.autograd.Function):
    """(spec, embedded (B, T, D), keys, values (B, n0, A) or (L, B, n0, A), pos_keys (E, S),
    mix_logits (L + 1,) or None, span_lengths (L, H) or None, *weights) -> top (B, T, D), memories (B, T, D), new
    keys, new values. span_lengths are the adaptive spans z (in tokens) when spec.ramp is set.

    weights: kv_stack (2 K A, D) and kv_bias (2 K A,), the K key then the K value projections of the
    normalised memory (see segment_weights), then LAYER_PARAMETERS of each layer, the query's pre-scaled.
    """

    @staticmethod
    def forward(ctx, spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, *weights):
        segment = _Segment(spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, weights, save=True)
        segment.forward()
        ctx.segment = segment
        ctx.set_materialize_grads(False)
        # Autograd frees this tensor with the graph's saved tensors: after a backward without retain_graph,
        # or when the graph is dropped. The segment's buffers then go back to the pool.
        freed_with_graph = torch.empty(0)
        ctx.save_for_backward(freed_with_graph)
        weakref.finalize(freed_with_graph, segment.release)
        return segment.outputs()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_top, d_memories, d_keys, d_values):
        _ = ctx.saved_tensors  # raises if the graph was freed by an earlier backward
        # A backward called under autocast must not recast the segment's matmuls: it computes in its own dtypes.
        with torch.autocast(ctx.segment.like.device.type, enabled=False):
            return (None, *ctx.segment.backward(d_top, d_memories, d_keys, d_values))


@torch.compiler.disable  # a hand-scheduled loop with its own backward: torch.compile traces around it
def feedback_segment(spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, weights):
    """Runs one segment's recurrence (see FeedbackSegment); saves nothing when no gradient is needed."""
    tensors = (embedded, keys, values, pos_keys, mix_logits, span_lengths, *weights)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return FeedbackSegment.apply(spec, *tensors)
    with torch.no_grad():
        segment = _Segment(spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, weights, save=False)
        segment.forward()
        return segment.outputs()


@torch.compiler.disable
def segment_in_groups(spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, weights):
    """feedback_segment over consecutive groups of steps, each recomputed in backward (activation
    checkpointing): the forward keeps only each group's inputs, and backward re-runs one group at a time with
    its buffers. The reentrant checkpoint runs the first forward without a graph, so the segment saves no
    buffers then; the new keys/values carry the gradient from group to group."""

    def group_segment(embedded, keys, values, pos_keys, mix_logits, span_lengths, *weights):
        return feedback_segment(spec, embedded, keys, values, pos_keys, mix_logits, span_lengths, list(weights))

    outputs = []
    for part in embedded.split(checkpoint_group(embedded.shape[1]), dim=1):
        top, memories, new_keys, new_values = checkpoint(
            group_segment, part, keys, values, pos_keys, mix_logits, span_lengths, *weights, use_reentrant=True
        )
        outputs.append((top, memories, new_keys, new_values))
        keys = torch.cat([keys, new_keys], dim=-2)[..., -spec.span :, :]
        values = torch.cat([values, new_values], dim=-2)[..., -spec.span :, :]
    top, memories, new_keys, new_values = zip(*outputs, strict=True)
    return torch.cat(top, 1), torch.cat(memories, 1), torch.cat(new_keys, -2), torch.cat(new_values, -2)


def is_matmul_weight(index: int) -> bool:
    """Whether segment_weights()[index] is a matmul operand: kv_stack, kv_bias, a projection or its bias (not a
    LayerNorm parameter)."""
    return index < 2 or "norm" not in LAYER_PARAMETERS[(index - 2) % len(LAYER_PARAMETERS)]


def segment_weights(model) -> list:
    """The weights FeedbackSegment takes, from a FeedbackTransformer.

    A key is W LN(m) = W (g * LN0(m) + b) = (W diag(g)) LN0(m) + W b, with LN0 the norm without its affine map
    (g, b): the segment normalises each memory once, and autograd here carries the gradients of the folded
    weights back to W, g and b."""
    pairs = model.kv_projections()  # K (norm, key, value) triples
    stack = [key.weight * norm.weight for norm, key, _ in pairs] + [
        value.weight * norm.weight for norm, _, value in pairs
    ]
    bias = [key.weight @ norm.bias for norm, key, _ in pairs] + [value.weight @ norm.bias for norm, _, value in pairs]
    # Queries are computed pre-scaled, q~ = (Wq / sqrt(E)) LN(x), so that a score is q~ . (k + p) directly.
    scale = {"query.weight": 1.0 / math.sqrt(model.config.head_width)}
    layers = [
        layer.get_parameter(name) * scale[name] if name in scale else layer.get_parameter(name)
        for layer in model.layers
        for name in LAYER_PARAMETERS
    ]
    return [torch.cat(stack), torch.cat(bias), *layers]


def matmul_operand_dtype(model, device_type: str) -> torch.dtype:
    """bf16 under bf16 autocast (--precision bf16), otherwise the weights' dtype.

    In a bf16 recurrence the projections' weights and activations enter their matmuls in bf16 (accumulated in
    fp32 by the kernel, rounded once); the residual stream, LayerNorm, attention and softmax, and the gradients
    carried along the recurrence stay fp32. The casts of the fp32 master weights carry their gradients back."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return torch.bfloat16
    return model.pos_keys.dtype


# Prepared weights of models running without gradients: model -> (its parameters, their versions, weights).
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# A parameter put in place of another (load_state_dict(assign=True), setattr) makes every kept entry stale.
torch.nn.modules.module.register_module_parameter_registration_hook(lambda *_: _PREPARED.clear())


def prepared_weights(model, matmul_dtype: torch.dtype) -> list:
    """segment_weights with the matmul operands in matmul_dtype. Without gradients they are kept and reused
    while no parameter changes: in place (an optimiser step, load_state_dict), by a new storage (.to(), .data)
    or by replacement. Decoding one token at a time would otherwise fold the memory norms into the K/V weights
    at every token."""

    def prepare():
        return [w.to(matmul_dtype) if is_matmul_weight(i) else w for i, w in enumerate(segment_weights(model))]

    if torch.is_grad_enabled():
        return prepare()

    def version(parameters):
        return (matmul_dtype, *((p.data_ptr(), p._version) for p in parameters))

    kept = _PREPARED.get(model)
    if kept is not None and kept[1] == version(kept[0]):
        return kept[2]
    parameters, weights = list(model.parameters()), prepare()
    _PREPARED[model] = (parameters, version(parameters), weights)
    return weights


def fast_forward(model, tokens: torch.Tensor, state: dict | None = None):
    """FeedbackTransformer.forward with the recurrence run by FeedbackSegment: same logits and state."""
    cfg = model.config
    B, T = tokens.shape
    embedded = model.embed(tokens)  # (B, T, D)
    # With adaptive spans the recurrence reads only the memories within the heads' reach (their masks are 0
    # beyond it), as if the span were that long; the carried state keeps S memories, their keys/values in reach.
    S, reach = cfg.span, adaptive_span.reach(model, cfg.span)
    start = model.start_state(state, B, embedded, reach)
    spec = SegmentSpec(
        heads=cfg.heads,
        span=reach,
        memory=cfg.memory,
        memory_layer=cfg.memory_layer,
        dropout=cfg.dropout if model.training else 0.0,
        eps=model.norm_out.eps,
        ramp=cfg.adaptive_span_ramp if cfg.adaptive_span else 0,
    )
    span_lengths = None
    if cfg.adaptive_span:
        span_lengths = torch.stack([layer.adaptive_span.lengths() for layer in model.layers])  # (L, H)
    mix_logits = model.memory_weights if cfg.memory == "all" else None
    run = segment_in_groups if model.checkpoint_activations and torch.is_grad_enabled() else feedback_segment
    dtype = model.pos_keys.dtype  # the weights' (float64 for gradient checks)
    matmul_dtype = matmul_operand_dtype(model, embedded.device.type)
    weights = prepared_weights(model, matmul_dtype)
    with torch.autocast(embedded.device.type, enabled=False):
        top, memories, keys, values = run(
            spec,
            embedded.to(dtype),
            start["keys"][..., -reach:, :].to(dtype),
            start["values"][..., -reach:, :].to(dtype),
            model.pos_keys[:, S - reach :],
            mix_logits,
            span_lengths,
            weights,
        )
    logits = model.head(model.norm_out(top))  # (B, T, V), in parallel over time
    with torch.no_grad():  # the carried state is detached
        state = {
            "memory": torch.cat([start["memory"], memories], dim=1)[:, -S:],
            "keys": torch.cat([start["keys"], keys], dim=-2)[..., -reach:, :],
            "values": torch.cat([start["values"], values], dim=-2)[..., -reach:, :],
        }
    return logits, state
