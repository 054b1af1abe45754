"""Activation checkpointing recomputes instead of storing, and changes nothing else: the same logits, state
and gradients for every model family."""

import pytest
import torch
from families import FAMILIES

from fbt.data.translation import TranslationBatch
from fbt.models import ModelConfig, build_model
from fbt.models import feedback_segment as segment_module
from fbt.models.layers import set_activation_checkpointing

SIZES = dict(dim=32, layers=2, heads=2, ff=64, span=6, context=24, vocab_size=40)
CASES = {
    **{name: dict(model=name) for name in FAMILIES},  # seq2seq with its default, feedback decoder
    "feedback per-layer kv, top memory": dict(model="feedback", shared_kv=False, memory="top"),
    "seq2seq transformer decoder": dict(model="seq2seq", decoder="transformer"),
}


def count_recomputation(model, monkeypatch) -> list[int]:
    """A counter of forwards of one checkpointed piece (a layer, the LSTM, or a feedback segment)."""
    calls = [0]
    if model.config.model == "feedback":
        original = segment_module._Segment.forward

        def counted(self):
            calls[0] += 1
            return original(self)

        monkeypatch.setattr(segment_module._Segment, "forward", counted)
        return calls
    piece = {"lstm": lambda m: m.lstm, "seq2seq": lambda m: m.decoder.layers[0]}.get(
        model.config.model, lambda m: m.layers[0]
    )(model)
    piece.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def loss_and_grads(model, inputs, state):
    model.zero_grad(set_to_none=True)
    logits, new_state = model(inputs, state)
    (logits.square().mean() + logits[..., 0].sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), new_state, grads


@pytest.mark.parametrize("case", CASES)
def test_checkpointing_gives_identical_results(case, monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SIZES, **CASES[case])).train()
    T = 17  # groups of ceil(sqrt(T)) = 5 steps: the last group is shorter
    if model.translates:
        inputs = TranslationBatch(torch.randint(3, 40, (3, 9)), torch.randint(3, 40, (3, T)))
        state = None
    else:
        inputs = torch.randint(0, 40, (3, T))
        with torch.no_grad():  # a carried state, so the first groups read memories of an earlier segment
            _, state = model(torch.randint(0, 40, (3, 8)))
    calls = count_recomputation(model, monkeypatch)
    plain = loss_and_grads(model, inputs, state)
    plain_calls = calls[0]
    set_activation_checkpointing(model, True)
    checkpointed = loss_and_grads(model, inputs, state)
    assert calls[0] - plain_calls > plain_calls, "nothing was recomputed"
    torch.testing.assert_close(checkpointed[0], plain[0], rtol=1e-5, atol=1e-6)
    if state is not None:
        for name in state:
            torch.testing.assert_close(checkpointed[1][name], plain[1][name], rtol=1e-5, atol=1e-6)
    assert checkpointed[2].keys() == plain[2].keys()
    for name, grad in plain[2].items():
        torch.testing.assert_close(checkpointed[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_feedback_dropout_masks_are_recomputed_exactly():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SIZES, model="feedback", dropout=0.3)).train()
    inputs = torch.randint(0, 40, (2, 11))
    results = []
    for enabled in (False, True):
        set_activation_checkpointing(model, enabled)
        torch.manual_seed(1)
        results.append(loss_and_grads(model, inputs, None))
    torch.testing.assert_close(results[1][0], results[0][0])
    for name, grad in results[0][2].items():
        torch.testing.assert_close(results[1][2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
