"""`fbt show`: what a run is, how far it got and its figures; `--json` gives everything as one JSON object."""

from __future__ import annotations

import argparse
import json

NAME = "show"


def add_parser(subparsers) -> None:
    show = subparsers.add_parser(NAME, help="a run's settings, progress and figures (fbt train or fbt rl train)")
    show.add_argument("run", help="run directory")
    show.add_argument("--json", action="store_true", help="print one JSON object: the configs, summary and more")


def run(args: argparse.Namespace) -> None:
    from fbt.runs import format_shown, show_run

    shown = show_run(args.run)
    print(json.dumps(shown) if args.json else format_shown(shown))
