"""The figures of an experiment report: a metric against a setting (or as bars), curves over training, the
learned memory mix of feedback models, and decoding speed against depth. Every figure has labelled axes with
units, a legend, and published values marked where the grid names them."""

from __future__ import annotations

from pathlib import Path

from fbt.plots import pyplot, save_figure

Point = tuple[float, float, float, float]  # (x, mean, min, max) over seeds
LINE_STYLES = (":", "--", "-.", (0, (1, 3)))


def _reference_lines(axes, lines: dict[str, float]) -> None:
    """Horizontal gray lines: floors or published values that hold at every x."""
    for (label, value), style in zip(lines.items(), LINE_STYLES):
        axes.axhline(value, color="gray", linestyle=style, linewidth=1, label=label)


def _finish(axes, x_label: str, y_label: str, title: str = "") -> None:
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title, fontsize=9)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)


def plot_metric_vs_setting(
    series: dict[str, list[Point]],
    x_label: str,
    y_label: str,
    out: Path,
    title: str = "",
    lines: dict[str, float] | None = None,
    marks: list[tuple[float, float, str, str]] | None = None,
) -> Path:
    """One line per series of (x, mean, min, max) points, the band spanning the seeds; `marks` are single
    published points (x, value, label, series label) drawn as stars."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    colours = {}
    for label, points in series.items():
        xs, means, lows, highs = (list(column) for column in zip(*sorted(points)))
        (line,) = axes.plot(xs, means, marker="o", label=label)
        axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
        colours[label] = line.get_color()
    for x, value, label, of_series in marks or []:  # a published point, in the colour of its series
        axes.plot([x], [value], marker="*", markersize=13, linestyle="none", color=colours.get(of_series), label=label)
    _reference_lines(axes, lines or {})
    if all(isinstance(p[0], (int, float)) and p[0] > 0 for points in series.values() for p in points):
        values = sorted({p[0] for points in series.values() for p in points})
        if values[-1] / values[0] >= 8:  # depths and spans double: equal steps per doubling
            axes.set_xscale("log", base=2)
            axes.set_xticks(values, [f"{v:g}" for v in values])
    _finish(axes, x_label, y_label, title)
    return save_figure(plt, figure, out)


def plot_bars(
    bars: dict[str, tuple[float, float, float]], y_label: str, out: Path, title: str = "", lines=None
) -> Path:
    """One bar per setting: its mean over seeds, with the min–max range as an error bar."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(1.6 + 1.3 * len(bars), 4.2), dpi=120)
    labels = list(bars)
    means = [bars[k][0] for k in labels]
    errors = [[m - bars[k][1] for k, m in zip(labels, means)], [bars[k][2] - m for k, m in zip(labels, means)]]
    axes.bar(range(len(labels)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    axes.set_xticks(range(len(labels)), [label.replace(", ", "\n") for label in labels], fontsize=7)
    _reference_lines(axes, lines or {})
    _finish(axes, "", y_label, title)
    return save_figure(plt, figure, out)


FAMILY_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def family_colours(plt, labels: list[str]) -> dict[str, object]:
    """A colour map per family (the label's first part, e.g. the model) and a shade per member, darker
    for later members (deeper, wider...), so curves of one family read as one."""
    families: dict[str, list[str]] = {}
    for label in labels:
        families.setdefault(label.split(", ")[0], []).append(label)
    if len(families) == len(labels):  # one curve per family: the usual colour cycle
        return {label: f"C{i}" for i, label in enumerate(labels)}
    colours = {}
    for index, members in enumerate(families.values()):
        colour_map = plt.get_cmap(FAMILY_MAPS[index % len(FAMILY_MAPS)])
        for rank, label in enumerate(members):
            colours[label] = colour_map(0.45 + 0.5 * (rank + 1) / len(members))
    return colours


def plot_curves(
    curves: dict[str, tuple[list[float], list[float]]],
    x_label: str,
    y_label: str,
    out: Path,
    title: str = "",
    lines: dict[str, float] | None = None,
) -> Path:
    """Validation metric over training, one line per setting (mean over its seeds)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.4), dpi=120)
    colours = family_colours(plt, list(curves))
    for label, (xs, ys) in curves.items():
        axes.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.2, color=colours[label], label=label)
    _reference_lines(axes, lines or {})
    _finish(axes, x_label, y_label, title)
    return save_figure(plt, figure, out)


def plot_memory_mix(panels: dict[str, tuple[list[int], list[list[float]]]], out: Path) -> Path:
    """softmax(w) over training for each feedback cell: the weight of x^0 (embedding) .. x^L in its memory."""
    plt = pyplot()
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=120, squeeze=False)
    for axes, (label, (steps, weights)) in zip(grid.flat, panels.items()):
        for layer, values in enumerate(zip(*weights)):
            name = "embedding (x^0)" if layer == 0 else f"layer {layer} (x^{layer})"
            axes.plot(steps, values, linewidth=1.3, label=name)
        axes.set_ylim(0, 1)
        _finish(axes, "training step", "weight in the memory", label)
    for axes in list(grid.flat)[len(panels) :]:
        axes.set_visible(False)
    return save_figure(plt, figure, out)


def plot_decode_speed(
    decode: dict[tuple[str, str], list[tuple[int, float]]], state: dict[str, list[tuple[int, int]]], out: Path
) -> Path:
    """Left: generated tokens per second against depth, a colour per model and a line style per batch size;
    right: state bytes per token of context."""
    plt = pyplot()
    figure, (speed_axes, state_axes) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colours = {family: f"C{i}" for i, family in enumerate(state)}
    batches = list(dict.fromkeys(batch for _, batch in decode))
    for (family, batch), points in decode.items():
        xs, ys = zip(*sorted(points))
        style = ("-", "--", ":", "-.")[batches.index(batch) % 4]
        speed_axes.plot(xs, ys, marker="o", color=colours[family], linestyle=style, label=f"{family}, {batch}")
    for family, points in state.items():
        xs, ys = zip(*sorted(points))
        state_axes.plot(xs, ys, marker="o", color=colours[family], label=family)
    for axes in (speed_axes, state_axes):
        ticks = sorted({x for points in state.values() for x, _ in points})
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks, [str(t) for t in ticks])
    speed_axes.set_yscale("log")
    state_axes.set_ylim(bottom=0)
    _finish(speed_axes, "layers", "generated tokens per second", "decoding speed")
    _finish(state_axes, "layers", "state bytes per token of context", "decoding state")
    return save_figure(plt, figure, out)
