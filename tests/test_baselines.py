"""The properties every language model family shares, and parity tests for the baselines: Transformer-XL, GPT
and the LSTM.

Every language model must give the same logits token by token with its state as in one forward, the same over
segments with carried state as over one long segment, never let a future token change an earlier logit,
return a detached state, and pass gradients to every parameter. Transformer-XL is also checked against a
naive per-query reference, and GPT past its context against nanoGPT's crop-the-window decoding.
Equality tests run in float64 with dropout off (atol 1e-10).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from families import LANGUAGE_MODELS

from fbt.errors import FbtError
from fbt.models import build_model, state_nbytes
from fbt.models.adaptive_span import reach
from fbt.models.config import ModelConfig
from fbt.models.transformer_xl import TransformerXL

TINY = {"vocab_size": 11, "dim": 16, "layers": 2, "heads": 2, "ff": 32, "span": 5, "context": 16}
ATOL = 1e-10
# Heads of width dim / heads, and heads of their own width (H·E = 6 queries/keys/values from D = 16).
HEAD_WIDTHS = pytest.mark.parametrize("heads", [{}, {"head_dim": 3}], ids=["E=D/H", "E=3"])


def make(name: str, **overrides) -> torch.nn.Module:
    """A tiny float64 model in eval mode, initialised from a fixed seed."""
    torch.manual_seed(0)
    config = ModelConfig(model=name, **{**TINY, **overrides})
    return build_model(config).double().eval()


def random_tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=generator)


def run_segments(model: torch.nn.Module, tokens: torch.Tensor, lengths: list[int]):
    """Logits (B, T, V) of `tokens` fed as consecutive segments of the given lengths, state carried."""
    assert sum(lengths) == tokens.shape[1]
    state, logits, start = None, [], 0
    for length in lengths:
        segment_logits, state = model(tokens[:, start : start + length], state)
        logits.append(segment_logits)
        start += length
    return torch.cat(logits, dim=1), state


# ---- properties every model shares ----


@HEAD_WIDTHS
@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_token_by_token_matches_one_forward(name, heads):
    model = make(name, **heads)
    tokens = random_tokens(2, 12)  # longer than the XL span (5), within the GPT context (16)
    with torch.no_grad():
        full, _ = model(tokens)
        stepped, _ = run_segments(model, tokens, [1] * 12)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["feedback", "transformer-xl"])
def test_adaptive_spans_decode_token_by_token_and_over_segments_as_one_forward(name):
    model = with_spans(make(name, **ADAPTIVE))
    tokens = random_tokens(2, 14)
    with torch.no_grad():
        full, _ = model(tokens)
        stepped, _ = run_segments(model, tokens, [1] * 14)
        split, _ = run_segments(model, tokens, [3, 7, 2, 2])
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(split, full, atol=ATOL, rtol=0)


@HEAD_WIDTHS
@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_carried_state_matches_one_long_segment(name, heads):
    model = make(name, **heads)
    tokens = random_tokens(2, 14)
    with torch.no_grad():
        full, _ = model(tokens)
        # Segments shorter and longer than the XL span; 14 tokens fit in the GPT context.
        split, _ = run_segments(model, tokens, [3, 7, 2, 2])
    torch.testing.assert_close(split, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_future_tokens_do_not_change_earlier_logits(name):
    model = make(name)
    tokens = random_tokens(2, 12)
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        before, _ = model(tokens)
        after, _ = model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=0, rtol=0)
    assert not torch.allclose(after[:, 7:], before[:, 7:])  # the change is seen from position 7 on


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_state_is_detached(name):
    model = make(name).train()
    tokens = random_tokens(2, 12)
    _, state = run_segments(model, tokens, [6, 6])
    for key, value in state.items():
        assert not value.requires_grad and value.grad_fn is None, key


@HEAD_WIDTHS
@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_gradients_reach_every_parameter(name, heads):
    model = make(name, **heads, dropout=0.1).train()
    tokens = random_tokens(2, 12)
    _, state = model(tokens[:, :4])
    logits, _ = model(tokens[:, 4:], state)  # a segment that reads a carried state
    targets = random_tokens(2, 8, seed=2)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, key
        assert torch.isfinite(parameter.grad).all(), key
        assert parameter.grad.abs().sum() > 0, key


def test_feedback_cache_is_one_layer_th_of_the_transformer_xl_cache():
    # Same width and span; feedback shares one memory (and its K/V) across layers, XL caches every layer.
    sizes = dict(vocab_size=11, dim=16, layers=4, heads=2, ff=32, span=5)
    tokens = random_tokens(2, 12)
    _, feedback_state = build_model(ModelConfig(model="feedback", **sizes)).eval()(tokens)
    _, xl_state = build_model(ModelConfig(model="transformer-xl", **sizes)).eval()(tokens)
    assert state_nbytes(None) == 0
    assert state_nbytes(xl_state) == 4 * state_nbytes(feedback_state) > 0


# ---- Transformer-XL ----


def naive_xl(model: TransformerXL, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of a fresh stream, one query and one head at a time, over the previous S inputs of its layer
    (and its own with attend_self); a query that sees nothing adds nothing."""
    S, H, E = model.config.span, model.config.heads, model.config.head_width
    T = tokens.shape[1]
    x = model.embed(tokens)  # (B, T, D)
    for layer in model.layers:
        normed = layer.norm_attn(x)
        q, k, v = layer.query(normed), layer.key(normed), layer.value(normed)
        attended = x.new_zeros(*x.shape[:2], H * E)  # (B, T, A)
        for t in range(T):
            # Within the heads' reach, as the model (adaptive spans' masks are 0 further back, and trimming
            # changes a logit only through the renormalisation's 1e-8).
            visible = range(max(0, t - reach(model, S)), t + 1 if model.config.attend_self else t)
            for h in range(H):
                if not visible:
                    continue
                cols = slice(h * E, (h + 1) * E)
                # Distance d = t - j uses column S - d of pos_keys.
                keys = [k[:, j, cols] + model.pos_keys[:, S - (t - j)] for j in visible]
                scores = torch.stack([(q[:, t, cols] * key).sum(-1) for key in keys], dim=-1)  # (B, visible)
                scores = scores / math.sqrt(E)
                probs = torch.softmax(scores, dim=-1)
                if model.config.adaptive_span:  # the span mask at each key's distance t - j, renormalised
                    z, R = layer.adaptive_span.ratio[h] * S, model.config.adaptive_span_ramp
                    mask = torch.stack([torch.clamp((z + 1 - (t - j)) / R + 1, 0, 1) for j in visible])
                    probs = probs * mask / ((probs * mask).sum(-1, keepdim=True) + 1e-8)
                attended[:, t, cols] = sum(probs[:, i, None] * v[:, j, cols] for i, j in enumerate(visible))
        x = x + layer.out(attended)
        x = x + layer.ff(layer.norm_ff(x))
    return model.head(model.norm_out(x))


