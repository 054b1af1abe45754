"""The fused segment recurrence (feedback_segment.py) against autograd: gradcheck of the Function itself, and the
fast model path against the plain autograd loop (`model.fast = False`) in logits, state and every gradient."""

import pytest
import torch
import torch.nn.functional as F

import fbt.models.feedback_segment as segment
from fbt.models import ModelConfig, build_model
from fbt.models.feedback_segment import LAYER_PARAMETERS, FeedbackSegment, SegmentSpec

TINY = dict(model="feedback", vocab_size=11, dim=8, layers=2, heads=2, ff=16, span=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 2 steps, so that short segments cross several blocks of the backward."""
    monkeypatch.setattr(segment, "BLOCK", 2)


def segment_inputs(shared_kv, memory, n0, B=2, T=5, D=8, L=2, H=2, F=16, S=3, E=None, ramp=0):
    """A spec and the segment's inputs; with a ramp, adaptive spans that put some distances inside it."""
    E = E or D // H
    A = H * E  # the width of queries, keys and values
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, std=0.5):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).requires_grad_()

    K = 1 if shared_kv else L
    kv_shape = (B, n0, A) if shared_kv else (L, B, n0, A)
    weights = [randn(2 * K * A, D), randn(2 * K * A)]  # kv_stack, kv_bias
    for _ in range(L):
        shapes = [(D,), (D,), (A, D), (D, A), (D,), (D,), (F, D), (F,), (D, F), (D,)]
        layer = [randn(*shape) for shape in shapes]
        with torch.no_grad():  # LayerNorm weights around 1
            layer[0].add_(1.0)
            layer[4].add_(1.0)
        weights += layer
    mix_logits = randn(L + 1) if memory == "all" else None
    spans = None
    if ramp:  # spans between 0 and S, off the kinks of the mask (at integer distances)
        spans = (torch.rand(L, H, generator=gen, dtype=torch.float64) * S + 0.37).requires_grad_()
    spec = SegmentSpec(heads=H, span=S, memory=memory, memory_layer=1, dropout=0.0, eps=1e-5, ramp=ramp)
    embedded, pos_keys = randn(B, T, D, std=1.0), randn(E, S)
    return spec, [embedded, randn(*kv_shape), randn(*kv_shape), pos_keys, mix_logits, spans, *weights]


@pytest.mark.parametrize("n0", [0, 2])
@pytest.mark.parametrize("memory", ["all", "top", "layer"])
@pytest.mark.parametrize("shared_kv", [True, False], ids=["shared", "per-layer"])
def test_gradcheck(shared_kv, memory, n0, small_blocks):
    spec, inputs = segment_inputs(shared_kv, memory, n0)
    assert len(inputs) == 6 + 2 + 2 * len(LAYER_PARAMETERS)
    assert torch.autograd.gradcheck(
        lambda *x: FeedbackSegment.apply(spec, *x), inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True
    )


def test_gradcheck_full_jacobian_with_carried_memory(small_blocks):
    spec, inputs = segment_inputs(True, "all", 2, B=1, T=4, D=4, F=8)
    assert torch.autograd.gradcheck(lambda *x: FeedbackSegment.apply(spec, *x), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("n0", [0, 2])
@pytest.mark.parametrize("shared_kv", [True, False], ids=["shared", "per-layer"])
def test_gradcheck_with_adaptive_spans(shared_kv, n0, small_blocks):
    spec, inputs = segment_inputs(shared_kv, "all", n0, S=5, ramp=2)
    assert torch.autograd.gradcheck(
        lambda *x: FeedbackSegment.apply(spec, *x), inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True
    )


@pytest.mark.parametrize("shared_kv", [True, False], ids=["shared", "per-layer"])
def test_gradcheck_with_heads_apart_from_the_width(shared_kv, small_blocks):
    spec, inputs = segment_inputs(shared_kv, "all", 2, D=6, E=5)  # H·E = 10 queries/keys/values from D = 6
    assert torch.autograd.gradcheck(
        lambda *x: FeedbackSegment.apply(spec, *x), inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True
    )


def make(dtype=torch.float64, spread=0.3, **overrides):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, **overrides})).to(dtype)
    with torch.no_grad():  # larger weights than the init, so attention and mixing matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * spread)
    return model


def train_two_segments(model, fast, tokens, more, targets, seed=0):
    """Loss over two segments with the (detached) state carried, as in training; returns everything compared."""
    model.fast = fast
    torch.manual_seed(seed)  # dropout masks
    logits, state = model(tokens)
    logits2, state2 = model(more, state)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) + logits2.square().mean()
    model.zero_grad(set_to_none=True)
    loss.backward()  # not autograd.grad: checkpointed segments recompute through a reentrant backward
    return logits, logits2, state2, loss, [p.grad for p in model.parameters()]


