"""`fbt translate`: translate text with a translation run, one line in, one line out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fbt.commands.common import DefaultsShown, add_compute_flags, add_search_flags
from fbt.errors import FbtError

NAME = "translate"


def add_parser(subparsers) -> None:
    tr = subparsers.add_parser(
        NAME, help="translate text with a translation run, one line in, one line out", formatter_class=DefaultsShown
    )
    tr.add_argument("run", help="run directory or checkpoint directory")
    tr.add_argument("--input", required=True, help="a text file with one sentence per line, or - for stdin")
    tr.add_argument("--output", help="write the translations here, one line per input line (default: stdout)")
    tr.add_argument("--batch", type=int, default=64, help="sentences translated at once")
    add_search_flags(tr)
    add_compute_flags(tr, "print one JSON list of {source, translation} objects (to stdout, --output or not)")


def run(args: argparse.Namespace) -> None:
    from fbt import api

    if args.input == "-":
        texts = sys.stdin.read().splitlines()
    else:
        try:
            texts = Path(args.input).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise FbtError(f"cannot read {args.input}: {error}") from None
    translations = api.translate_run(
        args.run, texts, args.beam, args.length_penalty, args.batch, args.device, progress=not args.json
    )
    lines = "".join(line + "\n" for line in translations)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
    if args.json:
        print(json.dumps([{"source": s, "translation": t} for s, t in zip(texts, translations, strict=True)]))
    elif not args.output:
        print(lines, end="")
