"""What runs a directory holds and how far each got: the data behind `fbt runs`, `fbt show` and `fbt plot`.

Everything here reads files only (configs, resume.json, safetensors headers, metrics.csv): listing a folder of
runs never loads weights or builds a model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from fbt.checkpoint import find_checkpoint
from fbt.errors import FbtError
from fbt.formatting import format_count
from fbt.rundir import CHECKPOINTS, CONFIG, METRICS, RESUME_INFO, SUMMARY, WEIGHTS, read_json
from fbt.tasks import task_class_or_base
from fbt.training.metrics_log import COLUMNS


@dataclass
class RunInfo:
    path: Path
    model: str
    task: str
    layers: int
    parameters: int | None  # None without a checkpoint
    step: int  # steps done, from the newest complete checkpoint
    steps: int  # steps planned
    tokens: int
    best_valid: float | None
    best_valid_name: str  # the task's valid_metric: "valid_accuracy" (higher is better), "valid_bits_per_byte"...
    status: str  # "complete", "stopped" (or the summary's own word for an early end), "partial", "no checkpoint"

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def valid_metric_name(task: str) -> str:
    """The validation column that says how good a run of `task` is."""
    return task_class_or_base(task).valid_metric


def is_run_dir(path: Path) -> bool:
    """A directory whose config.json names a model and a training run (checkpoint directories excluded)."""
    path = Path(path)
    if not (path / CONFIG).is_file() or (path / WEIGHTS).exists():
        return False
    try:
        config = read_json(path / CONFIG)
    except FbtError:
        return False
    return "model" in config and "train" in config


def read_config(path: str | Path) -> dict:
    """config.json of run directory `path`; FbtError when `path` is not a run."""
    path = Path(path)
    if not path.exists():
        raise FbtError(f"no such run directory: {path}")
    if (path / WEIGHTS).exists() and path.parent.name == CHECKPOINTS:
        raise FbtError(f"{path} is a checkpoint; pass its run directory {path.parent.parent}")
    if not (path / CONFIG).is_file():
        raise FbtError(f"no run in {path}: expected {CONFIG} written by `fbt train`")
    config = read_json(path / CONFIG)  # raises, naming the file, when it is corrupt
    if not isinstance(config.get("model"), dict) or not isinstance(config.get("train"), dict):
        raise FbtError(f"no run in {path}: {path / CONFIG} has no 'model' and 'train' entries")
    return config


def find_runs(root: str | Path) -> list[RunInfo]:
    """`root` itself if it is a run, else every run below it, sorted by path; [] when there is none."""
    root = Path(root)
    if not root.exists():
        raise FbtError(f"no such directory: {root}")
    if not root.is_dir():
        raise FbtError(f"{root} is not a directory")
    if is_rl_run(root):
        raise FbtError(f"{root} is a reinforcement-learning run: see `fbt rl eval` and `fbt rl plot`")
    if _looks_like_run(root):
        return [run_info(root)]
    found = []
    for directory, subdirs, _ in os.walk(root):
        # A run's own folders (checkpoints hold config.json too) are never runs of their own; hidden folders
        # are staging areas or tool state.
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        current = Path(directory)
        if current != root and _looks_like_run(current):
            if not is_rl_run(current):  # RL runs have their own commands (`fbt rl`)
                found.append(current)
            subdirs.clear()
    return [run_info(path) for path in sorted(found)]


def is_rl_run(path: Path) -> bool:
    """A run directory written by `fbt rl train` (its config.json holds an "rl" entry)."""
    try:
        with open(Path(path) / CONFIG) as handle:
            return "rl" in json.load(handle)
    except (OSError, ValueError, TypeError):
        return False


def _looks_like_run(path: Path) -> bool:
    # A corrupt config.json beside a run's other files is reported (by run_info) rather than silently skipped.
    has_run_files = (path / CONFIG).is_file() and ((path / CHECKPOINTS).is_dir() or (path / METRICS).is_file())
    return is_run_dir(path) or (has_run_files and not (path / WEIGHTS).exists())


def run_info(path: str | Path) -> RunInfo:
    path = Path(path)
    config = read_config(path)
    model, train = config["model"], config["train"]
    task = str(train.get("task", "text"))
    judge = task_class_or_base(task)  # its valid_metric says how good the run is
    steps = int(train.get("steps", 0))
    try:
        checkpoint_dir: Path | None = find_checkpoint(path)
    except FbtError:
        checkpoint_dir = None
    resume = read_json(checkpoint_dir / RESUME_INFO) if checkpoint_dir else {}
    step = int(resume.get("step", 0))
    summary_path = path / SUMMARY
    summary = read_json(summary_path) if summary_path.is_file() else None
    _, valid_rows = read_metrics(path)
    return RunInfo(
        path=path,
        model=str(model.get("model", "?")),
        task=task,
        layers=int(model.get("layers", 0)),
        parameters=count_parameters(checkpoint_dir / WEIGHTS) if checkpoint_dir else None,
        step=step,
        steps=steps,
        tokens=int(resume.get("tokens", 0)),
        best_valid=best_value(valid_rows, judge.valid_metric, judge.higher_is_better),
        best_valid_name=judge.valid_metric,
        status=run_status(checkpoint_dir is not None, step, steps, summary),
    )


def run_status(has_checkpoint: bool, step: int, steps: int, summary: dict | None) -> str:
    if not has_checkpoint:
        return "no checkpoint"
    if step >= steps:
        return "complete"
    # A summary written at an earlier step is stale: the run was resumed since and did not finish cleanly.
    if summary is not None and summary.get("step", step) == step:
        status = str(summary.get("status", "stopped"))
        # "complete" with steps left: the run was extended (a longer --steps) after that summary.
        return "partial" if status == "complete" else status
    return "partial"


def count_parameters(weights: Path) -> int:
    """Number of weights in a safetensors file, from its header alone."""
    total = 0
    try:
        with safe_open(weights, framework="pt") as handle:
            for name in handle.keys():
                count = 1
                for size in handle.get_slice(name).get_shape():
                    count *= size
                total += count
    except (SafetensorError, OSError, ValueError) as error:
        raise FbtError(f"{weights} is corrupt or truncated: {error}") from None
    return total


def best_value(valid_rows: list[dict], metric: str, higher_is_better: bool) -> float | None:
    values = [row[metric] for row in valid_rows if isinstance(row.get(metric), (int, float))]
    values = [value for value in values if value == value]  # NaN is never the best
    if not values:
        return None
    return max(values) if higher_is_better else min(values)


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(train rows, valid rows) of a run's metrics.csv, numbers parsed and empty cells left out."""
    path = Path(path)
    read_config(path)
    metrics_csv = path / METRICS
    train_rows: list[dict] = []
    valid_rows: list[dict] = []
    if not metrics_csv.is_file():
        return train_rows, valid_rows
    with open(metrics_csv, newline="") as handle:
        for raw in csv.DictReader(handle):
            row = {name: _parse_cell(value) for name, value in raw.items() if name and value}
            kind = raw.get("kind")
            if kind == "train":
                train_rows.append(row)
            elif kind == "valid":
                valid_rows.append(row)
    return train_rows, valid_rows


