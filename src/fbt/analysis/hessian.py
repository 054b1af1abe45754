"""The loss's Hessian without forming it: Hessian-vector products by forward-over-reverse differentiation,
Hutchinson's trace estimate and the top eigenvalues by Lanczos iteration.

H v = d/dε ∇L(θ + εv) at ε = 0: the forward-mode derivative (jvp) of the reverse-mode gradient, one
pass of each, never the d × d matrix. Hutchinson: tr H = E[zᵀ H z] for z with independent ±1 entries; the
mean of n samples has standard error std/√n. Lanczos builds an orthonormal basis of the Krylov space
{v, Hv, H²v, ...} in which H is tridiagonal; the extreme eigenvalues of that small matrix converge to H's
first (the same products as power iteration, but every one of them used).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, jvp

from fbt.analysis.common import Subject, loss_function, parameters, reference_path

Vector = dict[str, torch.Tensor]


def hvp_function(subject: Subject) -> tuple[Callable[[Vector], Vector], Vector]:
    """v -> H v at the subject's parameters (forward over reverse), and those parameters."""
    reference_path(subject.model)
    loss = loss_function(subject)
    theta = parameters(subject.model)

    def hvp(v: Vector) -> Vector:
        return jvp(grad(loss), (theta,), (v,))[1]

    return hvp, theta


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((a[name] * b[name]).sum() for name in a)


def hutchinson_trace(hvp: Callable[[Vector], Vector], like: Vector, samples: int, seed: int = 0) -> tuple[float, float]:
    """(estimate, standard error) of tr H from `samples` Rademacher vectors."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        z = {name: torch.randint(0, 2, t.shape, generator=generator).to(t.dtype) * 2 - 1 for name, t in like.items()}
        values.append(float(dot(z, hvp(z))))
    estimates = torch.tensor(values, dtype=torch.float64)
    stderr = float(estimates.std() / len(values) ** 0.5) if len(values) > 1 else float("nan")
    return float(estimates.mean()), stderr


def lanczos(hvp: Callable[[Vector], Vector], like: Vector, steps: int, seed: int = 0) -> torch.Tensor:
    """Ritz values (ascending) of `steps` Lanczos iterations with full reorthogonalisation (float64)."""
    generator = torch.Generator().manual_seed(seed)
    names = list(like)
    sizes = [like[name].numel() for name in names]
    steps = min(steps, sum(sizes))

    def unflatten(flat: torch.Tensor) -> Vector:
        return {n: p.view_as(like[n]).to(like[n].dtype) for n, p in zip(names, flat.split(sizes), strict=True)}

    def apply(flat: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.flatten().to(torch.float64) for t in hvp(unflatten(flat)).values()])

    basis = [torch.randn(sum(sizes), generator=generator, dtype=torch.float64)]
    basis[0] /= basis[0].norm()
    alphas, betas = [], []
    for index in range(steps):
        w = apply(basis[-1])
        alphas.append(float(w @ basis[-1]))
        for q in basis:  # full reorthogonalisation: the basis stays orthonormal in floating point
            w -= (w @ q) * q
        beta = float(w.norm())
        if index == steps - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(tridiagonal)


def top_eigenvalue(subject: Subject, lanczos_steps: int, seed: int = 0) -> float:
    hvp, theta = hvp_function(subject)
    return float(lanczos(hvp, theta, lanczos_steps, seed)[-1])


def hessian_report(subject: Subject, samples: int = 32, lanczos_steps: int = 30, top: int = 3, seed: int = 0) -> dict:
    """The report of `fbt analyze hessian`: trace (Hutchinson), its standard error, the top eigenvalues."""
    hvp, theta = hvp_function(subject)
    trace, stderr = hutchinson_trace(hvp, theta, samples, seed)
    ritz = lanczos(hvp, theta, lanczos_steps, seed)
    loss = float(loss_function(subject)(theta))
    return {
        "model": subject.label,
        "parameters": sum(t.numel() for t in theta.values()),
        "loss": loss,
        "tokens": subject.inputs.numel(),
        "trace": trace,
        "trace_stderr": stderr,
        "trace_samples": samples,
        "top_eigenvalues": sorted(ritz.tolist(), reverse=True)[:top],
        "bottom_eigenvalue": float(ritz[0]),
        "lanczos_steps": len(ritz),
    }


def format_report(report: dict) -> str:
    top = ", ".join(f"{value:.4g}" for value in report["top_eigenvalues"])
    over = "".join(
        f"\n  {run}: top eigenvalue by step " + ", ".join(f"{step}: {value:.4g}" for step, value in points)
        for run, points in report.get("over_checkpoints", {}).items()
    )
    return (
        f"{report['model']}: {report['parameters']:,} parameters, loss {report['loss']:.4f} on {report['tokens']:,} "
        f"tokens\n  trace (Hutchinson, {report['trace_samples']} samples): {report['trace']:.4g} ± "
        f"{report['trace_stderr']:.2g} (standard error)\n  top eigenvalues (Lanczos, {report['lanczos_steps']} "
        f"steps): {top}; smallest Ritz value {report['bottom_eigenvalue']:.4g}{over}"
    )


def plot_over_training(series: dict[str, list[tuple[int, float]]], out) -> None:
    """Top eigenvalue against training step, one line per run."""
    from fbt.plots import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        axis.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label)
    axis.set_xlabel("training step (checkpoint)")
    axis.set_ylabel("top Hessian eigenvalue")
    axis.set_title("sharpness of the loss along training", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(plt, figure, out)
