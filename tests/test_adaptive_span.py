"""Adaptive attention spans (models/adaptive_span.py) in the feedback model and Transformer-XL: the mask against a
hand computation, the span gradients against finite differences, the span loss, trimming the memory to the
heads' reach, the clamp after an update, and a training run that logs and shows the learned spans. The
feedback model's naive reference, fast path and decoding run with adaptive spans in test_feedback.py and
test_feedback_segment.py, Transformer-XL's in test_baselines.py."""

import json

import pytest
import torch
from torch.func import functional_call

import fbt.models.adaptive_span as adaptive_span
from fbt.cli import main
from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model
from fbt.presets import SHAKESPEARE as CORPUS
from fbt.runs import show_run

MODELS = ("feedback", "transformer-xl")
TINY = dict(vocab_size=11, dim=8, layers=2, heads=2, ff=16, span=12, adaptive_span=True, adaptive_span_ramp=3)


def make(name, ratios=((0.21, 0.43), (0.13, 0.32)), **overrides):
    """A float64 model whose heads have the given span ratios (spans 2.5, 5.2, 1.6 and 3.8 of 12 tokens)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=name, **{**TINY, **overrides})).double()
    with torch.no_grad():
        for layer, ratio in zip(model.layers, ratios, strict=True):
            layer.adaptive_span.ratio.copy_(torch.tensor(ratio, dtype=torch.float64))
    return model


def tokens(length=20, seed=1):
    return torch.randint(0, 11, (2, length), generator=torch.Generator().manual_seed(seed))


def test_mask_values_at_inside_and_beyond_the_ramp():
    # m(d) = clamp((z + 1 - d) / R + 1, 0, 1): 1 up to z + 1, a linear ramp of R, then 0.
    distances = torch.arange(1, 9, dtype=torch.float64)
    mask = adaptive_span.span_mask(torch.tensor([3.0, 2.5], dtype=torch.float64), distances, ramp=2)
    expected = [
        [1, 1, 1, 1, 0.5, 0, 0, 0],  # z = 3: distance 4 = z + 1 is the last full one, 6 = z + 1 + R the first 0
        [1, 1, 1, 0.75, 0.25, 0, 0, 0],
    ]
    torch.testing.assert_close(mask, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_reach_is_the_furthest_distance_with_a_nonzero_mask():
    span = adaptive_span.AdaptiveSpan(heads=2, span=12, ramp=2, init=0.0)
    with torch.no_grad():
        span.ratio.copy_(torch.tensor([2.5 / 12, 0.1]))  # spans 2.5 and 1.2 tokens
    assert span.reach() == 5  # 2.5 + 2, rounded up: the mask is 0.25 at distance 5 and 0 at 6
    mask = span.mask(torch.arange(1, 13))
    assert mask[:, 4].max() > 0 and mask[:, 5:].max() == 0
    with torch.no_grad():
        span.ratio.fill_(1.0)
    assert span.reach() == 12  # never beyond the span


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("name", MODELS)
def test_span_gradients_equal_finite_differences(name, fast):
    model = make(name)
    model.fast = fast
    names = [f"layers.{index}.adaptive_span.ratio" for index in range(2)]
    ratios = tuple(model.get_parameter(n).detach().clone().requires_grad_() for n in names)
    batch = tokens()

    def loss(*values):
        logits, _ = functional_call(model, dict(zip(names, values, strict=True)), (batch,))
        return logits.square().mean()

    assert torch.autograd.gradcheck(loss, ratios, eps=1e-6, atol=1e-8, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_span_loss_is_the_coefficient_times_the_mean_span_of_each_layer(name):
    model = make(name, adaptive_span_loss=1e-3)
    # Mean spans 12 * (0.21 + 0.43) / 2 and 12 * (0.13 + 0.32) / 2 tokens.
    expected = 1e-3 * (12 * 0.32 + 12 * 0.225)
    torch.testing.assert_close(model.auxiliary_loss(), torch.tensor(expected, dtype=torch.float64))
    assert make(name).auxiliary_loss() is None  # coefficient 0


@pytest.mark.parametrize("name", MODELS)
def test_trimming_to_the_reach_changes_no_logit(name, monkeypatch):
    model = make(name).eval()
    assert adaptive_span.reach(model, 12) == 9  # ceil(5.2 + 3) of 12: the last 3 distances are not read
    batch, more = tokens(), tokens(7, seed=2)
    trimmed, state = model(batch)
    trimmed_more, _ = model(more, state)
    monkeypatch.setattr(adaptive_span, "reach", lambda model, span: span)
    full, state = model(batch)
    full_more, _ = model(more, state)
    # Equal up to the renormalisation's 1e-8, relative to the masked softmax's sum, which trimming changes.
    torch.testing.assert_close(trimmed, full, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(trimmed_more, full_more, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_after_update_clamps_the_ratios_to_the_span(name):
    model = make(name, ratios=((-0.4, 0.5), (1.7, 0.9)))
    model.after_update()
    assert model.layers[0].adaptive_span.ratio.tolist() == [0.0, 0.5]
    assert model.layers[1].adaptive_span.ratio.tolist() == [1.0, 0.9]


def test_adaptive_span_is_refused_where_a_family_has_none():
    with pytest.raises(FbtError, match="gpt has no adaptive span"):
        ModelConfig(model="gpt", adaptive_span=True)
    with pytest.raises(FbtError, match="adaptive_span_init is a ratio"):
        ModelConfig(adaptive_span=True, adaptive_span_init=1.5)


@pytest.mark.parametrize("name", MODELS)
def test_a_run_with_adaptive_spans_logs_and_shows_them(name, tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--model", name, "--dim", "16", "--layers", "2", "--heads", "2", "--ff", "32", "--span", "40"]
    spans = ["--adaptive-span", "--adaptive-span-ramp", "4", "--adaptive-span-init", "0"]
    steps = ["--batch", "4", "--segment", "16", "--steps", "3", "--warmup", "0", "--log-every", "1", "--lr", "0.05"]
    # A span loss large enough that every update pulls the spans below 0: the clamp must hold them there.
    code = main(
        ["train", "--data", str(CORPUS), *flags, *spans, "--adaptive-span-loss", "10", *steps, "--out", str(run)]
    )
    assert code == 0
    capsys.readouterr()
    diagnostics = show_run(run)["diagnostics"]
    assert diagnostics["span_max"] == 0.0 and diagnostics["spans"] == "0 0 | 0 0"
    assert json.loads((run / "config.json").read_text())["model"]["adaptive_span"] is True


@pytest.mark.parametrize("name", MODELS)
def test_the_state_keeps_keys_and_values_only_within_reach(name):
    model = make(name).eval()  # reach 9 of the span of 12
    batch, more = tokens(), tokens(6, seed=2)
    _, state = model(batch)
    carried = state["memory" if name == "feedback" else "hidden"]
    assert carried.shape[-2] == 12 and state["keys"].shape[-2] == state["values"].shape[-2] == 9
    # Spans that grow past the keys the state holds: the next forward projects the memories it now reads, as a
    # training forward (dropout 0) projects every memory within reach from the carried ones.
    with torch.no_grad():
        model.layers[1].adaptive_span.ratio.fill_(0.8)  # reach 12
        continued, next_state = model(more, state)
        expected, _ = model.train()(more, state)
    assert next_state["keys"].shape[-2] == 12
    torch.testing.assert_close(continued, expected, rtol=1e-10, atol=1e-10)
