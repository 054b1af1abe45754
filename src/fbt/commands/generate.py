"""`fbt generate`: sample a continuation of a prompt (text) or answer a program (code-exec)."""

from __future__ import annotations

import argparse
import json

from fbt.commands.common import DefaultsShown, add_compute_flags

NAME = "generate"


def add_parser(subparsers) -> None:
    gen = subparsers.add_parser(
        NAME,
        help="sample a continuation (text) or answer a program (code-exec)",
        formatter_class=DefaultsShown,
    )
    gen.add_argument("run", help="run directory or checkpoint directory")
    gen.add_argument(
        "--prompt", default="", help="text to continue; empty samples unconditionally (code-exec: a program)"
    )
    gen.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (bytes for text)")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold in (0, 1]")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_compute_flags(gen)


def run(args: argparse.Namespace) -> None:
    from fbt import api

    text = api.generate_from_run(
        args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed, args.device
    )
    print(json.dumps({"prompt": args.prompt, "output": text}) if args.json else text)
