"""Autograd's gradients against central finite differences, in float64.

A finite-difference gradient needs two loss evaluations per parameter, 2·d in all (d is often 10^5–10^8),
against one backward pass for reverse mode. So each parameter tensor is checked along one direction v (half
its gradient's direction, half random, unit norm): (L(θ + hv) − L(θ − hv)) / 2h against ⟨∇L, v⟩, two
evaluations per tensor. A sweep over h shows the trade-off: the truncation error falls as h², the rounding
error of the difference grows as ε·|L|/h, so the error is smallest near h ≈ ε^(1/3) (float64 ~1e-5, float32
~5e-3) and no step size reaches float32 accuracy beyond ~1e-4.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fbt.analysis.common import Subject, mean_loss

NOISE = 10  # a difference below this many rounding errors of L is indistinguishable from zero


def loss_value(model: nn.Module, subject: Subject) -> float:
    with torch.no_grad():
        logits, _ = model(subject.inputs)
        return mean_loss(logits, subject.targets).item()


def autograd_gradients(model: nn.Module, subject: Subject) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits, _ = model(subject.inputs)
    mean_loss(logits, subject.targets).backward()
    return {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for name, p in model.named_parameters()
    }


def directions(gradients: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Per tensor: the unit vector halfway between its gradient's direction and a random one."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, grad in gradients.items():
        random = torch.randn(grad.shape, generator=generator, dtype=grad.dtype)
        direction = random / random.norm() + (grad / grad.norm() if grad.norm() > 0 else 0)
        out[name] = direction / direction.norm()
    return out


@torch.no_grad()
def central_difference(model: nn.Module, subject: Subject, direction: dict[str, torch.Tensor], h: float) -> float:
    """(L(θ + h v) − L(θ − h v)) / 2h for a direction v over some of the parameters (name -> tensor)."""
    params = dict(model.named_parameters())
    values = []
    for sign in (1.0, -1.0):
        for name, v in direction.items():
            params[name].add_(v, alpha=sign * h)
        values.append(loss_value(model, subject))
        for name, v in direction.items():
            params[name].sub_(v, alpha=sign * h)
    return (values[0] - values[1]) / (2 * h)


def relative_error(numeric: float, analytic: float, loss: float, h: float, eps: float) -> float:
    floor = NOISE * eps * max(abs(loss), 1.0) / h  # what rounding alone makes of the difference quotient
    return abs(numeric - analytic) / max(abs(numeric), abs(analytic), floor)


def check_path(model: nn.Module, subject: Subject, h: float, seed: int) -> tuple[list[dict], dict]:
    """Rows (one per parameter tensor) and the gradients of the model's current path."""
    gradients = autograd_gradients(model, subject)
    loss = loss_value(model, subject)
    eps = torch.finfo(next(model.parameters()).dtype).eps
    rows = []
    for name, v in directions(gradients, seed).items():
        analytic = float((gradients[name] * v).sum())
        numeric = central_difference(model, subject, {name: v}, h)
        rows.append(
            {
                "parameter": name,
                "numel": v.numel(),
                "analytic": analytic,
                "finite_difference": numeric,
                "relative_error": relative_error(numeric, analytic, loss, h, eps),
            }
        )
    return rows, gradients


def step_sweep(model: nn.Module, subject: Subject, steps: list[float], seed: int) -> list[dict]:
    """Relative error of one joint direction's finite difference against h, in float64 and float32."""
    sweep = []
    for dtype in (torch.float64, torch.float32):
        other = copy.deepcopy(model).to(dtype)
        gradients = autograd_gradients(other, subject)
        direction = directions({"all": torch.cat([g.flatten() for g in gradients.values()])}, seed)["all"]
        pieces = dict(zip(gradients, direction.split([g.numel() for g in gradients.values()]), strict=True))
        pieces = {name: piece.view_as(gradients[name]) for name, piece in pieces.items()}
        analytic = float(sum((gradients[n] * v).sum() for n, v in pieces.items()))
        for index, h in enumerate(steps):
            numeric = central_difference(other, subject, pieces, h)
            error = abs(numeric - analytic) / max(abs(analytic), 1e-300)
            if dtype == torch.float64:
                sweep.append({"h": h, "float64": error})
            else:
                sweep[index]["float32"] = error
    return sweep


