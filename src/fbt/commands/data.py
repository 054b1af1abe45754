"""`fbt data code-exec`: write the code-execution dataset in the official on-disk format.
`fbt data enwik8`: check a copy of enwik8 the user brings and install it for the byte-level task."""

from __future__ import annotations

import argparse

from fbt.commands.common import DefaultsShown, OneLineParser
from fbt.data.code_exec import OFFICIAL_WEIGHTS

NAME = "data"


def add_parser(subparsers) -> None:
    data = subparsers.add_parser(NAME, help="write a dataset", formatter_class=DefaultsShown)
    data_kinds = data.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    code = data_kinds.add_parser(
        "code-exec", help="the code-execution task, in the official on-disk format", formatter_class=DefaultsShown
    )
    code.add_argument("--variables", type=int, default=3, help="variables per program: 3 or 5 in the paper (1..5)")
    code.add_argument("--statements", type=int, default=100, help="statements per program")
    code.add_argument("--max-value", type=int, default=10, help="values 1..K (official 10)")
    code.add_argument(
        "--weights",
        type=float,
        nargs=5,
        default=list(OFFICIAL_WEIGHTS),
        metavar=("ASSIGN", "INC", "DEC", "IF", "PRINT"),
        help="relative weights of the statement kinds =, ++, --, if, print",
    )
    code.add_argument("--train-size", type=int, default=10000, help="programs in the train split")
    code.add_argument("--valid-size", type=int, default=1000, help="programs in the valid split")
    code.add_argument("--test-size", type=int, default=1000, help="programs in the test split")
    code.add_argument("--seed", type=int, default=0, help="seed of the program generator")
    code.add_argument("--out", required=True, help="dataset directory to write")
    code.add_argument("--force", action="store_true", help="replace the dataset files already in --out")
    enwik8 = data_kinds.add_parser(
        "enwik8",
        help="check a copy of enwik8 (nothing is downloaded) and install it for --task text",
        formatter_class=DefaultsShown,
    )
    enwik8.add_argument("--from", dest="source", metavar="FILE", required=True, help="the enwik8 file, or enwik8.zip")
    enwik8.add_argument("--out", required=True, help="dataset directory to write; train with --data OUT")
    enwik8.add_argument("--force", action="store_true", help="replace the dataset files already in --out")


def run(args: argparse.Namespace) -> None:
    if args.kind == "enwik8":
        write_enwik8(args)
    else:
        write_code_exec(args)


def write_code_exec(args: argparse.Namespace) -> None:
    from fbt.data.code_exec import ProgramSpec, generate_dataset

    sizes = (args.train_size, args.valid_size, args.test_size)
    spec = ProgramSpec(args.variables, args.statements, args.max_value, tuple(args.weights))
    generate_dataset(args.out, spec, sizes, args.seed, overwrite=args.force)
    print(f"wrote {args.out}: {sizes[0]} train, {sizes[1]} valid, {sizes[2]} test programs")


def write_enwik8(args: argparse.Namespace) -> None:
    from fbt.data import enwik8
    from fbt.data.text import split_bounds

    path = enwik8.prepare_enwik8(args.source, args.out, overwrite=args.force)
    split = " / ".join(f"{end - start:,}" for start, end in split_bounds(enwik8.SIZE).values())
    print(
        f"wrote {path}: {enwik8.SIZE:,} bytes checked (sha256 {enwik8.SHA256}), split {split} bytes; "
        f"train with --task text --data {args.out}"
    )
