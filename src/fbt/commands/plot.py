"""`fbt plot`: the training loss and valid metric of runs, overlaid, as a PNG."""

from __future__ import annotations

import argparse

from fbt.commands.common import DefaultsShown
from fbt.errors import FbtError

NAME = "plot"


def add_parser(subparsers) -> None:
    plot = subparsers.add_parser(
        NAME, help="training loss and valid metric of runs, overlaid, as a PNG", formatter_class=DefaultsShown
    )
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument("--x", choices=("tokens", "elapsed_s"), default="tokens", help="horizontal axis")


def run(args: argparse.Namespace) -> None:
    try:
        from fbt.plots import plot_runs
    except ImportError:
        raise FbtError("fbt plot needs matplotlib: pip install 'fbt[plot]'") from None
    print(f"wrote {plot_runs(args.runs, args.out, x=args.x)}")
