"""`fbt export`: a run as a Hugging Face transformers directory (--format hf), or such a directory back as an fbt
pretrained directory (--format fbt)."""

from __future__ import annotations

import argparse

NAME = "export"
FORMATS = ("hf", "fbt")


def add_parser(subparsers) -> None:
    export = subparsers.add_parser(NAME, help="convert a run to a transformers directory, or back")
    export.add_argument("run", help="run, checkpoint or pretrained directory (--format fbt: a transformers directory)")
    export.add_argument(
        "--format",
        default="hf",
        help="hf: a transformers directory (AutoModelForCausalLM, with the run's tokenizer); "
        "fbt: an fbt pretrained directory from a transformers one (default: hf)",
    )
    export.add_argument("--out", required=True, help="directory to write")


def run(args: argparse.Namespace) -> None:
    from fbt.errors import FbtError

    if args.format not in FORMATS:
        raise FbtError(f"unknown format {args.format!r}; choose one of {', '.join(FORMATS)}")
    from fbt.hf import export_hf, import_hf  # one line asking for the hf extra when transformers is missing

    convert = export_hf if args.format == "hf" else import_hf
    from transformers.utils import logging

    logging.disable_progress_bar()  # stderr keeps to errors
    print(convert(args.run, args.out))
