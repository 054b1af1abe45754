"""Runs a grid's cells as ordinary `fbt train` + `fbt eval` processes (an rl grid: `fbt rl train` + `fbt rl
eval`), `jobs` at a time, resumably.

Layout of an experiment directory:
    grid.toml                 the grid as run
    data/NAME/                datasets the grid writes
    cells/CELL/               each cell's run directory (train.log beside it)
    results/CELL.json         a finished cell: its settings, commands, test metrics and training summary
    results.csv               one row per finished cell

A cell with a result is never run again; a cell with a checkpoint but no result resumes from it. Cells start
seed by seed (every cell's seed 0, then seed 1, ...), so the models of one seed train side by side, sharing the
machine alike, and a grid cut short holds every model at its first seeds. A bench grid runs one `fbt bench`
over its unfinished cells (measured interleaved) instead of training.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from fbt.checkpoint import has_checkpoint
from fbt.data.code_exec import generate_dataset
from fbt.errors import FbtError
from fbt.experiments.grid import MODEL_FIELDS, Cell, Grid
from fbt.models.config import kv_choice
from fbt.progress import progress_display
from fbt.rundir import SUMMARY, read_json, write_json_atomic

FBT = [sys.executable, "-m", "fbt.cli"]
INTERRUPTED = 130
RL_EPISODES = 500  # evaluation episodes of an rl cell's final policy


def train_flags(settings: dict) -> list[str]:
    """`fbt train` flags of a cell's settings (config field names)."""
    flags = []
    for key, value in settings.items():
        if key == "shared_kv":
            flags += ["--kv", kv_choice(value)]
        elif isinstance(value, bool):
            flags.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def last_json(text: str) -> dict:
    lines = text.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_fbt(args: list[str], log: Path) -> dict:
    """One fbt command in its own process; its output appended to `log`; its last JSON line returned."""
    done = subprocess.run([*FBT, *args], capture_output=True, text=True)
    with open(log, "a") as handle:
        handle.write(f"$ fbt {shlex.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode == INTERRUPTED:
        raise KeyboardInterrupt
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise FbtError(f"`fbt {args[0]}` of {log.parent.name} failed: {reason} (see {log})")
    return last_json(done.stdout)


def describe(cell: Cell) -> dict:
    """What a result file says of its cell, before its measurements."""
    return {"cell": cell.name, "sections": list(cell.sections), "values": cell.values, "settings": cell.settings}


def run_cell(cell: Cell, out: Path, threads: int, kind: str = "train") -> dict:
    """Train (or resume) and test one cell of a grid whose command is `kind` ("train" or "rl")."""
    result_path = out / "results" / f"{cell.name}.json"
    if result_path.exists():  # finished: its sections are the grid's as it is now, which may share it further
        stored = read_json(result_path)
        result = {**stored, **describe(cell)}
        if result != stored:
            write_json_atomic(result_path, result)
        return result
    run_dir = out / "cells" / cell.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "train.log"
    trainer = ["rl", "train"] if kind == "rl" else ["train"]
    command = [*trainer, *train_flags(cell.settings), "--out", str(run_dir)]
    common = ["--threads", str(threads), "--no-progress", "--json"]
    if has_checkpoint(run_dir):
        trained = run_fbt([*trainer, "--resume", "--out", str(run_dir), *common], log)
    else:
        trained = run_fbt([*command, *common], log)
    if kind == "rl":
        evaluation = ["rl", "eval", str(run_dir), "--episodes", str(RL_EPISODES)]
    else:
        evaluation = ["eval", str(run_dir), "--split", "test"]
    test = run_fbt([*evaluation, "--threads", str(threads), "--json"], log)
    result = {
        **describe(cell),
        "train_command": f"fbt {shlex.join(command)}",
        "eval_command": f"fbt {shlex.join(evaluation)}",
        "test": test,
        "train": trained if kind == "rl" else read_json(run_dir / SUMMARY),  # an rl run's result is its summary
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result_path, result)
    return result


def write_datasets(grid: Grid, out: Path) -> None:
    for name, spec in grid.datasets.items():
        directory = out / "data" / name
        if (directory / "generator.json").exists():
            continue  # written by an earlier invocation (generation is deterministic)
        generate_dataset(directory, spec, seed=0, overwrite=True)


BENCH_MODEL_KEYS = ("model", "shared_kv")  # the rest of a bench cell's model settings go in its spec


def bench_command(grid: Grid, cells: list[Cell], threads: int) -> list[str]:
    """One `fbt bench` measuring every cell's model, interleaved."""
    specs, flags = [], []
    for cell in cells:
        model = {k: v for k, v in cell.settings.items() if k in MODEL_FIELDS}  # `peak_memory` is a bench option
        overrides = [f"{k}={v}" for k, v in model.items() if k not in BENCH_MODEL_KEYS]
        if "shared_kv" in model:
            overrides.append(f"kv={kv_choice(model['shared_kv'])}")
        specs.append(f"{model.get('model', 'feedback')}:{','.join(overrides)}")
    options = {k: v for k, v in cells[0].settings.items() if k not in MODEL_FIELDS}
    for key, value in options.items():
        if key == "peak_memory":
            flags += [] if value else ["--no-memory"]
        elif isinstance(value, list):
            flags += [f"--{key.replace('_', '-')}", *map(str, value)]
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return ["bench", "--models", *specs, *flags, "--threads", str(threads)]


def run_bench_cells(grid: Grid, out: Path, threads: int) -> None:
    """Measure the cells without a result in one process; one result file per cell."""
    todo = [cell for cell in grid.cells if not (out / "results" / f"{cell.name}.json").exists()]
    if not todo:
        return
    log = out / "bench.log"
    command = bench_command(grid, todo, threads)
    report = run_fbt([*command, "--json"], log)
    (out / "results").mkdir(parents=True, exist_ok=True)
    for cell, entry in zip(todo, report["models"], strict=True):
        result = {
            **describe(cell),
            "bench_command": f"fbt {shlex.join(command)}",
            "bench": {**entry, **{k: v for k, v in report.items() if k != "models"}},
        }
        write_json_atomic(out / "results" / f"{cell.name}.json", result)


def host_info(threads: int, jobs: int) -> dict:
    """The machine the cells run on, for the report."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cells at once": jobs,
        "threads per cell": threads,
        "torch": importlib.metadata.version("torch"),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def start_order(cells: list[Cell]) -> list[Cell]:
    """The cells seed by seed, in grid order within a seed (sorting is stable)."""
    return sorted(cells, key=lambda cell: cell.settings.get("seed", 0))


def run_grid(grid: Grid, out: Path, jobs: int = 1, threads: int = 1, progress: bool = True) -> list[dict]:
    """Every cell's result (finished ones read back), in grid order; results.csv rewritten."""
    if jobs < 1 or threads < 1:
        raise FbtError(f"--jobs and --threads must be >= 1, got {jobs} and {threads}")
    out.mkdir(parents=True, exist_ok=True)
    if grid.path.resolve() != (out / "grid.toml").resolve():
        shutil.copyfile(grid.path, out / "grid.toml")
    write_json_atomic(out / "host.json", host_info(threads, 1 if grid.command == "bench" else jobs))
    if grid.command == "bench":
        run_bench_cells(grid, out, threads)
        ordered = [read_json(out / "results" / f"{cell.name}.json") for cell in grid.cells]
        write_table(ordered, out / "results.csv")
        return ordered
    write_datasets(grid, out)
    results: dict[str, dict] = {}
    bar = progress_display(total=len(grid.cells), desc="cells", unit="cell", shown=progress)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_cell, cell, out, threads, grid.command): cell for cell in start_order(grid.cells)}
        for future in as_completed(futures):
            results[futures[future].name] = future.result()
            bar.update(1)
    bar.close()
    ordered = [results[cell.name] for cell in grid.cells]
    write_table(ordered, out / "results.csv")
    return ordered


METRICS = ("accuracy", "loss", "bits_per_byte", "success_rate", "mean_return")


def table_rows(results: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys(k for result in results for k in result["settings"]))
    rows = []
    for result in results:
        row = {"cell": result["cell"], **{k: result["settings"].get(k, "") for k in keys}}
        if "bench" in result:
            bench = result["bench"]
            row["train_tokens_per_s"] = bench["train_tokens_per_s"]
            row.update({f"decode_tokens_per_s_batch{b}": v for b, v in bench["decode_tokens_per_s"].items()})
            row["state_bytes_per_token"] = bench["state_bytes_per_token"]
        else:
            row.update({f"test_{m}": result["test"].get(m, "") for m in METRICS})
            train = result["train"]
            amount = "frames" if "frames" in train else "tokens"
            row.update({f"train_{amount}": train.get(amount, ""), "train_s": train.get("elapsed_s", "")})
        rows.append(row)
    return rows


def write_table(results: list[dict], path: Path) -> None:
    rows = table_rows(results)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["cell"])
        writer.writeheader()
        writer.writerows(rows)
