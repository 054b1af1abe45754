"""`fbt`: the command line. Parses flags, runs the chosen command (fbt.commands); errors are one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys

from fbt.commands import build_parser, command_named
from fbt.commands.common import set_threads
from fbt.errors import FbtError
from fbt.plugins import load_plugins


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()
    except FbtError as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    # Imported once the flags are parsed: `--help` needs none of the training machinery.
    from fbt.api import NothingToDo
    from fbt.training import distributed
    from fbt.training.trainer import TrainingInterrupted

    try:
        set_threads(args)
        code = command_named(args.command).run(args)
    except TrainingInterrupted as stopped:
        if distributed.Ranks.current().main:  # under torchrun every rank stopped; rank 0 says so
            print(f"fbt: {stopped}", file=sys.stderr)
        return 130
    except NothingToDo as nothing:
        print(f"fbt: nothing to do: {nothing}", file=sys.stderr)
        return 0
    except FbtError as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fbt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fbt show RUN | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0
    except (OSError, MemoryError) as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    finally:
        distributed.stop()
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
