"""`fbt bench`: training and decoding speed, memory and MFU of models side by side."""

from __future__ import annotations

import argparse
import json
import sys

from fbt.commands.common import DefaultsShown
from fbt.errors import FbtError

NAME = "bench"


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser(
        NAME,
        help="training/decoding speed, memory and MFU of models side by side",
        formatter_class=DefaultsShown,
    )
    bench.add_argument(
        "--models",
        nargs="+",
        default=["feedback", "transformer-xl:layers=8"],
        help="NAME[:key=value,...] per model, e.g. feedback transformer-xl:layers=8 feedback:kv=per-layer; "
        "checkpoint=1, precision=bf16 and compile=1 run its steps as the fbt train flags do",
    )
    bench.add_argument("--dim", type=int, default=256, help="residual width")
    bench.add_argument("--layers", type=int, default=4, help="blocks")
    bench.add_argument("--heads", type=int, default=4, help="attention heads")
    bench.add_argument("--head-dim", type=int, default=0, help="width of each head, 0: dim / heads")
    bench.add_argument("--ff", type=int, default=1024, help="feed-forward hidden width")
    bench.add_argument("--span", type=int, default=100, help="attention span (feedback, transformer-xl)")
    bench.add_argument("--context", type=int, default=256, help="gpt context window")
    bench.add_argument("--vocab-size", type=int, default=256, help="vocabulary size")
    bench.add_argument("--batch", type=int, default=32, help="parallel streams")
    bench.add_argument("--segment", type=int, default=64, help="tokens per segment")
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions per model (median reported)")
    bench.add_argument("--steps", type=int, default=3, help="training steps per repetition")
    bench.add_argument("--decode-batches", type=int, nargs="+", default=[1, 32], help="decoding batch sizes")
    bench.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per measurement")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> None:
    from fbt.bench import format_table, run_bench
    from fbt.device import resolve_device

    for name in ("repeats", "steps", "decode_tokens", "batch", "segment"):
        if getattr(args, name) < 1:
            raise FbtError(f"--{name.replace('_', '-')} must be >= 1")
    base = {
        name: getattr(args, name)
        for name in ("dim", "layers", "heads", "head_dim", "ff", "span", "context", "vocab_size")
    }
    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    device = str(resolve_device(args.device))
    report = run_bench(
        args.models,
        base,
        args.batch,
        args.segment,
        args.threads,
        args.repeats,
        args.steps,
        tuple(args.decode_batches),
        args.decode_tokens,
        not args.no_memory,
        log,
        device,
    )
    print(json.dumps(report) if args.json else format_table(report))
