"""`fbt experiment report DIR`: a Markdown report of a grid's finished cells.

Per section of the grid: a table (mean and min–max over seeds, training time), the metric against the setting
that varies (or as bars), validation curves against training tokens with the code-exec heuristics as floors,
and for language models the same curves against wall-clock time with the metric at equal time. Then the
learned memory mix of feedback cells over training, the host the cells ran on, and every command. An rl grid
reports the evaluation episodes' success rate and the training episodes' success against frames. A bench grid
gets a table and a figure of decoding speed and state size against depth.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from fbt.errors import FbtError
from fbt.experiments import figures
from fbt.experiments.grid import load_grid
from fbt.rundir import read_json
from fbt.runs import read_config, read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The setting drawn along the x axis, in order of preference, when it varies within a section.
X_SETTINGS = ("layers", "span", "dim", "steps")
METRIC_LABELS = {
    "accuracy": "test accuracy (%)",
    "bits_per_byte": "test bits per byte",
    "success_rate": "success rate (%, evaluation episodes)",
}
VALID_LABELS = {"accuracy": "valid accuracy (%)", "bits_per_byte": "valid bits per byte"}
PERCENTS = ("accuracy", "success_rate")


def read_results(out: Path) -> list[dict]:
    """Finished cells, in the order of out/grid.toml where that file loads, else by cell name."""
    paths = sorted((Path(out) / "results").glob("*.json"))
    if not paths:
        raise FbtError(f"no finished cells in {out}/results (run `fbt experiment` first)")
    results = [read_json(path) for path in paths]
    try:
        order = {cell.name: i for i, cell in enumerate(load_grid(str(Path(out) / "grid.toml"), Path(out)).cells)}
    except FbtError:
        order = {}
    return sorted(results, key=lambda r: order.get(r["cell"], len(order)))


def read_grid(out: Path) -> dict:
    path = out / "grid.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def scale(value: float, metric: str) -> float:
    return 100 * value if metric in PERCENTS else value


def format_value(value: float, metric: str) -> str:
    return f"{value:.2%}" if metric in PERCENTS else f"{value:.3f}"


def metric_of(results: list[dict]) -> str:
    """The test metric a grid's cells report: an rl grid's success rate, a text grid's bits per byte, else
    code-exec's accuracy."""
    for metric in ("success_rate", "bits_per_byte"):
        if any(metric in r["test"] for r in results):
            return metric
    return "accuracy"


def spread(values: list[float], metric: str) -> str:
    if len(values) == 1:
        return format_value(values[0], metric)
    low, high = format_value(min(values), metric), format_value(max(values), metric)
    return f"{format_value(statistics.mean(values), metric)} ({low}–{high})"


def values_of(result: dict) -> dict:
    """The settings that tell a cell apart, with their effective values."""
    return result["values"]


def varying_keys(results: list[dict]) -> list[str]:
    """Settings with two or more values among these cells (seed excluded; cells a setting does not apply to
    do not count)."""
    keys = list(dict.fromkeys(k for r in results for k in values_of(r) if k != "seed"))
    varying = [k for k in keys if len({repr(values_of(r)[k]) for r in results if k in values_of(r)}) > 1]
    return sorted(varying, key=lambda k: (k != "model", k != "layers"))


