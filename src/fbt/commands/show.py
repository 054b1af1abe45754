"""`fbt show`: a run's configuration and final summary, as JSON."""

from __future__ import annotations

import argparse
import json

NAME = "show"


def add_parser(subparsers) -> None:
    show = subparsers.add_parser(NAME, help="a run's configuration and final summary")
    show.add_argument("run", help="run directory")
    show.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> None:
    from fbt.runs import show_run

    shown = show_run(args.run)
    print(json.dumps(shown) if args.json else json.dumps(shown, indent=2))
