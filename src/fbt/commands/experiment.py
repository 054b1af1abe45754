"""`fbt experiment`: run a grid of cells, report one, or list the shipped grids."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fbt.commands.common import DefaultsShown
from fbt.errors import FbtError

NAME = "experiment"


def add_parser(subparsers) -> None:
    experiment = subparsers.add_parser(
        NAME,
        help="run a grid of cells (`fbt experiment NAME|FILE`), report one (`fbt experiment report DIR`), or list "
        "the shipped grids (`fbt experiment list`)",
        formatter_class=DefaultsShown,
    )
    experiment.add_argument("grid", help="a shipped grid's name, a grid file (TOML), `report` or `list`")
    experiment.add_argument("dir", nargs="?", help="with `report`: the experiment directory")
    experiment.add_argument("--out", help="experiment directory (default: runs/experiments/GRID)")
    experiment.add_argument("--jobs", type=int, default=2, help="cells trained at once")
    experiment.add_argument("--threads", type=int, default=1, help="CPU threads per cell")
    experiment.add_argument("--seeds", type=int, help="seeds per cell (default: the grid's)")
    experiment.add_argument(
        "--budget", type=int, help="training steps of every cell, frames in an rl grid (default: the grid's)"
    )
    experiment.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> None:
    from fbt.experiments.grid import grid_names, load_grid
    from fbt.experiments.report import build_report
    from fbt.experiments.runner import run_grid

    if args.grid == "report":
        if not args.dir:
            raise FbtError("fbt experiment report DIR: name the experiment directory")
        print(f"wrote {build_report(args.dir)}")
        return
    if args.grid == "list":
        for name in grid_names():
            grid = load_grid(name, Path("runs") / "experiments" / name)
            print(
                f"{name} ({len(grid.cells)} cells{', one fbt bench' if grid.command == 'bench' else ''}): "
                f"{grid.description}"
            )
        return
    out = Path(args.out or Path("runs") / "experiments" / Path(args.grid).stem)
    grid = load_grid(args.grid, out, args.seeds, args.budget)
    print(f"{len(grid.cells)} cells of {grid.path.name} in {out}: {grid.description}", file=sys.stderr)
    if grid.command == "bench" and args.jobs > 1:
        print(
            "a bench grid measures its cells in one process, one after another (--jobs does not apply)", file=sys.stderr
        )
    results = run_grid(grid, out, args.jobs, args.threads, not args.no_progress)
    print(f"wrote {out / 'results.csv'} ({len(results)} cells); report it with: fbt experiment report {out}")
