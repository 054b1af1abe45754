"""Figures people would rather look at than read: loss and accuracy against training tokens, from metrics.csv files,
and the accuracy of each run's recorded evaluation by feature of its examples (`fbt eval --breakdown`).

matplotlib is an optional dependency (`pip install fbt[plot]`); it is imported when a figure is drawn.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fbt.errors import FbtError
from fbt.rundir import EVALUATIONS, read_json
from fbt.runs import read_config, read_metrics
from fbt.tasks import task_class_or_base


def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend); FbtError without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FbtError("figures need matplotlib: pip install 'fbt[plot]'") from None
    return plt


def save_figure(plt, figure, out: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns where it went."""
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


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
    plt = pyplot()
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
    return save_figure(plt, figure, out)


# x axis choices of plot_runs: metrics.csv column -> (axis label, scale applied to the values)
X_AXES = {"tokens": ("training tokens (millions)", 1e-6), "elapsed_s": ("training time (s)", 1.0)}
VALID_AXES = {
    "valid_accuracy": ("answer accuracy (valid, %)", 100.0),
    "valid_bits_per_byte": ("bits per byte (valid)", 1.0),
    "valid_perplexity": ("perplexity per token (valid)", 1.0),
    "valid_loss": ("loss (valid, nats per token)", 1.0),
}


LEGEND_INSIDE = 3  # runs whose legend fits inside a panel; more go below it


def plot_runs(run_dirs: list[str | Path], out: str | Path, x: str = "tokens") -> Path:
    """The loss (left: training line, validation dots, one colour per run) and the validation metric (right)
    of each run against tokens or wall-clock time.

    Losses are in bits per byte when every run's tokens are bytes, else in nats per token. The validation
    metric is the first run's (accuracy for code-exec, with the heuristic floors of its valid split; bits per
    byte for text); runs of another task are left out of that panel. A curriculum run's stage switches are
    vertical lines in its colour: before its last stage, its validation reads the stage's own data.
    """
    if x not in X_AXES:
        raise FbtError(f"unknown x axis {x!r}; choose one of {', '.join(X_AXES)}")
    if not run_dirs:
        raise FbtError("no runs to plot")
    runs = []
    for run_dir in map(Path, run_dirs):
        config = read_config(run_dir)
        train_rows, valid_rows = read_metrics(run_dir)
        if not train_rows and not valid_rows:
            raise FbtError(f"{run_dir} has no metrics yet: {run_dir / 'metrics.csv'} is missing or empty")
        label = f"{run_dir.name} ({config['model'].get('model', '?')})"
        runs.append((label, task_class_or_base(config["train"].get("task", "text")), train_rows, valid_rows))
    metric = runs[0][1].valid_metric
    x_label, x_scale = X_AXES[x]
    valid_label, valid_scale = VALID_AXES.get(metric, (metric.replace("_", " "), 1.0))
    in_bits = all(task.tokens_are_bytes for _, task, _, _ in runs)
    loss_label, loss_scale = ("loss (bits per byte)", 1 / math.log(2)) if in_bits else ("loss (nats per token)", 1.0)

    plt = pyplot()
    legend_below = len(runs) > LEGEND_INSIDE  # below the panels, where it hides no curve
    height = 4.2 + (0.22 * (len(runs) + 2) if legend_below else 0.0)
    figure, (loss_axes, valid_axes) = plt.subplots(1, 2, figsize=(11, height), dpi=120)
    any_stages = False
    for label, task, train_rows, valid_rows in runs:
        xs, ys = _curve(train_rows, x, "train_loss")
        color = None
        if xs:
            (line,) = loss_axes.plot(
                [v * x_scale for v in xs], [v * loss_scale for v in ys], linewidth=1.2, label=label
            )
            color = line.get_color()
        for switch in stage_switches(train_rows + valid_rows, x):
            any_stages = True
            for axes in (loss_axes, valid_axes):
                axes.axvline(switch * x_scale, color=color, linestyle=":", linewidth=0.8, alpha=0.6)
        xs, ys = _curve(valid_rows, x, "valid_loss")
        if xs:
            loss_axes.plot([v * x_scale for v in xs], [v * loss_scale for v in ys], "o", markersize=3, color=color)
        if task.valid_metric != metric:
            continue
        xs, ys = _curve(valid_rows, x, metric)
        if xs:
            valid_axes.plot(
                [v * x_scale for v in xs], [v * valid_scale for v in ys], marker="o", markersize=3, label=label
            )
    if metric == "valid_accuracy":
        floors = runs[0][1].floors(read_config(run_dirs[0])["train"].get("data", ""), "valid")
        for (name, value), style in zip(floors.items(), (":", "--", "-.")):
            valid_axes.axhline(100 * value, color="gray", linestyle=style, linewidth=1, label=f"{name} ({value:.1%})")
    for axes, y_label, title in (
        (loss_axes, loss_label, "loss: training (lines), validation (dots)"),
        (valid_axes, valid_label, "validation" + (" (dotted: curriculum stage switches)" if any_stages else "")),
    ):
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(title, fontsize=9)
        axes.grid(alpha=0.3)
        if axes.get_lines():
            place = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16)} if legend_below else {}
            axes.legend(fontsize=8, **place)
        else:
            axes.text(0.5, 0.5, "no rows yet", ha="center", va="center", transform=axes.transAxes, color="gray")
    return save_figure(plt, figure, out)


