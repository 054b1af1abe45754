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
    ev.add_argument(
        "--breakdown",
        action="store_true",
        help="code-exec: also the accuracy of the prints by how long ago the printed variable changed, how many "
        "variables hold values, what changed it last and where the print sits",
    )
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
        args.breakdown,
    )
    table = None if args.json else result.pop("breakdown", None)
    print_result({"split": args.split, **result}, args.json)
    if table:
        print_breakdown(table)


def print_breakdown(table: dict) -> None:
    """A block per feature: each bucket's accuracy and how many examples fall in it."""
    for feature in table:
        print(f"\naccuracy by {feature['title']}:")
        width = max(len(cell["bucket"]) for cell in feature["buckets"])
        for cell in feature["buckets"]:
            print(f"  {cell['bucket']:>{width}}  {cell['accuracy']:7.2%}  {cell['examples']:>9,} examples")
