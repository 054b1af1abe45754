"""`fbt plot`: the training loss and valid metric of runs, overlaid, as a PNG (RL runs: success per frame; with
--breakdown, the accuracy by feature of their recorded evaluations)."""

from __future__ import annotations

import argparse

from fbt.commands.common import DefaultsShown
from fbt.data.splits import SPLITS
from fbt.errors import FbtError

NAME = "plot"


def add_parser(subparsers) -> None:
    plot = subparsers.add_parser(
        NAME, help="training loss and valid metric of runs, overlaid, as a PNG", formatter_class=DefaultsShown
    )
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument("--x", choices=("tokens", "elapsed_s"), default="tokens", help="horizontal axis")
    plot.add_argument(
        "--breakdown",
        nargs="?",
        const="test",
        choices=SPLITS,
        metavar="SPLIT",
        help="instead of curves: the accuracy by feature of each run's recorded `fbt eval --breakdown` of SPLIT "
        "(default: test)",
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from fbt.runs import is_rl_run

    if args.breakdown:
        from fbt.plots import plot_breakdowns

        print(f"wrote {plot_breakdowns(args.runs, args.out, args.breakdown)}")
        return
    rl = [is_rl_run(Path(run)) for run in args.runs]
    if any(rl):
        if not all(rl):
            raise FbtError("plot RL runs (fbt rl train) apart from the others: their curves are success per frame")
        if args.x != "tokens":
            raise FbtError("RL runs are plotted against frames; see `fbt rl plot` for the other curves")
        from fbt.rl.plots import plot_rl_runs

        print(f"wrote {plot_rl_runs(args.runs, args.out)}")
        return
    from fbt.plots import plot_runs

    print(f"wrote {plot_runs(args.runs, args.out, x=args.x)}")
