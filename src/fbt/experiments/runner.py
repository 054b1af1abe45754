"""Runs a grid's cells as ordinary `fbt train` + `fbt eval` processes, `jobs` at a time, resumably.

Layout of an experiment directory:
    grid.toml                 the grid as run
    data/NAME/                datasets the grid writes
    cells/CELL/               each cell's run directory (train.log beside it)
    results/CELL.json         a finished cell: its settings, commands, test metrics and training summary
    results.csv               one row per finished cell

A cell with a result is never run again; a cell with a checkpoint but no result resumes from it.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from fbt.data.code_exec import generate_dataset
from fbt.errors import FbtError
from fbt.experiments.grid import Cell, Grid
from fbt.training import checkpoint

FBT = [sys.executable, "-m", "fbt.cli"]
INTERRUPTED = 130


def train_flags(settings: dict) -> list[str]:
    """`fbt train` flags of a cell's settings (config field names)."""
    flags = []
    for key, value in settings.items():
        if key == "shared_kv":
            flags += ["--kv", "shared" if value else "per-layer"]
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


def run_cell(cell: Cell, out: Path, threads: int) -> dict:
    result_path = out / "results" / f"{cell.name}.json"
    if result_path.exists():
        return checkpoint.read_json(result_path)
    run_dir = out / "cells" / cell.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "train.log"
    command = ["train", *train_flags(cell.settings), "--out", str(run_dir)]
    common = ["--threads", str(threads), "--no-progress", "--json"]
    if checkpoint.has_checkpoint(run_dir):
        run_fbt(["train", "--resume", "--out", str(run_dir), *common], log)
    else:
        run_fbt([*command, *common], log)
    evaluation = ["eval", str(run_dir), "--split", "test"]
    test = run_fbt([*evaluation, "--threads", str(threads), "--json"], log)
    result = {
        "cell": cell.name,
        "settings": cell.settings,
        "train_command": f"fbt {shlex.join(command)}",
        "eval_command": f"fbt {shlex.join(evaluation)}",
        "test": test,
        "train": checkpoint.read_json(run_dir / "summary.json"),
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json_atomic(result_path, result)
    return result


def write_datasets(grid: Grid, out: Path) -> None:
    for name, generator in grid.datasets.items():
        directory = out / "data" / name
        if (directory / "generator.json").exists():
            continue  # written by an earlier invocation (generation is deterministic)
        generate_dataset(directory, generator, seed=0, overwrite=True)


def run_grid(grid: Grid, out: Path, jobs: int = 1, threads: int = 1, progress: bool = True) -> list[dict]:
    """Every cell's result (finished ones read back), in grid order; results.csv rewritten."""
    if jobs < 1 or threads < 1:
        raise FbtError(f"--jobs and --threads must be >= 1, got {jobs} and {threads}")
    out.mkdir(parents=True, exist_ok=True)
    if grid.path.resolve() != (out / "grid.toml").resolve():
        shutil.copyfile(grid.path, out / "grid.toml")
    write_datasets(grid, out)
    results: dict[str, dict] = {}
    bar = tqdm(total=len(grid.cells), desc="cells", unit="cell", disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_cell, cell, out, threads): cell for cell in grid.cells}
        for future in as_completed(futures):
            results[futures[future].name] = future.result()
            bar.update(1)
    bar.close()
    ordered = [results[cell.name] for cell in grid.cells]
    write_table(ordered, out / "results.csv")
    return ordered


METRICS = ("accuracy", "loss", "bits_per_byte")


def table_rows(results: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys(k for result in results for k in result["settings"]))
    rows = []
    for result in results:
        row = {"cell": result["cell"], **{k: result["settings"].get(k, "") for k in keys}}
        row.update({f"test_{m}": result["test"].get(m, "") for m in METRICS})
        row.update({"train_tokens": result["train"].get("tokens", ""), "train_s": result["train"].get("elapsed_s", "")})
        rows.append(row)
    return rows


def write_table(results: list[dict], path: Path) -> None:
    rows = table_rows(results)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["cell"])
        writer.writeheader()
        writer.writerows(rows)
