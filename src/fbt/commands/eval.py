"""`fbt eval`: a full pass over a split of a run's data (or other data), with the state carried."""

from __future__ import annotations

import argparse

from fbt.commands.common import DefaultsShown, add_compute_flags, add_search_flags, print_result
from fbt.data.splits import SPLITS

NAME = "eval"


def add_parser(subparsers) -> None:
    ev = subparsers.add_parser(NAME, help="a full pass over a split with state carried", formatter_class=DefaultsShown)
    ev.add_argument("run", help="run directory (its latest checkpoint) or a checkpoint directory")
    ev.add_argument("--split", default="test", choices=SPLITS, help="which split")
    ev.add_argument("--data", help="evaluate on other data than the run's (default: the run's)")
    ev.add_argument(
        "--batch",
        type=int,
        help="parallel streams (default: the run's); where the data is made of documents (code-exec programs), each "
        "stream holds whole ones, so at most one stream per document",
    )
    ev.add_argument("--segment", type=int, help="tokens per segment (default: the run's)")
    add_search_flags(ev)
    ev.add_argument("--outputs", help="translation: write the split's translations to this file, one per line")
    add_compute_flags(ev)


def run(args: argparse.Namespace) -> None:
    from fbt import api

    result = api.evaluate_run(
        args.run,
        args.split,
        args.data,
        args.batch,
        args.segment,
        args.device,
        not args.json,
        args.beam,
        args.length_penalty,
        args.outputs,
    )
    print_result({"split": args.split, **result}, args.json)
