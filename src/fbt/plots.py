"""Figures people would rather look at than read: accuracy against training tokens, from metrics.csv files.

matplotlib is an optional dependency (`pip install fbt[plot]`); it is imported when a figure is drawn.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fbt.errors import FbtError


def validation_curve(metrics_csv: Path, column: str = "valid_accuracy") -> tuple[list[int], list[float]]:
    """(tokens, values) of the validation rows of one run's metrics.csv."""
    tokens, values = [], []
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(column):
                tokens.append(int(row["tokens"]))
                values.append(float(row[column]))
    return tokens, values


def plot_accuracy_curves(curves: dict[str, Path], lines: dict[str, float], out: Path, title: str = "") -> Path:
    """Validation accuracy vs training tokens for each labelled run, with horizontal reference `lines`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FbtError("figures need matplotlib: pip install 'fbt[plot]'") from None
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, path in curves.items():
        tokens, accuracy = validation_curve(Path(path))
        axes.plot([t / 1e6 for t in tokens], accuracy, marker="o", markersize=3, label=label)
    for (label, value), style in zip(lines.items(), (":", "--", "-.")):
        axes.axhline(
            value, color="gray", linestyle=style, linewidth=1, label=f"{label.replace('_', ' ')} ({value:.0%})"
        )
    axes.set_xlabel("training tokens (millions)")
    axes.set_ylabel("answer accuracy (valid)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    if title:
        axes.set_title(title, fontsize=8)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out
