"""`fbt analyze`: the Hessian tools against exact Hessians of a model small enough to form one, gradient
checks that pass on correct gradients and catch wrong ones, Jacobian modes that agree, and the memory reach
of Transformer-XL (bounded by layers x span) against the feedback model's (not bounded)."""

import json

import pytest
import torch
from families import LANGUAGE_MODELS
from torch.func import grad

from fbt.analysis.common import Subject, load_subject, loss_function, parameters
from fbt.analysis.gradcheck import gradcheck
from fbt.analysis.hessian import dot, hutchinson_trace, hvp_function, lanczos
from fbt.analysis.jacobian import jacobian_report
from fbt.analysis.memory import dependence
from fbt.cli import main
from fbt.models import ModelConfig
from fbt.presets import SHAKESPEARE

TINY = dict(dim=4, layers=1, heads=1, ff=4, span=3, context=8, vocab_size=5)


def tiny_subject(family: str = "feedback", dtype=torch.float64, **sizes) -> Subject:
    config = ModelConfig(model=family, **{**TINY, **sizes})
    return load_subject(None, config, batch=2, segment=5, seed=0, dtype=dtype)


def exact_hessian(subject: Subject) -> torch.Tensor:
    """The d x d Hessian of the loss, formed by reverse over reverse mode (torch.autograd.functional.hessian, no
    forward mode: independent of the HVPs under test) over the flattened parameters."""
    theta = parameters(subject.model)
    names, shapes = list(theta), [t.shape for t in theta.values()]
    sizes = [t.numel() for t in theta.values()]
    loss = loss_function(subject)

    def flat_loss(flat):
        return loss({n: p.view(s) for n, p, s in zip(names, flat.split(sizes), shapes, strict=True)})

    return torch.autograd.functional.hessian(flat_loss, torch.cat([t.flatten() for t in theta.values()]))


@pytest.fixture(scope="module")
def small():
    subject = tiny_subject()
    hvp, theta = hvp_function(subject)
    return subject, hvp, theta, exact_hessian(subject)


def test_hvp_equals_the_finite_difference_of_gradients(small):
    subject, hvp, theta, _ = small
    loss = loss_function(subject)
    generator = torch.Generator().manual_seed(1)
    v = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in theta.items()}
    h = 1e-5
    plus = grad(loss)({n: t + h * v[n] for n, t in theta.items()})
    minus = grad(loss)({n: t - h * v[n] for n, t in theta.items()})
    product = hvp(v)
    for name in theta:
        torch.testing.assert_close(product[name], (plus[name] - minus[name]) / (2 * h), rtol=1e-6, atol=1e-8)


def test_hvp_equals_the_exact_hessian_times_v(small):
    _, hvp, theta, exact = small
    v = {n: torch.randn(t.shape, dtype=t.dtype) for n, t in theta.items()}
    flat = torch.cat([t.flatten() for t in hvp(v).values()])
    torch.testing.assert_close(flat, exact @ torch.cat([t.flatten() for t in v.values()]), rtol=1e-9, atol=1e-11)


def test_hutchinson_converges_to_the_exact_trace(small):
    _, hvp, theta, exact = small
    trace = float(exact.trace())
    few, few_error = hutchinson_trace(hvp, theta, 30, seed=0)
    many, many_error = hutchinson_trace(hvp, theta, 300, seed=0)
    assert abs(many - trace) <= 4 * many_error
    assert many_error < few_error / 2  # stderr shrinks as 1/sqrt(n): sqrt(10) = 3.2, with room for noise
    assert abs(many - trace) / abs(trace) < 0.1
    # With ±1 entries Var(zᵀHz) = 2 Σ_{i≠j} H_ij²: the reported standard error estimates its square root over √n.
    off_diagonal = exact - torch.diag(torch.diag(exact))
    expected_error = float((2 * off_diagonal.square().sum() / 300).sqrt())
    assert expected_error / 1.5 < many_error < 1.5 * expected_error


def test_lanczos_finds_the_exact_top_eigenvalues(small):
    _, hvp, theta, exact = small
    eigenvalues = torch.linalg.eigvalsh(exact)
    ritz = lanczos(hvp, theta, steps=exact.shape[0], seed=0)
    torch.testing.assert_close(ritz[-3:], eigenvalues[-3:], rtol=1e-6, atol=1e-8)
    few = lanczos(hvp, theta, steps=25, seed=0)  # far fewer products than parameters: the top one converges
    assert float(few[-1]) == pytest.approx(float(eigenvalues[-1]), rel=1e-4)
    assert dot(theta, theta) > 0


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_gradcheck_passes_on_every_family_and_both_feedback_paths(family):
    report = gradcheck(tiny_subject(family, dim=8, heads=2, ff=8), sweep=False)
    assert report["max_relative_error"] < 1e-5
    assert report["full_finite_difference_evaluations"] == 2 * report["parameters"]
    if family == "feedback":
        assert {row["path"] for row in report["rows"]} == {"fast", "reference"}
        assert report["fast_vs_reference"] < 1e-10


