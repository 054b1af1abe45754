"""`fbt tokenizer train`: learn a byte-level BPE tokenizer from text files."""

from __future__ import annotations

import argparse

from fbt.commands.common import DefaultsShown, OneLineParser

NAME = "tokenizer"


def add_parser(subparsers) -> None:
    tok = subparsers.add_parser(NAME, help="train a byte-level BPE tokenizer")
    tok_kinds = tok.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    train = tok_kinds.add_parser("train", help="learn a BPE from text files", formatter_class=DefaultsShown)
    train.add_argument("--data", nargs="+", required=True, help="text files to learn from")
    train.add_argument("--vocab-size", type=int, default=8000, help="ids, the 3 specials and 256 bytes included")
    train.add_argument("--out", required=True, help="directory to write tokenizer.json into")


def run(args: argparse.Namespace) -> None:
    from fbt.data.tokenizer import train_tokenizer_on_files

    tokenizer = train_tokenizer_on_files(args.data, args.vocab_size)
    print(f"wrote {tokenizer.save(args.out)} ({tokenizer.vocab_size:,} ids)")