def stage_switches(rows: list[dict], x: str) -> list[float]:
    """The x values (tokens or seconds) where a curriculum run first logged each stage after the first."""
    first_at: dict[int, float] = {}
    for row in rows:
        stage, at = row.get("stage"), row.get(x)
        if isinstance(stage, int) and stage > 0 and isinstance(at, (int, float)):
            first_at[stage] = min(at, first_at.get(stage, at))
    return [first_at[stage] for stage in sorted(first_at)]


def _curve(rows: list[dict], x: str, column: str) -> tuple[list[float], list[float]]:
    points = [(row[x], row[column]) for row in rows if isinstance(row.get(x), (int, float)) and column in row]
    return [px for px, _ in points], [float(py) for _, py in points]


def recorded_breakdown(run_dir: Path, split: str) -> dict:
    """The run's last `fbt eval --breakdown` of `split` (evaluations.json)."""
    recorded = read_json(run_dir / EVALUATIONS).get(split, {}) if (run_dir / EVALUATIONS).is_file() else {}
    if "breakdown" not in recorded:
        raise FbtError(
            f"{run_dir} has no breakdown of its {split} split: run `fbt eval {run_dir} --split {split} --breakdown`"
        )
    return recorded


def plot_breakdowns(run_dirs: list[str | Path], out: str | Path, split: str = "test") -> Path:
    """A panel per feature of the breakdown: each run's accuracy per bucket (a line per run, the buckets'
    example counts under them) and the split's floors, from the first run's evaluation."""
    if not run_dirs:
        raise FbtError("no runs to plot")
    evaluations = {Path(run_dir): recorded_breakdown(Path(run_dir), split) for run_dir in run_dirs}
    first = next(iter(evaluations.values()))
    titles = {feature["feature"]: feature["title"] for feature in first["breakdown"]}
    plt = pyplot()
    columns = min(2, len(titles))
    rows = -(-len(titles) // columns)
    figure, panels = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), dpi=120, squeeze=False)
    floors = {name: value for name, value in first.items() if name.startswith("floor_")}
    for axes, (feature, title) in zip(panels.flat, titles.items()):
        cells = {  # run -> [{"bucket", "accuracy", "examples"}] of this feature
            run_dir: next((f["buckets"] for f in evaluation["breakdown"] if f["feature"] == feature), [])
            for run_dir, evaluation in evaluations.items()
        }
        examples: dict[str, int] = {}  # bucket -> examples, in the order the runs list them
        for cell in (cell for run_cells in cells.values() for cell in run_cells):
            examples.setdefault(cell["bucket"], cell["examples"])
        names = list(examples)
        for run_dir, run_cells in cells.items():
            xs = [names.index(cell["bucket"]) for cell in run_cells]
            label = f"{run_dir.name} ({evaluations[run_dir]['accuracy']:.1%})"
            axes.plot(xs, [100 * cell["accuracy"] for cell in run_cells], marker="o", markersize=4, label=label)
        for (name, value), style in zip(floors.items(), (":", "--", "-.")):
            label = f"{name.removeprefix('floor_').replace('_', ' ')} ({value:.1%})"
            axes.axhline(100 * value, color="gray", linestyle=style, linewidth=1, label=label)
        axes.set_xticks(range(len(names)), [f"{b}\n{examples[b]:,}" for b in names], fontsize=7)
        axes.set_xlabel(f"{title} (examples below)", fontsize=8)
        axes.set_ylabel(f"answer accuracy ({split}, %)")
        axes.set_ylim(0, 101)
        axes.grid(alpha=0.3)
    for axes in panels.flat[len(titles) :]:
        axes.set_visible(False)
    panels.flat[0].legend(fontsize=7)
    return save_figure(plt, figure, out)
