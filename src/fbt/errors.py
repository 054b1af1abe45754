"""The one exception type the CLI turns into a single line on stderr and a non-zero exit, and warnings."""

import sys


class FbtError(Exception):
    """Bad input from the user: missing data, invalid sizes, unknown names, corrupt checkpoints."""


def warn(message: str) -> None:
    """A one-line warning on stderr: something runs, but probably not as the user meant."""
    print(f"fbt: warning: {message}", file=sys.stderr)
