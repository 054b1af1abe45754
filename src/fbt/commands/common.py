"""What several commands share: the parser and help classes, the compute and search flags, result printing."""

from __future__ import annotations

import argparse
import json
import math

from fbt.errors import FbtError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


class DefaultsShown(argparse.HelpFormatter):
    """Appends `(default: X)` to every flag that has a default and says nothing of it yet."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_compute_flags(
    parser: argparse.ArgumentParser, json_help: str = "print one JSON object as the last line"
) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N; auto is cuda when available")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, all cores)")
    parser.add_argument("--json", action="store_true", help=json_help)


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, default=1, help="translation: beam size, 1 is greedy search")
    parser.add_argument(
        "--length-penalty", type=float, default=1.0, help="translation: GNMT length penalty alpha, 0 none"
    )


def set_threads(args: argparse.Namespace) -> None:
    """Applies a command's --threads to torch before the command runs."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise FbtError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
        return
    width = max([22, *map(len, result)])
    for name, value in result.items():
        if isinstance(value, list):  # examples: a block of "field: text" lines each, its first field numbered
            for number, item in enumerate(value, 1):
                for index, (field, text) in enumerate(item.items()):
                    label = f"{name} {number}, {field}" if index == 0 else field
                    print(f"{label:>{width}}: {text}")
            continue
        print(f"{name:>{width}}: {value:.4f}" if isinstance(value, float) else f"{name:>{width}}: {value}")
