"""How far back a model's output depends on its past: gradient norms against the distance k.

For every model, the norm of ∂L_t/∂x_{t-k} (reverse mode: one vector-Jacobian product per step t gives all
k at once), L_t the loss at step t and x the embedded input; averaged over the steps t ≥ k and the streams.
A Transformer-XL with L layers of span S sees at most L·S steps back, so beyond that this is exactly zero;
a Feedback Transformer's memory carries information further (the paper's "recursive computation").

For the feedback model, also ∂L_t/∂m_{t-k} against its memory vectors (the total derivative, through the
later memories too), and, by forward mode, ‖∂m_t/∂m_{t-k} u‖ for random unit u (one Jacobian-vector
product from each step s gives every later memory's tangent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import jvp

from fbt.analysis.common import Subject, reference_path
from fbt.data.targets import IGNORE_INDEX
from fbt.models import model_class


class MemoryProbe:
    """Adds δ_t (B, T, D) to the feedback memory m_t as it is made, and records the memories."""

    def __init__(self, delta: torch.Tensor):
        self.delta, self.memories = delta, []

    def __call__(self, t: int, memory: torch.Tensor) -> torch.Tensor:
        memory = memory + self.delta[:, t]
        self.memories.append(memory)
        return memory


def step_losses(subject: Subject, logits: torch.Tensor) -> torch.Tensor:
    """Loss per step (T,), summed over the streams (unscored positions count zero)."""
    losses = F.cross_entropy(logits.transpose(1, 2), subject.targets, ignore_index=IGNORE_INDEX, reduction="none")
    return losses.sum(0)


def by_lag(losses: torch.Tensor, wrt: torch.Tensor) -> list[float]:
    """Mean over steps t and streams of ‖∂L_t/∂wrt_{t-k}‖ for k = 0..T-1 (wrt (B, T, D))."""
    T = losses.shape[0]
    sums, counts = torch.zeros(T, dtype=torch.float64), torch.zeros(T)
    for t in range(T):
        if losses[t] == 0:
            continue
        (gradient,) = torch.autograd.grad(losses[t], wrt, retain_graph=True)  # (B, T, D)
        norms = gradient[:, : t + 1].norm(dim=-1).mean(0).flip(0)  # lag 0..t
        sums[: t + 1] += norms.double()
        counts[: t + 1] += 1
    return (sums / counts.clamp(min=1)).tolist()


def dependence(subject: Subject, seed: int = 0) -> dict:
    """The per-lag gradient norms of one model (see the module's docstring)."""
    model = reference_path(subject.model)
    config = model.config
    embedded = model.embed(subject.inputs).detach().requires_grad_()
    handle = model.embed.register_forward_hook(lambda module, inputs, output: embedded)
    try:
        result = {
            "model": subject.label,
            "family": config.model,
            "layers": config.layers,
            "span": config.span,
            "reach": model_class(config.model).reach(config),
        }
        B, T, D = embedded.shape
        if hasattr(model, "memory_probe"):  # a model whose step makes a memory (models/feedback_step.py)
            delta = torch.zeros(B, T, D, dtype=embedded.dtype, requires_grad=True)
            model.memory_probe = MemoryProbe(delta)
            logits, _ = model(subject.inputs)
            losses = step_losses(subject, logits)
            result["input"] = by_lag(losses, embedded)
            result["memory"] = by_lag(losses, delta)
            result["memory_jvp"] = memory_jacobian_norms(model, subject, delta.detach(), seed)
        else:
            logits, _ = model(subject.inputs)
            result["input"] = by_lag(step_losses(subject, logits), embedded)
    finally:
        handle.remove()
        if hasattr(model, "memory_probe"):
            model.memory_probe = None
    return result


def memory_jacobian_norms(model, subject: Subject, zeros: torch.Tensor, seed: int) -> list[float]:
    """Mean over s and streams of ‖∂m_{s+k}/∂m_s u‖ for k = 0..T-1 (u random, unit norm per stream)."""
    B, T, D = zeros.shape
    generator = torch.Generator().manual_seed(seed)
    sums, counts = torch.zeros(T, dtype=torch.float64), torch.zeros(T)

    def memories(delta: torch.Tensor) -> torch.Tensor:
        model.memory_probe = MemoryProbe(delta)
        model(subject.inputs)
        return torch.stack(model.memory_probe.memories, dim=1)  # (B, T, D)

    for s in range(T):
        u = torch.randn(B, D, generator=generator, dtype=zeros.dtype)
        tangent = torch.zeros_like(zeros)
        tangent[:, s] = u / u.norm(dim=-1, keepdim=True)
        _, out = jvp(memories, (zeros,), (tangent,))
        sums[: T - s] += out[:, s:].norm(dim=-1).mean(0).double()
        counts[: T - s] += 1
    return (sums / counts.clamp(min=1)).tolist()


def plot_dependence(reports: list[dict], out) -> None:
    from fbt.plots import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, report in enumerate(reports):
        color = f"C{index}"
        lags = range(len(report["input"]))
        label = f"{report['model']} ({report['family']}, {report['layers']} layers, span {report['span']})"
        axis.plot(lags, [max(v, 1e-12) for v in report["input"]], color=color, label=f"{label}: ∂L_t/∂x_(t-k)")
        if "memory" in report:
            axis.plot(
                lags,
                [max(v, 1e-12) for v in report["memory"]],
                color=color,
                linestyle="--",
                label=f"{label}: ∂L_t/∂m_(t-k)",
            )
        if report["reach"] is not None:
            axis.axvline(report["reach"], color=color, linestyle=":", linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("distance k (steps back)")
    axis.set_ylabel("mean gradient norm (zero drawn at 1e-12)")
    axis.set_title(
        "how far back the loss depends on the past (dotted: the furthest input a step attends to)", fontsize=9
    )
    axis.legend(fontsize=7)
    save_figure(plt, figure, out)


def format_report(report: dict) -> str:
    marks = [k for k in (0, 1, 2, 4, 8, 16, 32, 64, 128) if k < len(report["input"])]
    lines = [
        f"{report['model']} ({report['family']}, {report['layers']} layers, span {report['span']}); k = "
        + " ".join(f"{k:>8}" for k in marks)
    ]
    names = {"input": "‖∂L_t/∂x_(t-k)‖", "memory": "‖∂L_t/∂m_(t-k)‖", "memory_jvp": "‖∂m_t/∂m_(t-k) u‖"}
    for key, name in names.items():
        if key in report:
            lines.append(f"  {name:>20} " + " ".join(f"{report[key][k]:8.1e}" for k in marks))
    return "\n".join(lines)