def test_gradcheck_catches_a_wrong_gradient():
    subject = tiny_subject("transformer-xl", dim=8, heads=2, ff=8)
    subject.model.layers[0].ff.out.bias.register_hook(lambda g: g * 1.01)  # a 1% error in one tensor
    report = gradcheck(subject, sweep=False)
    wrong = [row for row in report["rows"] if row["relative_error"] > 1e-3]
    assert [row["parameter"] for row in wrong] == ["layers.0.ff.out.bias"]


def test_the_step_sweep_shows_truncation_and_rounding():
    sweep = gradcheck(tiny_subject("gpt"), sweep=True)["step_sweep"]
    errors = {row["h"]: row for row in sweep}
    # float64 is best near 1e-5 and worse at both ends; float32 never gets near float64's best.
    best64 = min(sweep, key=lambda row: row["float64"])
    assert 1e-7 <= best64["h"] <= 1e-3
    assert errors[1e-1]["float64"] > 100 * best64["float64"] < errors[1e-12]["float64"]
    assert min(row["float32"] for row in sweep) > 100 * best64["float64"]


def test_jacobian_modes_agree_and_time_every_shape():
    report = jacobian_report(tiny_subject("feedback", dtype=torch.float32, dim=8, heads=2), repeats=1)
    assert [row["shape"] for row in report["shapes"]] == ["wide-in", "square", "wide-out"]
    for row in report["shapes"]:
        assert row["max_difference"] < 1e-4
        assert row["forward_s"] > 0 and row["reverse_s"] > 0
    wide_in, _, wide_out = report["shapes"]
    assert wide_in["n_in"] > wide_in["n_out"] and wide_out["n_in"] < wide_out["n_out"]


def test_transformer_xl_reach_is_layers_times_span_and_feedback_reaches_further():
    sizes = dict(dim=8, heads=2, ff=8, span=2, layers=2, vocab_size=7)
    xl = dependence(load_subject(None, ModelConfig(model="transformer-xl", **sizes), 2, 12))
    feedback = dependence(load_subject(None, ModelConfig(model="feedback", **sizes), 2, 12))
    assert all(value > 0 for value in xl["input"][:5])  # up to L·S = 4 steps back
    assert all(value == 0 for value in xl["input"][5:])
    assert all(value > 0 for value in feedback["input"][:12])  # through the memory, beyond its span of 2
    assert feedback["memory"][0] == 0 and feedback["memory"][1] > 0  # m_t is made after step t's output
    assert feedback["memory_jvp"][0] == pytest.approx(1.0)  # ∂m_t/∂m_t u = u, a unit vector


def test_the_four_subcommands_run_on_a_trained_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "feedback",
                "--dim",
                "16",
                "--layers",
                "1",
                "--heads",
                "2",
                "--ff",
                "16",
                "--span",
                "4",
                "--batch",
                "2",
                "--segment",
                "8",
                "--steps",
                "3",
                "--warmup",
                "0",
                "--save-every",
                "1",
                "--keep-checkpoints",
                "3",
                "--eval-tokens",
                "64",
                "--data",
                SHAKESPEARE,
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    outputs = {}
    for analysis, extra in (
        ("gradcheck", []),
        ("jacobian", ["--repeats", "1"]),
        (
            "hessian",
            [
                "--samples",
                "4",
                "--lanczos-steps",
                "5",
                "--over-checkpoints",
                str(run),
                "--plot",
                str(tmp_path / "sharpness.png"),
            ],
        ),
        ("memory", ["--segment", "12", "--plot", str(tmp_path / "memory.png")]),
    ):
        assert main(["analyze", analysis, str(run), "--json", *extra]) == 0
        outputs[analysis] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert outputs["gradcheck"]["max_relative_error"] < 1e-5
    assert {"trace", "trace_stderr", "top_eigenvalues"} <= outputs["hessian"].keys()
    assert [step for step, _ in outputs["hessian"]["over_checkpoints"][str(run)]] == [1, 2, 3]
    assert {"forward_s", "reverse_s", "n_in", "n_out"} <= outputs["jacobian"]["shapes"][0].keys()
    assert len(outputs["memory"]["models"][0]["input"]) == 12
    assert (tmp_path / "sharpness.png").stat().st_size > 0 and (tmp_path / "memory.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "gradcheck"], "give a run directory or --model NAME"),
        (["analyze", "hessian", "/no/such/run"], "no such run or checkpoint directory"),
        (["analyze", "hessian", "--model", "gpt", "--samples", "1"], "--samples must be >= 2"),
        (["analyze", "memory", "--model", "lstm", "--batch", "0"], "--batch and --segment must be >= 1"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_forward_mode_runs_through_attention_and_lstm_kernels(family, capsys):
    # Their default CPU kernels (flash attention, oneDNN LSTM) have no forward-mode derivative.
    assert main(["analyze", "hessian", "--model", family, "--samples", "2", "--lanczos-steps", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["top_eigenvalues"]


def test_jacobian_needs_no_run(capsys, recwarn):
    # The command as documented: `fbt analyze jacobian --json` times a fresh feedback model.
    assert main(["analyze", "jacobian", "--json", "--repeats", "1"]) == 0
    assert not [w for w in recwarn if "TF32" in str(w.message)]  # oneDNN's flags switched quietly
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["model"] == "feedback"
    assert all(row["forward_s"] > 0 and row["reverse_s"] > 0 for row in report["shapes"])