def group_results(results: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    """Results by their values of `keys` (seeds of one setting together), in first-seen order; "–" where a
    setting does not apply."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(tuple(values_of(result).get(k, "–") for k in keys), []).append(result)
    seen: dict = {}  # non-numbers keep their first-seen order, numbers sort by value

    def order(values: tuple) -> tuple:
        return tuple(v if isinstance(v, (int, float)) else seen.setdefault(repr(v), len(seen)) for v in values)

    return dict(sorted(groups.items(), key=lambda item: order(item[0])))


def label_of(keys: list[str], values: tuple, leave_out: str | None = None) -> str:
    """'feedback, layers=2': a model by its name, other settings as key=value."""
    pairs = sorted(zip(keys, values), key=lambda pair: (pair[0] != "model", pair[0] != "layers"))
    named = [str(v) if k == "model" else f"{k}={v}" for k, v in pairs if k != leave_out and v != "–"]
    return ", ".join(named)


def mean_curve(out: Path, results: list[dict], metric: str, x: str) -> tuple[list[float], list[float]]:
    """Validation `metric` against `x` (tokens or elapsed_s), averaged over the seeds at each evaluated step."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for result in results:
        _, valid_rows = read_metrics(out / "cells" / result["cell"])
        for row in valid_rows:
            if f"valid_{metric}" in row:
                by_step.setdefault(row["step"], []).append((row[x], row[f"valid_{metric}"]))
    steps = [s for s in sorted(by_step) if len(by_step[s]) == len(results)]
    xs = [statistics.mean(p[0] for p in by_step[s]) for s in steps]
    ys = [scale(statistics.mean(p[1] for p in by_step[s]), metric) for s in steps]
    return xs, ys


def heuristic_lines(results: list[dict]) -> dict[str, float]:
    """The code-exec floors on the test split of the section's dataset (one dataset per section)."""
    from fbt.data.code_exec import load_code_exec_split
    from fbt.data.code_exec_heuristics import HEURISTIC_LABELS, heuristic_accuracies

    datasets = {r["settings"].get("data") for r in results}
    if len(datasets) != 1 or not Path(str(next(iter(datasets)))).is_dir():
        return {}
    floors = heuristic_accuracies(*load_code_exec_split(next(iter(datasets)), "test"))
    return {f"{HEURISTIC_LABELS[name]} ({value:.1%})": 100 * value for name, value in floors.items()}


def memoryless_line(results: list[dict]) -> dict[str, float]:
    """The success rate a policy without memory can reach, when the cells' environment has one (one env)."""
    from fbt.rl.envs import MEMORYLESS_SUCCESS

    envs = {r["test"].get("env") for r in results}
    floor = MEMORYLESS_SUCCESS.get(next(iter(envs))) if len(envs) == 1 else None
    return {} if floor is None else {f"memoryless policy ({floor:.0%})": 100 * floor}


def reference_marks(references: list[dict], x: str, section_results: list[dict]) -> list[tuple]:
    """Published values whose settings match cells of this section and name the x setting."""
    marks = []
    for reference in references:
        located = {k: v for k, v in reference.items() if k not in ("label", "value")}
        if x in located and any(
            all({**r["settings"], **values_of(r)}.get(k) == v for k, v in located.items() if k != x)
            for r in section_results
        ):
            others = {k: v for k, v in located.items() if k != x}
            marks.append(
                (located[x], reference["value"], reference["label"], label_of(list(others), tuple(others.values())))
            )
    return marks


def is_axis(x: str, keys: list[str], groups: list[tuple]) -> bool:
    """A setting can be the x axis when it is a number everywhere and takes two or more values with the
    other settings fixed (layers tied to the model, as in "feedback 2 vs transformer-xl 4", cannot)."""
    index = keys.index(x)
    if not all(isinstance(values[index], (int, float)) for values in groups):
        return False
    lines: dict[tuple, set] = {}
    for values in groups:
        lines.setdefault(values[:index] + values[index + 1 :], set()).add(values[index])
    return any(len(xs) > 1 for xs in lines.values())


class ReportWriter:
    def __init__(self, out: Path):
        self.out = out
        self.results = read_results(out)
        self.grid = read_grid(out)
        self.lines = [f"# Experiment {out.name}", ""]
        if self.grid.get("description"):
            self.lines += [self.grid["description"][0].upper() + self.grid["description"][1:] + ".", ""]

    def figure(self, path: Path, caption: str) -> None:
        self.lines += [f"![{caption}](figures/{path.name})", ""]

    def training_sections(self) -> None:
        metric = metric_of(self.results)
        sections = list(dict.fromkeys(s for r in self.results for s in r.get("sections", [""])))
        for number, section in enumerate(sections):
            results = [r for r in self.results if section in r.get("sections", [""])]
            if section:
                self.lines += [f"## {section[0].upper()}{section[1:]}", ""]
            self.section(results, metric, f"s{number}_" if len(sections) > 1 else "")
        self.memory_mix()

    def section(self, results: list[dict], metric: str, prefix: str) -> None:
        keys = varying_keys(results)
        groups = group_results(results, keys)
        time_label = "train time (s)"
        amount = "frames" if metric == "success_rate" else "tokens"
        header = [*keys, "seeds", f"test {metric}: mean (min–max)", f"train {amount}", time_label]
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for values, members in groups.items():
            seconds = statistics.mean(r["train"].get("elapsed_s", 0) for r in members)
            tokens = members[0]["train"].get(amount, 0)
            row = [*map(str, values), str(len(members)), spread([r["test"][metric] for r in members], metric)]
            self.lines.append("| " + " | ".join([*row, f"{tokens:,}", f"{seconds:,.0f}"]) + " |")
        self.lines.append("")
        floors = {"accuracy": heuristic_lines, "success_rate": memoryless_line}.get(metric, lambda _: {})(results)
        x = next((k for k in X_SETTINGS if k in keys and is_axis(k, keys, list(groups))), None)
        directory = self.out / "figures"
        if x is not None:
            series: dict[str, list] = {}
            for values, members in groups.items():
                scores = [scale(r["test"][metric], metric) for r in members]
                point = (dict(zip(keys, values))[x], statistics.mean(scores), min(scores), max(scores))
                series.setdefault(label_of(keys, values, x) or metric, []).append(point)
            marks = reference_marks(self.grid.get("reference", []), x, results)
            marks = [(mx, scale(value, metric), label, line) for mx, value, label, line in marks]
            path = figures.plot_metric_vs_setting(
                series,
                x,
                METRIC_LABELS[metric],
                directory / f"{prefix}{metric}_vs_{x}.png",
                f"{self.budget(results)}; band: min–max over seeds",
                floors,
                marks,
            )
            self.figure(path, f"{metric} vs {x}")
        elif len(groups) > 1:
            bars = {}
            for values, members in groups.items():
                scores = [scale(r["test"][metric], metric) for r in members]
                bars[label_of(keys, values)] = (statistics.mean(scores), min(scores), max(scores))
            path = figures.plot_bars(
                bars,
                METRIC_LABELS[metric],
                directory / f"{prefix}{metric}_bars.png",
                f"{self.budget(results)}; error bars: min–max over seeds",
                floors,
            )
            self.figure(path, f"{metric} per setting")
        if metric == "success_rate":
            self.rl_curves(groups, keys, prefix)
            return
        curves = {label_of(keys, v) or metric: mean_curve(self.out, m, metric, "tokens") for v, m in groups.items()}
        curves = {label: ([x / 1e6 for x in xs], ys) for label, (xs, ys) in curves.items() if xs}
        if any(len(xs) > 1 for xs, _ in curves.values()):  # a curve, not only the final evaluation
            path = figures.plot_curves(
                curves,
                "training tokens (millions)",
                VALID_LABELS[metric],
                directory / f"{prefix}valid_{metric}_vs_tokens.png",
                lines=floors,
            )
            self.figure(path, f"valid {metric} vs training tokens")
        if metric == "bits_per_byte":
            self.wall_clock(groups, keys, metric, prefix)

    def rl_curves(self, groups: dict, keys: list[str], prefix: str) -> None:
        """The success rate of the training episodes against frames: mean and min–max band over seeds."""
        from fbt.rl.plots import plot_rl_groups

        runs = {
            label_of(keys, v) or "success_rate": [self.out / "cells" / r["cell"] for r in m] for v, m in groups.items()
        }
        path = plot_rl_groups(runs, self.out / "figures" / f"{prefix}train_success_vs_frames.png")
        self.figure(path, "training success rate vs frames")

    def wall_clock(self, groups: dict, keys: list[str], metric: str, prefix: str) -> None:
        """The validation curves against training seconds: where the sequential cost of a model shows."""
        curves = {label_of(keys, v): mean_curve(self.out, m, metric, "elapsed_s") for v, m in groups.items()}
        curves = {label: curve for label, curve in curves.items() if curve[0]}
        if not any(len(xs) > 1 for xs, _ in curves.values()):
            return
        directory = self.out / "figures"
        path = figures.plot_curves(
            curves,
            "training wall-clock time (s, one thread per cell)",
            VALID_LABELS[metric],
            directory / f"{prefix}valid_{metric}_vs_time.png",
        )
        self.figure(path, f"valid {metric} vs wall-clock time")

    def budget(self, results: list[dict]) -> str:
        """What the section's cells had equal: training tokens, or wall-clock seconds when they share a budget."""
        if any("frames" in r["train"] for r in results):
            return "equal frames"
        budgets = {read_config(self.out / "cells" / r["cell"])["train"].get("time_budget", 0) for r in results}
        if len(budgets) == 1 and budgets != {0}:
            return f"equal wall-clock time: {next(iter(budgets)):g} s of training per cell"
        return "equal training tokens"

    def memory_mix(self) -> None:
        """softmax(w) over training of feedback cells that learn the mix (first seed of each setting)."""
        if metric_of(self.results) == "success_rate":  # rl runs log no mix
            return
        panels = {}
        for result in self.results:
            if values_of(result).get("seed", 0) != 0:
                continue
            train_rows, _ = read_metrics(self.out / "cells" / result["cell"])
            rows = [row for row in train_rows if row.get("memory_weights")]
            if rows:
                weights = [[float(w) for w in row["memory_weights"].split()] for row in rows]
                named = {k: v for k, v in values_of(result).items() if k != "seed"}
                panels[label_of(list(named), tuple(named.values())) or result["cell"]] = (
                    [row["step"] for row in rows],
                    weights,
                )
        if panels:
            self.lines += ["## The learned memory mix", ""]
            self.lines += ["softmax(w) over training: how much of each layer's output the feedback memory holds.", ""]
            self.figure(figures.plot_memory_mix(panels, self.out / "figures" / "memory_mix.png"), "memory mix")

    def bench_section(self) -> None:
        keys = varying_keys(self.results)
        batches = list(self.results[0]["bench"]["decode_tokens_per_s"])
        header = [*keys, "train tok/s", *(f"decode tok/s (batch {b})" for b in batches), "state bytes/token"]
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        decode: dict[str, list] = {}
        state: dict[str, list] = {}
        for result in self.results:
            bench, settings = result["bench"], {**result["settings"], **values_of(result)}
            rates = [f"{bench['decode_tokens_per_s'][b]:,.0f}" for b in batches]
            values = [str(settings.get(k)) for k in keys]
            row = [*values, f"{bench['train_tokens_per_s']:,.0f}", *rates, f"{bench['state_bytes_per_token']:,}"]
            self.lines.append("| " + " | ".join(row) + " |")
            family = label_of([k for k in keys if k != "layers"], tuple(settings.get(k) for k in keys if k != "layers"))
            for b in batches:
                decode.setdefault((family, f"batch {b}"), []).append(
                    (settings["layers"], bench["decode_tokens_per_s"][b])
                )
            state.setdefault(family, []).append((settings["layers"], bench["state_bytes_per_token"]))
        first = self.results[0]["bench"]
        self.lines += [
            "",
            f"Device {first['device']}, {first['threads']} thread(s), matmul peak "
            f"{first['matmul_peak_gflops']} GFLOP/s; medians over repetitions, models interleaved.",
            "",
        ]
        if "layers" in keys:
            self.figure(
                figures.plot_decode_speed(decode, state, self.out / "figures" / "decode_speed.png"), "decode speed"
            )

    def host(self) -> None:
        host = self.out / "host.json"
        if host.is_file():
            info = read_json(host)
            self.lines += ["## Where it ran", "", ", ".join(f"{k}: {v}" for k, v in info.items()), ""]
        if "train" in self.results[0]:
            seconds = sum(r["train"].get("elapsed_s", 0) for r in self.results)
            seeds = sorted({values_of(r).get("seed", 0) for r in self.results})
            self.lines += [
                f"{len(self.results)} cells, seeds {', '.join(map(str, seeds))}; "
                f"{seconds / 60:,.0f} minutes of training in all (one thread per cell).",
                "",
            ]

    def commands(self) -> None:
        self.lines += ["## Commands", ""]
        for result in self.results:
            if "bench_command" in result:
                self.lines.append(f"- `{result['bench_command']}`")
                break
            self.lines += [f"- `{result['train_command']}`", f"  then `{result['eval_command']}`"]


def build_report(out: str | Path) -> Path:
    writer = ReportWriter(Path(out))
    for stale in (writer.out / "figures").glob("*.png"):  # figures of an earlier report of fewer cells
        stale.unlink()
    if "bench" in writer.results[0]:
        writer.bench_section()
    else:
        writer.training_sections()
    writer.host()
    writer.commands()
    report = writer.out / "REPORT.md"
    report.write_text("\n".join(writer.lines) + "\n")
    return report