def _parse_cell(value: str) -> int | float | str:
    """A number, or the text itself where it is none (the row's kind, a diagnostic such as a list of weights)."""
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return value


def show_run(path: str | Path) -> dict:
    """Everything known about one run, as plain JSON types."""
    path = Path(path)
    if is_rl_run(path):
        raise FbtError(f"{path} is a reinforcement-learning run: see `fbt rl eval` and `fbt rl plot`")
    info = run_info(path)
    summary_path = path / SUMMARY
    train_rows, _ = read_metrics(path)
    return {
        "run": str(path),
        "config": read_config(path),
        "summary": read_json(summary_path) if summary_path.is_file() else None,
        "info": info.to_json(),
        "diagnostics": last_diagnostics(train_rows),
    }


def last_diagnostics(train_rows: list[dict]) -> dict:
    """The model's own values at its last log (e.g. the feedback memory's RMS and mix, learned spans): the
    columns past the training ones, each from the latest row that has it."""
    found: dict = {}
    for row in train_rows:
        found.update({name: value for name, value in row.items() if name not in COLUMNS})
    return found


def format_valid(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "valid_accuracy":
        return f"{value:.2%} acc"
    if metric == "valid_bits_per_byte":
        return f"{value:.3f} bpb"
    if metric == "valid_perplexity":
        return f"{value:.2f} ppl"
    return f"{value:.3f} loss"


TABLE_HEADER = ("run", "model", "layers", "params", "steps", "tokens", "best valid", "status")
RIGHT_ALIGNED = {"layers", "params", "steps", "tokens", "best valid"}


def format_runs_table(runs: list[RunInfo]) -> str:
    rows = [TABLE_HEADER] + [
        (
            str(run.path),
            run.model,
            str(run.layers),
            "-" if run.parameters is None else format_count(run.parameters),
            f"{run.step}/{run.steps}",
            format_count(run.tokens, decimals=2),
            format_valid(run.best_valid, run.best_valid_name),
            run.status,
        )
        for run in runs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(TABLE_HEADER, row, widths)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