# Spans of 0.6 and 1.9 of the 5 positions, a ramp of 2: distances inside and beyond the ramp, a reach of 4.
ADAPTIVE = {"adaptive_span": True, "adaptive_span_ramp": 2}
ADAPTIVE_RATIOS = (0.12, 0.38)


def with_spans(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for layer in model.layers:
            layer.adaptive_span.ratio.copy_(torch.tensor(ADAPTIVE_RATIOS, dtype=torch.float64))
    return model


@pytest.mark.parametrize("heads", [{}, {"head_dim": 3}, ADAPTIVE], ids=["E=D/H", "E=3", "adaptive-span"])
@pytest.mark.parametrize("attend_self", [False, True], ids=["paper", "attend-self"])
def test_transformer_xl_matches_naive_reference(attend_self, heads):
    model = make("transformer-xl", attend_self=attend_self, **heads)
    if heads == ADAPTIVE:
        with_spans(model)
    with torch.no_grad():
        model.pos_keys.normal_()  # make positions matter, so a wrong distance shows
    tokens = random_tokens(2, 14)
    with torch.no_grad():
        reference = naive_xl(model, tokens)
        full, _ = model(tokens)
        split, _ = run_segments(model, tokens, [4, 1, 6, 3])
    torch.testing.assert_close(full, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(split, reference, atol=ATOL, rtol=0)


def test_transformer_xl_training_recomputes_cached_keys():
    """After an update, a training forward rebuilds keys/values from the cached hidden states with the new
    weights; an evaluation forward reuses the cached ones. The reference projects the cached hidden states
    itself, so removing the recomputation fails."""
    model = make("transformer-xl", span=7)
    tokens = random_tokens(2, 12)
    with torch.no_grad():
        _, state = model(tokens[:, :5])
        for layer in model.layers:  # an optimiser step on the key/value side
            layer.key.weight.add_(0.5 * torch.randn_like(layer.key.weight))
            layer.value.weight.add_(0.5 * torch.randn_like(layer.value.weight))
        projected = [layer.project(hidden) for layer, hidden in zip(model.layers, state["hidden"])]
        keys, values = (torch.stack(kv) for kv in zip(*projected))
        expected, _ = model(tokens[:, 5:], {**state, "keys": keys, "values": values})  # eval: uses these
        model.train()  # dropout is 0: only the cache path differs
        recomputed, _ = model(tokens[:, 5:], state)
        model.eval()
        stale, _ = model(tokens[:, 5:], state)
    torch.testing.assert_close(recomputed, expected, atol=ATOL, rtol=0)
    assert not torch.allclose(stale, expected, atol=1e-6)


def test_transformer_xl_state_holds_the_last_span_positions():
    model = make("transformer-xl")
    cfg = model.config
    _, state = model(random_tokens(2, 3))
    assert state["hidden"].shape == (cfg.layers, 2, 3, cfg.dim)
    _, state = model(random_tokens(2, 4), state)
    assert state["hidden"].shape == (cfg.layers, 2, cfg.span, cfg.dim)
    assert state["keys"].shape == state["values"].shape == (cfg.layers, 2, cfg.heads, cfg.span, cfg.head_width)


# ---- GPT past its context ----


def test_gpt_decoding_past_the_context_crops_the_window():
    """Token by token, each step is a fresh forward over the last `context` tokens (nanoGPT's generate)."""
    model = make("gpt", context=6)
    tokens = random_tokens(2, 15)
    with torch.no_grad():
        stepped, state = run_segments(model, tokens, [1] * 15)
        cropped = torch.stack([model(tokens[:, max(0, t - 5) : t + 1])[0][:, -1] for t in range(15)], dim=1)
    torch.testing.assert_close(stepped, cropped, atol=ATOL, rtol=0)
    assert state["tokens"].shape == (2, 6)


def test_gpt_segment_past_the_context_reencodes_the_window():
    model = make("gpt", context=8)
    tokens = random_tokens(2, 11)
    with torch.no_grad():
        _, state = model(tokens[:, :6])
        logits, state = model(tokens[:, 6:], state)  # 6 + 5 > 8: the window is tokens 3..10
        fresh, _ = model(tokens[:, 3:])
    torch.testing.assert_close(logits, fresh[:, -5:], atol=ATOL, rtol=0)
    torch.testing.assert_close(state["tokens"], tokens[:, 3:], atol=0, rtol=0)


def test_gpt_rejects_more_tokens_than_its_context():
    model = make("gpt", context=8)
    with pytest.raises(FbtError, match="context"):
        model(random_tokens(1, 9))
