"""What runs a directory holds and how far each got: the data behind `fbt runs`, `fbt show` and `fbt plot`.

Everything here reads files only (configs, resume.json, safetensors headers, metrics.csv, evaluations.json):
listing a folder of runs never loads weights or builds a model. Runs of `fbt rl train` are listed beside those
of `fbt train`, with frames for tokens and their training success for a validation.
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
from fbt.rundir import CHECKPOINTS, CONFIG, EVALUATIONS, METRICS, RESUME_INFO, SUMMARY, WEIGHTS, read_json
from fbt.tasks import task_class_or_base
from fbt.training.metrics_log import COLUMNS


@dataclass
class RunInfo:
    path: Path
    model: str
    task: str
    layers: int
    parameters: int | None  # None without a checkpoint
    step: int  # steps (RL: updates) done, from the newest complete checkpoint
    steps: int  # steps planned
    tokens: int  # RL: frames
    best_valid: float | None
    best_valid_name: str  # the task's valid_metric: "valid_accuracy" (higher is better), "valid_bits_per_byte"...
    status: str  # "complete", "stopped" (or the summary's own word for an early end), "partial", "no checkpoint"
    test: float | None = None  # the task's test_metric in the run's last `fbt eval` of its test split
    test_name: str = ""
    test_step: int | None = None  # the step of the checkpoint that evaluation read

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def is_run_dir(path: Path) -> bool:
    """A directory whose config.json names a model and a training run, or an RL run (checkpoint directories
    excluded)."""
    path = Path(path)
    if not (path / CONFIG).is_file() or (path / WEIGHTS).exists():
        return False
    try:
        config = read_json(path / CONFIG)
    except FbtError:
        return False
    return ("model" in config and "train" in config) or "rl" in config


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
    if _looks_like_run(root):
        return [run_info(root)]
    found = []
    for directory, subdirs, _ in os.walk(root):
        # A run's own folders (checkpoints hold config.json too) are never runs of their own; hidden folders
        # are staging areas or tool state.
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        current = Path(directory)
        if current != root and _looks_like_run(current):
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
    if is_rl_run(path):
        return rl_run_info(path)
    config = read_config(path)
    model, train = config["model"], config["train"]
    task = str(train.get("task", "text"))
    judge = task_class_or_base(task)  # its valid_metric says how good the run is
    steps = int(train.get("steps", 0))
    checkpoint_dir = newest_checkpoint(path)
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
        **test_figure(path, judge.test_metric),
    )


def newest_checkpoint(path: Path) -> Path | None:
    try:
        return find_checkpoint(path)
    except FbtError:
        return None


def test_figure(path: Path, metric: str) -> dict:
    """RunInfo's test fields from the run's recorded evaluation of its test split (evaluations.json)."""
    recorded = read_json(path / EVALUATIONS).get("test", {}) if (path / EVALUATIONS).is_file() else {}
    value = recorded.get(metric)
    if not isinstance(value, (int, float)):
        return {"test_name": metric}
    checkpoint = str(recorded.get("checkpoint", ""))
    step = int(checkpoint.split("-")[-1]) if checkpoint.startswith("step-") else None
    return {"test": float(value), "test_name": metric, "test_step": step}


RL_SUCCESS_UPDATES = 10  # an RL run's validation figure: its success rate over its last updates' episodes


def rl_run_info(path: Path) -> RunInfo:
    """An RL run's row: updates for steps, frames for tokens, the training success of its last updates for a
    validation figure, and the success rate of its last `fbt rl eval` for a test figure."""
    from fbt.rl.config import RLConfig

    rl = read_json(path / CONFIG)["rl"]
    if not isinstance(rl, dict):
        raise FbtError(f"{path / CONFIG} has an 'rl' entry that is not an object")
    config = RLConfig.from_dict(rl)
    checkpoint_dir = newest_checkpoint(path)
    resume = read_json(checkpoint_dir / RESUME_INFO) if checkpoint_dir else {}
    steps = -(-config.frames // config.frames_per_update)
    step = int(resume.get("update", 0))
    rows = [row for row in read_csv_rows(path / METRICS) if isinstance(row.get("success_rate"), (int, float))]
    recent = [row["success_rate"] for row in rows[-RL_SUCCESS_UPDATES:]]
    return RunInfo(
        path=path,
        model=config.policy,
        task=f"rl {config.env}",
        layers=config.layers,
        parameters=count_parameters(checkpoint_dir / WEIGHTS) if checkpoint_dir else None,
        step=step,
        steps=steps,
        tokens=int(resume.get("frames", 0)),
        best_valid=sum(recent) / len(recent) if recent else None,
        best_valid_name="train_success_rate",
        status=run_status(checkpoint_dir is not None, step, steps, None),
        **test_figure(path, "success_rate"),
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
    rows = read_csv_rows(path / METRICS)
    return [row for row in rows if row.get("kind") == "train"], [row for row in rows if row.get("kind") == "valid"]


def read_csv_rows(metrics_csv: Path) -> list[dict]:
    """The rows of a metrics.csv, numbers parsed and empty cells left out; [] when there is no file."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as handle:
        return [
            {name: _parse_cell(value) for name, value in raw.items() if name and value}
            for raw in csv.DictReader(handle)
        ]


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
    info = run_info(path)
    summary_path = path / SUMMARY
    rl = is_rl_run(path)
    train_rows = [] if rl else read_metrics(path)[0]
    evaluations = path / EVALUATIONS
    return {
        "run": str(path),
        "config": read_json(path / CONFIG) if rl else read_config(path),
        "summary": read_json(summary_path) if summary_path.is_file() else None,
        "info": info.to_json(),
        "evaluations": read_json(evaluations) if evaluations.is_file() else {},
        "diagnostics": last_diagnostics(train_rows),
    }


