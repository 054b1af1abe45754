"""The `fbt` subcommands, one module each, registered in COMMANDS (the order of `fbt --help`).

A command is a module (or any object) with three names:

- `NAME`: the word after `fbt`;
- `add_parser(subparsers)`: adds its parser with `subparsers.add_parser(NAME, ...)`;
- `run(args)`: does the work and returns the exit code (None is 0); errors are `FbtError`s, one line each.

A command module imports at its top only what its parser needs and the rest inside `run`, so that `fbt --help`
stays quick. `common` holds what several commands share; `train_settings`, how `fbt train`'s flags become
configs. `register_command(module)` adds a command of your own after fbt's; a plugin (`fbt.plugins`) registers
one for every `fbt` call.
"""

from __future__ import annotations

import argparse

import fbt
from fbt.commands import (
    analyze,
    bench,
    data,
    eval,
    experiment,
    export,
    generate,
    plot,
    presets,
    rl,
    runs,
    show,
    tokenizer,
    train,
    translate,
)
from fbt.commands.common import OneLineParser
from fbt.errors import FbtError

COMMANDS = [
    data,
    train,
    eval,
    translate,
    tokenizer,
    generate,
    presets,
    runs,
    show,
    export,
    plot,
    experiment,
    bench,
    rl,
    analyze,
]


def register_command(command) -> None:
    """Add `command` (NAME, add_parser, run) to `fbt`, after the commands already registered."""
    if any(known.NAME == command.NAME for known in COMMANDS):
        raise FbtError(f"command {command.NAME!r} is already registered")
    COMMANDS.append(command)


def command_named(name: str):
    return next(command for command in COMMANDS if command.NAME == name)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fbt", description="Feedback Transformers and their baselines.")
    parser.add_argument("--version", action="version", version=f"fbt {fbt.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser
