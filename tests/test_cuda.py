"""The CUDA path: every test here is marked `cuda` and skipped where torch sees no CUDA device
(`pytest -m cuda` runs them alone; benchmarks/gpu_check.py runs that on a GPU machine).

Each checks on the GPU what the CPU tests check on the CPU, against the same references: every family against
the CPU, the fast feedback segment against the autograd loop, decoding against the parallel forward,
activation checkpointing, bf16 and torch.compile, and a checkpoint written on the GPU that loads on the CPU
and resumes bit-exact on the GPU."""

import pytest
import torch
from families import FAMILIES, LANGUAGE_MODELS
from test_checkpointing import CASES, SIZES
from test_checkpointing import loss_and_grads as checkpointing_loss_and_grads
from test_feedback_segment import VARIANTS, assert_paths_agree, segment_inputs
from test_feedback_segment import make as make_feedback
from test_precision_compile import SIZES as PRECISION_SIZES
from test_precision_compile import loss_and_grads as precision_loss_and_grads
from test_pretrained import assert_same_weights, tiny_model
from test_resume import train_rows
from tiny_runs import signal_after, tiny_configs

from fbt import api, checkpoint
from fbt.data.translation import TranslationBatch
from fbt.models import ModelConfig, build_model, from_pretrained, model_class
from fbt.models.feedback_segment import FeedbackSegment
from fbt.models.layers import set_activation_checkpointing
from fbt.training.trainer import TrainingInterrupted

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
VARIANT_IDS = [",".join(f"{k}={x}" for k, x in v.items()) or "default" for v in VARIANTS]


@pytest.fixture
def no_tf32():
    """float32 matmuls in float32 (cuBLAS and cuDNN, whose LSTM would otherwise use TF32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_cuda(inputs):
    """Leaf copies on the GPU of a list of tensors (None kept)."""
    return [None if x is None else x.detach().to(CUDA).requires_grad_(x.requires_grad) for x in inputs]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_every_family_computes_on_the_gpu_what_it_computes_on_the_cpu(family, dtype, no_tf32):
    torch.manual_seed(0)
    translates = model_class(family).translates
    extra = {"encoder_layers": 1} if translates else {}
    model = build_model(ModelConfig(model=family, **PRECISION_SIZES, **extra)).to(dtype).train()
    if translates:
        inputs = TranslationBatch(torch.randint(3, 50, (4, 9)), torch.randint(3, 50, (4, 13)))
        move = lambda batch: TranslationBatch(batch.source.to(CUDA), batch.target.to(CUDA))  # noqa: E731
    else:
        inputs, move = torch.randint(0, 50, (4, 21)), lambda tokens: tokens.to(CUDA)
    results = []
    for device, batch in (("cpu", inputs), ("cuda", move(inputs))):
        model.to(device).zero_grad(set_to_none=True)
        logits, _ = model(batch)
        (logits.square().mean() + logits[..., 0].sum()).backward()
        grads = {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach().cpu(), grads))
    # float64: both devices agree to rounding; float32 (TF32 off): summation order only.
    rtol, atol = (1e-9, 1e-11) if dtype == torch.float64 else (1e-4, 1e-5)
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=atol)
    assert results[1][1].keys() == results[0][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=10 * rtol, atol=10 * atol, msg=name)


@pytest.mark.parametrize("shared_kv", [True, False], ids=["shared", "per-layer"])
def test_segment_gradcheck_on_the_gpu(shared_kv):
    spec, inputs = segment_inputs(shared_kv, "all", 2)
    assert torch.autograd.gradcheck(
        lambda *x: FeedbackSegment.apply(spec, *x), to_cuda(inputs), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_fast_segment_matches_the_autograd_loop_on_the_gpu_float64(variant):
    assert_paths_agree(make_feedback(**variant).to(CUDA), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", [dict(), dict(shared_kv=False, memory="top")], ids=["default", "per-layer,top"])
def test_fast_segment_matches_the_autograd_loop_on_the_gpu_float32(variant):
    model = make_feedback(torch.float32, spread=0.05, **variant, dim=16, ff=32, span=8).to(CUDA)
    assert_paths_agree(model, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", [dict(), dict(shared_kv=False, span=30)], ids=["default", "per-layer,span30"])
def test_fast_segment_draws_the_autograd_loops_dropout_masks_on_the_gpu(variant):
    assert_paths_agree(make_feedback(**variant, dropout=0.3).train().to(CUDA), rtol=1e-9, atol=1e-11, seed=5)


@pytest.mark.parametrize("case", CASES)
def test_activation_checkpointing_changes_nothing_on_the_gpu(case):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SIZES, **CASES[case])).train().to(CUDA)
    if model.translates:
        inputs = TranslationBatch(torch.randint(3, 40, (3, 9), device=CUDA), torch.randint(3, 40, (3, 17), device=CUDA))
        state = None
    else:
        inputs = torch.randint(0, 40, (3, 17), device=CUDA)
        with torch.no_grad():
            _, state = model(torch.randint(0, 40, (3, 8), device=CUDA))
    plain = checkpointing_loss_and_grads(model, inputs, state)
    set_activation_checkpointing(model, True)
    checkpointed = checkpointing_loss_and_grads(model, inputs, state)
    torch.testing.assert_close(checkpointed[0], plain[0], rtol=1e-5, atol=1e-6)
    for name, grad in plain[2].items():
        torch.testing.assert_close(checkpointed[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "family, overrides",
    [
        ("feedback", {}),
        ("feedback", {"shared_kv": False, "memory": "top"}),
        ("transformer-xl", {}),
        ("gpt", {}),
        ("lstm", {}),
    ],
)
@pytest.mark.parametrize("grad", [True, False], ids=["recorded", "inference"])
def test_token_by_token_decoding_equals_the_parallel_forward_on_the_gpu(family, overrides, grad):
    torch.manual_seed(0)
    config = dict(vocab_size=11, dim=16, layers=2, heads=2, ff=32, span=6, context=16)
    model = build_model(ModelConfig(model=family, **{**config, **overrides})).double().eval().to(CUDA)
    tokens = torch.randint(0, 11, (2, 13), generator=torch.Generator().manual_seed(3)).to(CUDA)
    with torch.set_grad_enabled(grad):
        full, _ = model(tokens)
        state, steps = None, []
        for t in range(tokens.shape[1]):
            logits, state = model(tokens[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_bf16_autocast_on_the_gpu_is_close_to_fp32(family):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=family, **PRECISION_SIZES)).train().to(CUDA)
    tokens = torch.randint(0, 50, (4, 21), device=CUDA)
    loss32, dtype32, grads32 = precision_loss_and_grads(model, tokens)
    loss16, dtype16, grads16 = precision_loss_and_grads(model, tokens, "bf16")
    assert dtype32 == torch.float32 and dtype16 == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert loss16 == pytest.approx(loss32, rel=5e-3)
    for name, grad in grads32.items():
        assert (grads16[name] - grad).norm() <= 0.1 * grad.norm() + 1e-6, name


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_compiled_model_computes_the_same_on_the_gpu(family):
    # The default backend (inductor, generating Triton kernels): float32 results to the order of sums.
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=family, **PRECISION_SIZES)).train().to(CUDA)
    tokens = torch.randint(0, 50, (4, 17), device=CUDA)
    loss, _, grads = precision_loss_and_grads(model, tokens)
    model.compile()
    compiled_loss, _, compiled_grads = precision_loss_and_grads(model, tokens)
    assert compiled_loss == pytest.approx(loss, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_gpu_checkpoint_loads_on_the_cpu_and_resumes_bit_exact_on_the_gpu(tmp_path, text_file, monkeypatch):
    # Dropout 0.1 (tiny_configs): the resumed steps equal the straight run's only if the CUDA RNG is restored.
    model_config, train_config = tiny_configs(text_file, steps=8)
    api.train(model_config, train_config, tmp_path / "straight", "cuda", progress=False)
    signal_after(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        api.train(model_config, train_config, tmp_path / "run", "cuda", progress=False)
    monkeypatch.undo()
    assert api.resume(tmp_path / "run", "cuda", progress=False)["step"] == 8
    straight, resumed = (train_rows(tmp_path / name) for name in ("straight", "run"))
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in straight]

    gpu_model = api.load_run(tmp_path / "run", device="cuda")[0]
    cpu_model = api.load_run(tmp_path / "run", device="cpu")[0]
    assert next(gpu_model.parameters()).is_cuda and not next(cpu_model.parameters()).is_cuda
    tokens = torch.randint(0, cpu_model.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(gpu_model(tokens.to(CUDA))[0].cpu(), cpu_model(tokens)[0], rtol=1e-4, atol=1e-5)
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000008"


def test_from_pretrained_loads_and_generates_on_the_gpu(tmp_path):
    model = tiny_model("feedback").eval()
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path, device="cuda")
    assert next(loaded.parameters()).is_cuda
    out = loaded.generate([3, 14, 15], max_new_tokens=8, temperature=0.0)
    assert out.is_cuda and out.shape == (1, 11) and out[0, :3].tolist() == [3, 14, 15]
    assert_same_weights(model, loaded.cpu())