def gradcheck(subject: Subject, h: float = 1e-6, seed: int = 0, sweep: bool = True) -> dict:
    """The report of `fbt analyze gradcheck`: per-tensor relative errors of every path (the feedback model's
    fused segment and its reference loop), their maximum, and the step-size sweep."""
    model = subject.model.to(torch.float64)
    paths = {"fast": True, "reference": False} if hasattr(model, "fast") else {"autograd": None}
    report: dict = {"model": subject.label, "dtype": "float64", "h": h}
    d = sum(p.numel() for p in model.parameters())
    report["parameters"] = d
    report["full_finite_difference_evaluations"] = 2 * d
    report["evaluations"] = 2 * len(list(model.parameters())) * len(paths)
    path_gradients = {}
    rows = []
    for path, fast in paths.items():
        if fast is not None:
            model.fast = fast
        path_rows, path_gradients[path] = check_path(model, subject, h, seed)
        rows += [{"path": path, **row} for row in path_rows]
    report["max_relative_error"] = max(row["relative_error"] for row in rows)
    if len(paths) == 2:
        report["fast_vs_reference"] = max(
            float((path_gradients["fast"][n] - g).norm() / max(g.norm(), 1e-300))
            for n, g in path_gradients["reference"].items()
        )
    report["rows"] = rows
    if sweep:
        report["step_sweep"] = step_sweep(model, subject, [10.0**-k for k in range(1, 14)], seed)
    if hasattr(model, "fast"):
        model.fast = True
    return report


def format_report(report: dict) -> str:
    lines = [
        f"{report['model']}: {report['parameters']:,} parameters; a full finite-difference gradient needs 2·d = "
        f"{report['full_finite_difference_evaluations']:,} loss evaluations, this check {report['evaluations']} "
        f"(one direction per tensor, h = {report['h']:g}, float64)",
        f"{'path':10} {'parameter':40} {'numel':>8} {'autograd':>13} {'finite diff':>13} {'rel. error':>10}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['path']:10} {row['parameter'][:40]:40} {row['numel']:8,} {row['analytic']:13.6e} "
            f"{row['finite_difference']:13.6e} {row['relative_error']:10.2e}"
        )
    lines.append(f"max relative error: {report['max_relative_error']:.2e}")
    if "fast_vs_reference" in report:
        lines.append(
            f"fused segment vs reference loop, largest relative gradient difference: {report['fast_vs_reference']:.2e}"
        )
    if "step_sweep" in report:
        best = {key: min(report["step_sweep"], key=lambda row: row[key]) for key in ("float64", "float32")}
        lines.append(
            "finite-difference error against h: best "
            + ", ".join(f"{key} {row[key]:.1e} at h = {row['h']:g}" for key, row in best.items())
        )
    return "\n".join(lines)


def plot_step_sweep(report: dict, out) -> None:
    from fbt.plots import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    sweep = report["step_sweep"]
    for key in ("float64", "float32"):
        axis.loglog([row["h"] for row in sweep], [max(row[key], 1e-18) for row in sweep], marker="o", label=key)
    eps = {key: torch.finfo(getattr(torch, key)).eps for key in ("float64", "float32")}
    for key, value in eps.items():
        axis.axvline(value ** (1 / 3), linestyle=":", color="grey")
        axis.text(
            value ** (1 / 3),
            0.02,
            f" ε^(1/3) {key}",
            rotation=90,
            fontsize=7,
            color="grey",
            transform=axis.get_xaxis_transform(),
        )
    axis.set_xlabel("finite-difference step h")
    axis.set_ylabel("relative error of the central difference")
    axis.set_title(f"{report['model']}: truncation (∝h²) vs rounding (∝ε/h)", fontsize=9)
    axis.legend()
    save_figure(plt, figure, out)
