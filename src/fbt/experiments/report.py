"""`fbt experiment report DIR`: a Markdown report of a grid's finished cells, with a figure and every command."""

from __future__ import annotations

import statistics
from pathlib import Path

from fbt.errors import FbtError
from fbt.training import checkpoint

# The setting drawn along the x axis, in order of preference, when it varies across the grid.
X_SETTINGS = ("layers", "span", "dim", "steps")


def read_results(out: Path) -> list[dict]:
    paths = sorted((Path(out) / "results").glob("*.json"))
    if not paths:
        raise FbtError(f"no finished cells in {out}/results (run `fbt experiment` first)")
    return [checkpoint.read_json(path) for path in paths]


def summarise(results: list[dict]) -> tuple[str, dict[tuple, list[float]], list[str]]:
    """The metric, its values over seeds per setting group, and the settings that vary (seed excluded)."""
    metric = "accuracy" if all("bits_per_byte" not in r["test"] for r in results) else "bits_per_byte"
    keys = list(dict.fromkeys(k for r in results for k in r["settings"] if k != "seed"))
    varying = [k for k in keys if len({repr(r["settings"].get(k)) for r in results}) > 1]
    groups: dict[tuple, list[float]] = {}
    for result in results:
        key = tuple(result["settings"].get(k) for k in varying)
        groups.setdefault(key, []).append(result["test"][metric])
    return metric, groups, varying


def format_value(value: float, metric: str) -> str:
    return f"{value:.2%}" if metric == "accuracy" else f"{value:.3f}"


def build_report(out: str | Path) -> Path:
    out = Path(out)
    results = read_results(out)
    metric, groups, varying = summarise(results)
    lines = [f"# Experiment {out.name}", ""]
    header = [*varying, "seeds", f"test {metric}: mean (min–max)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, values in groups.items():
        spread = f"{format_value(statistics.mean(values), metric)} ({format_value(min(values), metric)}–"
        spread += f"{format_value(max(values), metric)})"
        lines.append("| " + " | ".join([*map(str, key), str(len(values)), spread]) + " |")
    x = next((k for k in X_SETTINGS if k in varying), None)
    if x is not None:
        from fbt.plots import plot_grid_metric

        series: dict[str, list] = {}
        for key, values in groups.items():
            named = dict(zip(varying, key))
            label = ", ".join(f"{k}={v}" for k, v in named.items() if k != x) or metric
            point = (named[x], statistics.mean(values), min(values), max(values))
            series.setdefault(label, []).append(point)
        y_label = "test accuracy" if metric == "accuracy" else "test bits per byte"
        figure = plot_grid_metric(series, x, y_label, out / "figures" / f"{metric}_vs_{x}.png")
        lines += ["", f"![{metric} vs {x}](figures/{figure.name})"]
    lines += ["", "## Commands", ""]
    for result in results:
        lines += [f"- `{result['train_command']}`", f"  then `{result['eval_command']}`"]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report
