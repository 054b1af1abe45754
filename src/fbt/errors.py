"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class FbtError(Exception):
    """Bad input from the user: missing data, invalid sizes, unknown names, corrupt checkpoints."""