def assert_paths_agree(model, rtol, atol, B=3, T=20, T2=11, seed=0):
    V, device = model.config.vocab_size, model.pos_keys.device
    gen = torch.Generator().manual_seed(1)
    tokens, targets = torch.randint(0, V, (2, B, T), generator=gen).to(device)
    more = torch.randint(0, V, (B, T2), generator=gen).to(device)
    fast = train_two_segments(model, True, tokens, more, targets, seed)
    ref = train_two_segments(model, False, tokens, more, targets, seed)
    torch.testing.assert_close(fast[0], ref[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(fast[1], ref[1], rtol=rtol, atol=atol)
    for name in ref[2]:
        torch.testing.assert_close(fast[2][name], ref[2][name], rtol=rtol, atol=atol, msg=f"state {name}")
    torch.testing.assert_close(fast[3], ref[3], rtol=rtol, atol=atol)
    for (name, _), grad, expected in zip(model.named_parameters(), fast[4], ref[4]):
        torch.testing.assert_close(grad, expected, rtol=rtol, atol=atol, msg=f"gradient of {name}")


VARIANTS = [
    dict(),
    dict(shared_kv=False),
    dict(memory="top"),
    dict(memory="layer", memory_layer=1),
    dict(memory="layer", memory_layer=0, span=1),
    dict(span=12),
    dict(span=30, shared_kv=False),
    dict(head_dim=3),
    dict(head_dim=7, shared_kv=False, memory="top"),
    # Spans of about 5 of 12 (init plus make()'s noise), a ramp of 3: the reach trims the window.
    dict(span=12, adaptive_span=True, adaptive_span_ramp=3, adaptive_span_init=0.4),
    dict(span=12, adaptive_span=True, adaptive_span_ramp=3, adaptive_span_init=0.4, shared_kv=False),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_fast_path_matches_autograd_loop_float64(variant):
    # T = 20 crosses two blocks of the backward; spans 1, 3 and 12 are shorter than the segment.
    assert_paths_agree(make(**variant), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", [dict(), dict(shared_kv=False, memory="top")], ids=["default", "per-layer,top"])
def test_fast_path_matches_autograd_loop_float32(variant):
    # Moderate weights: with large ones the recurrence amplifies float32 rounding in either path alike.
    assert_paths_agree(make(torch.float32, spread=0.05, **variant, dim=16, ff=32, span=8), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", [dict(), dict(shared_kv=False, span=30)], ids=["default", "per-layer,span30"])
def test_dropout_masks_are_drawn_as_the_autograd_loop_draws_them(variant):
    # Both paths draw every mask from torch's RNG in the same order and shapes, so with one seed they apply
    # the same masks: the fast path is exact with dropout too.
    model = make(**variant, dropout=0.3).train()
    assert_paths_agree(model, rtol=1e-9, atol=1e-11, seed=5)
    # And the masks are really there: another seed changes the loss.
    V = model.config.vocab_size
    tokens, targets = torch.randint(0, V, (2, 3, 20), generator=torch.Generator().manual_seed(1))
    more = torch.randint(0, V, (3, 11))
    assert (
        train_two_segments(model, True, tokens, more, targets, 5)[3]
        != train_two_segments(model, True, tokens, more, targets, 6)[3]
    )


def test_segments_reuse_buffers_without_stale_values():
    # The second backward reuses the first one's pooled buffers; a stale value would change its gradients.
    model = make(span=5)
    tokens = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(4))
    first = torch.autograd.grad(model(tokens)[0].square().mean(), list(model.parameters()))
    again = torch.autograd.grad(model(tokens)[0].square().mean(), list(model.parameters()))
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_free_buffers_empties_the_pool():
    model = make()
    model(torch.randint(0, 11, (2, 6)))[0].sum().backward()
    assert segment._POOL.free
    segment.free_buffers()
    assert not segment._POOL.free


def test_second_backward_through_a_freed_graph_raises():
    # The saved activations go back to the pool after a backward; a second one must not read them.
    spec, inputs = segment_inputs(True, "all", 2)
    top = FeedbackSegment.apply(spec, *inputs)[0].sum()  # sum saves nothing: the error comes from the segment
    top.backward()
    with pytest.raises(RuntimeError, match="second time"):
        top.backward()


def bf16_error(model, fast, tokens, more, targets, checkpoint=False):
    """Largest relative error, over the loss and every gradient tensor (by norm), of a bf16 run against fp32."""
    model.checkpoint_activations = checkpoint
    reference = train_two_segments(model, True, tokens, more, targets)
    with torch.autocast("cpu", torch.bfloat16):
        half = train_two_segments(model, fast, tokens, more, targets)
    assert half[0].dtype == torch.bfloat16  # autocast reached the model
    errors = [abs(half[3].item() - reference[3].item()) / abs(reference[3].item())]
    for grad, expected in zip(half[4], reference[4]):
        assert grad.dtype == torch.float32  # the master weights' gradients
        errors.append(((grad - expected).norm() / expected.norm().clamp_min(1e-6)).item())
    return max(errors)


BF16_VARIANTS = [dict(), dict(shared_kv=False, memory="top"), dict(dropout=0.2), dict(checkpoint=True)]


@pytest.mark.parametrize(
    "variant", BF16_VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default"
)
def test_bf16_recurrence_is_as_close_to_fp32_as_the_autocast_loop(variant, monkeypatch):
    # Under bf16 autocast the fused segment's projections take bf16 operands; the residual stream, LayerNorm,
    # attention and the gradients along the recurrence stay fp32, as in the autograd loop under autocast.
    # Stated tolerance: the loss and every gradient within 10% of fp32 (as for every family under autocast),
    # and within 3x the autograd loop's own distance from fp32 (over seeds the two are alike: 2-6% here).
    variant = dict(variant)
    checkpoint = variant.pop("checkpoint", False)
    model = make(torch.float32, spread=0.05, dim=32, ff=64, span=8, heads=4, **variant).train()
    V = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    tokens, targets = torch.randint(0, V, (2, 4, 20), generator=gen)
    more = torch.randint(0, V, (4, 11), generator=gen)
    seen = []  # (residual, matmul) dtypes of every segment run
    run = segment._Segment.forward
    monkeypatch.setattr(
        segment._Segment, "forward", lambda self: seen.append((self.dtype, self.matmul_dtype)) or run(self)
    )
    fast = bf16_error(model, True, tokens, more, targets, checkpoint)
    assert set(seen) == {(torch.float32, torch.float32), (torch.float32, torch.bfloat16)}  # the fp32 reference too
    plain = bf16_error(model, False, tokens, more, targets)
    assert fast <= 0.1
    assert fast <= 3 * plain
