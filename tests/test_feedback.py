"""The Feedback Transformer against a deliberately naive reference, and its decoding/causality invariants."""

import math

import pytest
import torch
import torch.nn.functional as F

from fbt.models import ModelConfig, build_model
from fbt.models.adaptive_span import reach

TINY = dict(model="feedback", vocab_size=11, dim=8, layers=2, heads=2, ff=16, span=3)


def make(**overrides):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, **overrides})).double()
    with torch.no_grad():  # non-zero mix weights so that a wrong layer order would show
        if hasattr(model, "memory_weights"):
            model.memory_weights.normal_()
        for name, parameter in model.named_parameters():  # LayerNorms away from (1, 0), so that a lost one shows
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def naive_logits(model, tokens, memories=None):
    """Plain loops over steps, layers, heads and memories; memories is a list of (B, D) tensors."""
    cfg = model.config
    H, S = cfg.heads, cfg.span
    E = cfg.head_width  # D / H unless set apart
    memories = list(memories or [])
    tops = []
    for t in range(tokens.shape[1]):
        x = model.embed.weight[tokens[:, t]]
        states = [x]
        # As the model, read the memories within reach of the heads' adaptive spans (the masks are 0 further
        # back; trimming changes a logit only through the renormalisation's 1e-8).
        visible = memories[-reach(model, S) :]
        for layer in model.layers:
            key_weight = model.key.weight if cfg.shared_kv else layer.key.weight
            value_weight = model.value.weight if cfg.shared_kv else layer.value.weight
            # The memory is normalised before K/V: by the layer's attention norm, or by one shared norm.
            memory_norm = model.norm_memory if cfg.shared_kv else layer.norm_attn
            if visible:
                q = layer_norm(x, layer.norm_attn) @ layer.query.weight.T
                heads = []
                for h in range(H):
                    cols = slice(h * E, (h + 1) * E)
                    scores = []
                    for j, memory in enumerate(visible):
                        distance = len(visible) - j  # 1 is the previous step
                        key = (layer_norm(memory, memory_norm) @ key_weight.T)[:, cols]
                        position = model.pos_keys[:, S - distance]
                        scores.append(((q[:, cols] * key).sum(-1) + (q[:, cols] * position).sum(-1)) / math.sqrt(E))
                    weights = torch.softmax(torch.stack(scores, -1), -1)
                    if cfg.adaptive_span:  # distance d = len(visible) - j, the mask's ramp written out
                        z = layer.adaptive_span.ratio[h] * S
                        R = cfg.adaptive_span_ramp
                        mask = torch.stack(
                            [torch.clamp((z + 1 - (len(visible) - j)) / R + 1, 0, 1) for j in range(len(visible))]
                        )
                        weights = weights * mask / ((weights * mask).sum(-1, keepdim=True) + 1e-8)
                    heads.append(
                        sum(
                            weights[:, j : j + 1] * (layer_norm(m, memory_norm) @ value_weight.T)[:, cols]
                            for j, m in enumerate(visible)
                        )
                    )
                x = x + torch.cat(heads, -1) @ layer.out.weight.T
            hidden = torch.relu(layer_norm(x, layer.norm_ff) @ layer.ff.hidden.weight.T + layer.ff.hidden.bias)
            x = x + hidden @ layer.ff.out.weight.T + layer.ff.out.bias
            states.append(x)
        if cfg.memory == "all":
            mix = torch.softmax(model.memory_weights, 0)
            memory = sum(mix[i] * s for i, s in enumerate(states))
        elif cfg.memory == "top":
            memory = states[-1]
        else:
            memory = states[cfg.memory_layer]
        memories.append(memory)
        tops.append(x)
    logits = layer_norm(torch.stack(tops, 1), model.norm_out) @ model.head.weight.T
    return logits, memories


