"""Forward against reverse mode on functions of one model with chosen input and output sizes.

jacfwd builds the Jacobian (n_out × n_in) one input direction at a time (n_in forward-mode passes, batched
by vmap), jacrev one output direction at a time (n_out vector-Jacobian products). The cheaper mode follows
from the shape: forward when n_in ≪ n_out, reverse when n_in ≫ n_out (a loss: n_out = 1, why training
uses reverse mode).

The functions, on a segment of T tokens with embeddings E (T × D) and logits (T × V): the first n_in
coordinates of E (position-major; the rest held fixed) -> the last n_out coordinates of the logits:
- `wide-in`: all of E -> the last 8 logits (n_in = T·D ≫ n_out = 8);
- `square`: n_in = n_out = min(T·D, T·V);
- `wide-out`: the first 8 coordinates of E -> all logits (n_in = 8 ≪ n_out = T·V).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.func import jacfwd, jacrev

from fbt.analysis.common import Subject, reference_path

SHAPES = ("wide-in", "square", "wide-out")


def model_function(subject: Subject, shape: str):
    """(x, f): the flat input at which to differentiate and the function of it (see the module's docstring)."""
    model = reference_path(subject.model)
    tokens = subject.inputs[:1]  # one stream: (1, T)
    embedded = model.embed(tokens).detach()  # (1, T, D)
    T, D = embedded.shape[1:]
    V = model.config.vocab_size
    n_in, n_out = {"wide-in": (T * D, 8), "square": (min(T * D, T * V),) * 2, "wide-out": (8, T * V)}[shape]
    rest = embedded.flatten()[n_in:]

    def function(x: torch.Tensor) -> torch.Tensor:
        embeddings = torch.cat([x, rest]).view(1, T, D)
        # The model's own forward with its embedding output replaced: logits (1, T, V).
        handle = model.embed.register_forward_hook(lambda module, inputs, output: embeddings)
        try:
            return model(tokens)[0].flatten()[-n_out:]
        finally:
            handle.remove()

    return embedded.flatten()[:n_in], function


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def jacobian_report(subject: Subject, shapes: tuple[str, ...] = SHAPES, repeats: int = 3) -> dict:
    """Per shape: n_in, n_out, seconds of jacfwd and jacrev (median of `repeats`), their agreement."""
    rows = []
    with torch.no_grad():
        for shape in shapes:
            x, function = model_function(subject, shape)
            n_out = function(x).numel()
            forward_s, forward = timed(lambda f=function, x=x: jacfwd(f)(x), repeats)
            reverse_s, reverse = timed(lambda f=function, x=x: jacrev(f)(x), repeats)
            scale = float(reverse.abs().max()) or 1.0
            rows.append(
                {
                    "shape": shape,
                    "n_in": x.numel(),
                    "n_out": n_out,
                    "forward_s": forward_s,
                    "reverse_s": reverse_s,
                    "faster": "forward" if forward_s < reverse_s else "reverse",
                    "max_difference": float((forward - reverse).abs().max()) / scale,
                }
            )
    return {"model": subject.label, "tokens": subject.inputs.shape[1], "shapes": rows}


def format_report(report: dict) -> str:
    lines = [
        f"{report['model']}, {report['tokens']} tokens: Jacobians by forward (jacfwd) and reverse (jacrev) mode",
        f"{'function':10} {'n_in':>7} {'n_out':>7} {'jacfwd s':>9} {'jacrev s':>9}  faster   agree to",
    ]
    for row in report["shapes"]:
        lines.append(
            f"{row['shape']:10} {row['n_in']:7,} {row['n_out']:7,} {row['forward_s']:9.4f} "
            f"{row['reverse_s']:9.4f}  {row['faster']:7}  {row['max_difference']:.1e}"
        )
    return "\n".join(lines)


def plot_report(report: dict, out) -> None:
    from fbt.plots import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    rows = report["shapes"]
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [r["forward_s"] for r in rows], width=0.4, label="forward (jacfwd)")
    axis.bar([p + 0.2 for p in positions], [r["reverse_s"] for r in rows], width=0.4, label="reverse (jacrev)")
    axis.set_xticks(list(positions), [f"{r['shape']}\n{r['n_in']:,} -> {r['n_out']:,}" for r in rows])
    axis.set_yscale("log")
    axis.set_ylabel("seconds per Jacobian")
    axis.set_title(f"{report['model']}: the mode follows the shape (n_in -> n_out)", fontsize=9)
    axis.legend()
    save_figure(plt, figure, out)
