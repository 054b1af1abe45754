"""`fbt runs`: a table of the runs under a directory."""

from __future__ import annotations

import argparse
import json

NAME = "runs"


def add_parser(subparsers) -> None:
    runs = subparsers.add_parser(NAME, help="a table of the runs under a directory")
    runs.add_argument("dir", nargs="?", default="runs", help="directory to search (default: runs)")
    runs.add_argument("--json", action="store_true", help="print one JSON list")


def run(args: argparse.Namespace) -> None:
    from fbt.runs import find_runs, format_runs_table

    runs = find_runs(args.dir)
    if args.json:
        print(json.dumps([run.to_json() for run in runs]))
    elif runs:
        print(format_runs_table(runs))
    else:
        print(f"no runs under {args.dir} (a run is a directory written by `fbt train --out DIR`)")