# Spans of about 3 of 8 (init 0.4 plus make()'s noise on every parameter) and a ramp of 2: some distances fall
# inside the ramp, some beyond it, where the reach trims the window.
ADAPTIVE = dict(span=8, adaptive_span=True, adaptive_span_ramp=2, adaptive_span_init=0.4)
VARIANTS = [
    dict(),
    dict(shared_kv=False),
    dict(memory="top"),
    dict(memory="layer", memory_layer=1),
    dict(memory="layer", memory_layer=0, span=1),
    dict(span=8),
    dict(head_dim=3),  # H·E = 6 apart from D = 8
    dict(head_dim=5, shared_kv=False),
    ADAPTIVE,
    dict(ADAPTIVE, shared_kv=False, memory="top"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_matches_naive_reference_in_loss_and_every_gradient(variant):
    model = make(**variant)
    tokens = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(2))
    more = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(3))

    # Two segments with carried (detached) memory, as in training.
    logits, state = model(tokens)
    logits2, _ = model(more, state)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) + logits2.square().mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))

    ref_logits, memories = naive_logits(model, tokens)
    ref_logits2, _ = naive_logits(model, more, [m.detach() for m in memories])
    ref_loss = F.cross_entropy(ref_logits.flatten(0, 1), targets.flatten()) + ref_logits2.square().mean()
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))

    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits2, ref_logits2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)
    for (name, _), grad, ref in zip(model.named_parameters(), grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


def test_first_step_has_no_memory_and_ignores_attention_weights():
    model = make()
    tokens = torch.randint(0, 11, (2, 1))
    before, _ = model(tokens)
    with torch.no_grad():
        for layer in model.layers:
            layer.query.weight.mul_(3.0)
            layer.out.weight.mul_(-2.0)
    after, _ = model(tokens)
    torch.testing.assert_close(before, after, rtol=0, atol=0)


@pytest.mark.parametrize("grad", [True, False], ids=["recorded", "inference"])
@pytest.mark.parametrize(
    "variant",
    [
        dict(span=6),
        dict(span=6, shared_kv=False),
        dict(span=6, shared_kv=False, memory="layer", memory_layer=2),
        dict(span=6, head_dim=5),
        ADAPTIVE,
    ],
)
def test_token_by_token_decoding_equals_parallel_segment(variant, grad):
    model = make(**variant).eval()
    tokens = torch.randint(0, 11, (2, 13), generator=torch.Generator().manual_seed(3))
    full, full_state = model(tokens)  # parameters require grad: the recorded (autograd) path runs
    state, steps = None, []
    with torch.set_grad_enabled(grad):  # without grad, the inference path that saves nothing
        for t in range(tokens.shape[1]):
            logits, state = model(tokens[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-12)
    for name in full_state:
        torch.testing.assert_close(state[name], full_state[name], rtol=1e-10, atol=1e-12)


def test_consecutive_segments_equal_one_long_segment_in_training_mode():
    model = make(span=4).train()  # dropout 0: training mode only switches K/V recomputation on
    tokens = torch.randint(0, 11, (2, 12))
    full, _ = model(tokens)
    first, state = model(tokens[:, :5])
    second, state = model(tokens[:, 5:9], state)
    third, _ = model(tokens[:, 9:], state)
    torch.testing.assert_close(torch.cat([first, second, third], 1), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", [dict(), dict(shared_kv=False)], ids=["shared", "per-layer"])
def test_training_recomputes_carried_keys_with_the_current_weights(variant):
    """After an update, a training forward must project the carried memory with the new weights (as the naive
    reference does); an evaluation forward reuses the cached keys/values. Fails if either path is wrong."""
    model = make(span=4, **variant).train()
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(4))
    more = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(5))
    _, state = model(tokens)
    _, memories = naive_logits(model, tokens)
    with torch.no_grad():  # an optimiser step on the K/V side
        for name, parameter in model.named_parameters():
            if name.endswith(("key.weight", "value.weight", "norm_memory.weight", "norm_attn.bias")):
                parameter.add_(0.5 * torch.randn_like(parameter))
    expected, _ = naive_logits(model, more, memories[-4:])
    for fast in (True, False):
        model.fast = fast
        trained, _ = model(more, state)
        torch.testing.assert_close(trained, expected, rtol=1e-10, atol=1e-10)
    stale, _ = model.eval()(more, state)  # cached keys/values from the old weights
    assert not torch.allclose(stale, expected, atol=1e-6)


def test_future_tokens_never_change_earlier_logits():
    model = make(span=8)
    tokens = torch.randint(0, 11, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    a, _ = model(tokens)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_state_is_detached_and_bounded_by_span():
    model = make(span=3)
    _, state = model(torch.randint(0, 11, (2, 7)))
    assert state["memory"].shape == (2, 3, 8)
    assert all(not tensor.requires_grad for tensor in state.values())


def test_mix_starts_uniform_and_ablations_drop_it():
    assert torch.equal(build_model(ModelConfig(**TINY)).memory_weights, torch.zeros(3))
    assert not hasattr(build_model(ModelConfig(**TINY, memory="top")), "memory_weights")


def test_per_layer_kv_has_one_projection_per_layer():
    shared = build_model(ModelConfig(**TINY))
    separate = build_model(ModelConfig(**TINY, shared_kv=False))
    D = TINY["dim"]
    # One more key and value projection (L = 2); shared K/V have their own memory norm, per-layer K/V reuse the
    # layers' attention norms.
    assert (
        sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters()) == 2 * D * D - 2 * D
    )


@pytest.mark.parametrize(
    "change",
    ["optimizer step", "load_state_dict", "load_state_dict assign", "data swap", "dtype"],
)
def test_inference_reuses_prepared_weights_only_while_parameters_are_unchanged(change):
    # Without gradients the fused path keeps its folded weights between calls (one-token decoding); any way of
    # changing a parameter must make the next call use the new values, exactly as a fresh model would.
    model, other = make(), make(span=3)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn_like(parameter))
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before, _ = model(tokens)
    if change == "optimizer step":
        model(tokens)[0].square().sum().backward()
        torch.optim.SGD(model.parameters(), lr=0.5).step()
    elif change == "data swap":
        for parameter, new in zip(model.parameters(), other.parameters()):
            parameter.data = new.data.clone()
    elif change == "dtype":
        model.float()
    else:
        model.load_state_dict(other.state_dict(), assign=change.endswith("assign"))
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    fresh.to(next(model.parameters()).dtype)
    with torch.no_grad():
        after, _ = model(tokens)
        expected, _ = fresh(tokens)
    if change == "dtype":
        assert after.dtype == torch.float32  # stale float64 weights would have given float64 logits
    else:
        assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
