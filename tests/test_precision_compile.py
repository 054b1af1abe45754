"""bf16 autocast and torch.compile change how a step is computed, not what: results within stated tolerances,
fp32 master weights, and checkpoints with the plain model's keys."""

import shutil

import pytest
import torch
import torch.nn.functional as F
from families import LANGUAGE_MODELS

from fbt import api
from fbt.checkpoint import find_checkpoint
from fbt.models import ModelConfig, build_model
from fbt.presets import SHAKESPEARE as CORPUS
from fbt.rundir import load_tensors
from fbt.training.config import TrainConfig

SIZES = dict(dim=64, layers=2, heads=2, ff=128, span=8, context=32, vocab_size=50)
has_compiler = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="inductor needs a C compiler")


def loss_and_grads(model, tokens, precision="fp32"):
    model.zero_grad(set_to_none=True)
    with torch.autocast(tokens.device.type, torch.bfloat16, enabled=precision == "bf16"):
        logits, _ = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    return loss.item(), logits.dtype, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family, fast", [*((f, True) for f in LANGUAGE_MODELS), ("feedback", False)])
def test_bf16_autocast_is_close_to_fp32(family, fast):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=family, **SIZES)).train()
    model.fast = fast
    tokens = torch.randint(0, 50, (4, 21))
    loss32, dtype32, grads32 = loss_and_grads(model, tokens)
    loss16, dtype16, grads16 = loss_and_grads(model, tokens, "bf16")
    assert dtype32 == torch.float32 and dtype16 == torch.bfloat16  # autocast was on
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    # bf16 keeps 8 bits of mantissa: the loss to 0.5%, each gradient tensor to 10% of its norm.
    assert loss16 == pytest.approx(loss32, rel=5e-3)
    for name, grad in grads32.items():
        assert grads16[name].dtype == torch.float32
        assert (grads16[name] - grad).norm() <= 0.1 * grad.norm() + 1e-6, name


def tiny_run(tmp_path, name: str, **train) -> tuple[list[float], dict]:
    model = ModelConfig(model="feedback", dim=32, layers=2, heads=2, ff=64, span=8)
    config = TrainConfig(
        data=str(CORPUS), batch=4, segment=16, steps=4, warmup=0, eval_every=0, eval_tokens=256, log_every=1, **train
    )
    trainer = api.make_trainer(model, config, tmp_path / name, torch.device("cpu"))
    losses = [trainer.train_step()[0] for _ in range(config.steps)]
    trainer.save()
    return losses, load_tensors(find_checkpoint(tmp_path / name) / "model.safetensors")


def test_bf16_training_keeps_fp32_weights_and_follows_the_fp32_run(tmp_path):
    fp32, _ = tiny_run(tmp_path, "fp32")
    bf16, weights = tiny_run(tmp_path, "bf16", precision="bf16")
    assert bf16 == pytest.approx(fp32, rel=1e-2)
    assert bf16 != fp32  # the forward did run in bf16
    assert all(w.dtype == torch.float32 for w in weights.values())


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_compiled_model_computes_the_same(family):
    # aot_eager runs torch.compile's graph capture and autograd tracing without generating code (fast to test);
    # the inductor test below covers the default backend that --compile uses.
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=family, **SIZES)).train()
    tokens = torch.randint(0, 50, (4, 17))
    keys = list(model.state_dict())
    loss, _, grads = loss_and_grads(model, tokens)
    model.compile(backend="aot_eager")
    compiled_loss, _, compiled_grads = loss_and_grads(model, tokens)
    assert list(model.state_dict()) == keys
    assert compiled_loss == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@has_compiler
def test_compiled_training_run_matches_and_keeps_checkpoint_keys(tmp_path):
    plain, plain_weights = tiny_run(tmp_path, "plain")
    compiled, compiled_weights = tiny_run(tmp_path, "compiled", compile=True)
    assert compiled == pytest.approx(plain, rel=1e-5)
    assert compiled_weights.keys() == plain_weights.keys()
    for name, weight in plain_weights.items():
        torch.testing.assert_close(compiled_weights[name], weight, rtol=1e-4, atol=1e-6)