def format_shown(shown: dict) -> str:
    """`fbt show` for people: what the run is and how far it got, each setting that differs from its default,
    its figures. Fields that do not apply to the run (a decoder on a byte-level run) are not shown."""
    info = shown["info"]
    unit = "frames" if "rl" in shown["config"] else "tokens"
    steps = "updates" if unit == "frames" else "steps"
    lines = [
        ("run", shown["run"]),
        (
            "status",
            f"{info['status']}: {info['step']:,} of {info['steps']:,} {steps}, "
            f"{format_count(info['tokens'], decimals=2)} {unit}",
        ),
        ("task", info["task"]),
        ("model", describe_model(shown["config"], info)),
    ]
    titles = {"model": "model config", "train": "training", "rl": "training"}
    for name, settings in shown["config"].items():
        lines.append((titles.get(name, name), changed_settings(name, settings)))
    lines.append(("best valid", format_valid(info["best_valid"], info["best_valid_name"])))
    summary = shown.get("summary") or {}
    if summary.get("step") != info["step"]:  # written by an earlier session of a run resumed since
        summary = {}
    finals = {k: v for k, v in summary.items() if isinstance(v, float) and k.startswith(("train_", "valid_"))}
    if finals:
        lines.append(("final", ", ".join(f"{k} {v:.4g}" for k, v in finals.items())))
    for split, result in shown.get("evaluations", {}).items():
        figures = {k: v for k, v in result.items() if isinstance(v, float)}
        lines.append(
            (
                f"eval {split}",
                ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) + f" ({result.get('checkpoint', '?')})",
            )
        )
    if shown.get("diagnostics"):
        lines.append(("diagnostics", ", ".join(f"{k} {v}" for k, v in shown["diagnostics"].items())))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:>{width}}  {text}" for name, text in lines if text)


def describe_model(config: dict, info: dict) -> str:
    """The family's own one-line description (as in the training header) and the parameter count."""
    from fbt.models.config import ModelConfig
    from fbt.models.registry import model_class

    try:
        described = model_class(info["model"]).describe(ModelConfig.from_dict(config["model"]))
    except (FbtError, KeyError, TypeError):  # an RL policy, or a family not registered in this process
        described = f"{info['model']}, {info['layers']} layers"
    return described + ("" if info["parameters"] is None else f": {info['parameters']:,} parameters")


def changed_settings(section: str, settings: dict) -> str:
    """The settings of a config section that differ from the defaults of its dataclass, as "name value"."""
    defaults = default_settings(section, settings)
    changed = [f"{k} {v}" for k, v in settings.items() if k not in defaults or defaults[k] != v]
    return ", ".join(changed) or "defaults"


def default_settings(section: str, settings: dict) -> dict:
    """The defaults of config section `section` ("model", "train", "rl"); {} for a section fbt does not know.
    A model section's fields its family does not read are left out (they are never shown)."""
    import dataclasses

    if section == "model":
        from fbt.models.config import ModelConfig
        from fbt.models.family import COMMON_OPTIONS
        from fbt.models.registry import family_names, model_class

        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
        family = settings.get("model")
        if family in family_names():
            read = {*COMMON_OPTIONS, *model_class(family).options}
            defaults.update({name: settings.get(name) for name in defaults if name not in read})
        return defaults
    if section == "train":
        from fbt.training.config import TrainConfig

        return {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    if section == "rl":
        from fbt.rl.config import RLConfig

        return {f.name: f.default for f in dataclasses.fields(RLConfig)}
    return {}


def last_diagnostics(train_rows: list[dict]) -> dict:
    """The model's own values at its last log (e.g. the feedback memory's RMS and mix, learned spans): the
    columns past the training ones, each from the latest row that has it."""
    found: dict = {}
    for row in train_rows:
        found.update({name: value for name, value in row.items() if name not in COLUMNS})
    return found


# How each figure is written, by its name without "valid_".
FIGURE_FORMATS = {
    "accuracy": "{:.2%} acc",
    "bits_per_byte": "{:.3f} bpb",
    "perplexity": "{:.2f} ppl",
    "bleu": "{:.1f} BLEU",
    "success_rate": "{:.1%} success",
    "train_success_rate": "{:.1%} success (train)",
}


def format_valid(value: float | None, metric: str) -> str:
    """A validation or test figure with its unit: "98.80% acc", "1.234 bpb", "63.0% success"."""
    if value is None:
        return "-"
    name = metric.removeprefix("valid_")
    return FIGURE_FORMATS.get(name, "{:.3f} " + name).format(value)


def format_test(run: RunInfo) -> str:
    """The test figure, with the step of the checkpoint it read when that is not the run's newest."""
    shown = format_valid(run.test, run.test_name)
    if run.test is not None and run.test_step is not None and run.test_step != run.step:
        shown += f" @{run.test_step}"
    return shown


TABLE_HEADER = ("run", "task", "model", "layers", "params", "steps", "seen", "best valid", "test", "status")
RIGHT_ALIGNED = {"layers", "params", "steps", "seen", "best valid", "test"}


def format_runs_table(runs: list[RunInfo]) -> str:
    rows = [TABLE_HEADER] + [
        (
            str(run.path),
            run.task,
            run.model,
            str(run.layers),
            "-" if run.parameters is None else format_count(run.parameters),
            f"{run.step}/{run.steps}",
            format_count(run.tokens, decimals=2) + (" frames" if run.task.startswith("rl ") else " tokens"),
            format_valid(run.best_valid, run.best_valid_name),
            format_test(run),
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
