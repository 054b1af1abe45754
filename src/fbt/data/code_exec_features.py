"""What each print of a code-exec program asks of a model, found by running the program.

For every print: the value printed, how many statements ago the printed variable last changed, how many
variables hold a value, which kind of statement changed it last, and where in the program the print sits.
`fbt eval --breakdown` groups a model's answers by these: a model that carries state loses it as it ages
and as more variables share the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from fbt.errors import FbtError

# The buckets of each feature, in the order a breakdown lists them.
FEATURES = {
    "since_change": "statements since the printed variable last changed",
    "variables": "variables holding a value",
    "changed_by": "the statement that last changed it",
    "statement": "the print's statement number",
}


@dataclass(frozen=True)
class PrintFeatures:
    index: int  # position of the print's closing `;` (where its answer is scored) in the program's tokens
    value: int  # the value printed
    since_change: int  # statements since the variable last changed (1: the statement just before)
    variables: int  # variables holding a value at the print
    changed_by: str  # "=", "++/--" (at top level) or "if" (a body whose condition held)
    statement: int  # the print's statement number, from 1

    def buckets(self) -> dict[str, str]:
        """The bucket of each feature in FEATURES: ages and statement numbers fall in ranges."""
        return {
            "since_change": _doubling_range(self.since_change),
            "variables": str(self.variables),
            "changed_by": self.changed_by,
            "statement": _decade(self.statement),
        }


def _doubling_range(n: int) -> str:
    """1, 2-3, 4-7, 8-15, ...: ranges that double, as the age of what a memory holds."""
    low = 1 << (n.bit_length() - 1)
    return str(n) if low == 1 else f"{low}-{2 * low - 1}"


def _decade(n: int) -> str:
    low = (n - 1) // 10 * 10 + 1
    return f"{low}-{low + 9}"


def bucket_order(feature: str, bucket: str) -> tuple:
    """Sort key of a feature's buckets: numeric ranges by their start, names as the task writes them."""
    if feature == "changed_by":
        return (("=", "++/--", "if").index(bucket),)
    return (int(bucket.split("-")[0]),)


def print_features(tokens: list[str]) -> list[PrintFeatures]:
    """The features of every print of one program (its tokens, END and what follows ignored), in order."""
    values: dict[str, int] = {}
    changed_at: dict[str, int] = {}
    changed_by: dict[str, str] = {}
    prints: list[PrintFeatures] = []
    start, number = 0, 0
    end = tokens.index("END") if "END" in tokens else len(tokens)
    while start < end:
        stop = _statement_end(tokens, start, end)
        number += 1
        statement = tokens[start:stop]
        if statement[0] == "print":
            variable = _assigned(values, statement, 1)
            prints.append(
                PrintFeatures(
                    stop,
                    values[variable],
                    number - changed_at[variable],
                    len(values),
                    changed_by[variable],
                    number,
                )
            )
        elif statement[0] == "if":
            if len(statement) < 6 or statement[4] != ":":
                raise FbtError(f"cannot run `{' '.join(statement)}`: an if reads `if v < k : body`")
            left = values[_assigned(values, statement, 1)]
            right = int(statement[3]) if statement[3].isdigit() else values[_assigned(values, statement, 3)]
            if (left < right) if statement[2] == "<" else (left > right):
                variable = _apply(values, statement[5:])
                changed_at[variable], changed_by[variable] = number, "if"
        else:
            variable = _apply(values, statement)
            changed_at[variable], changed_by[variable] = number, ("=" if statement[1] == "=" else "++/--")
        start = stop + 1
    return prints


def _statement_end(tokens: list[str], start: int, end: int) -> int:
    try:
        stop = tokens.index(";", start, end)
    except ValueError:
        raise FbtError(f"cannot run `{' '.join(tokens[start:end])}`: a statement ends with `;`") from None
    if stop == start:
        raise FbtError("cannot run an empty statement (`; ;`)")
    return stop


def _assigned(values: dict[str, int], statement: list[str], at: int) -> str:
    if at >= len(statement) or statement[at] not in values:
        raise FbtError(f"cannot run `{' '.join(statement)}`: it reads a variable that holds no value")
    return statement[at]


def _apply(values: dict[str, int], statement: list[str]) -> str:
    """Runs `v = k`, `v ++` or `v --` on `values`; returns v."""
    match statement:
        case [variable, "=", value] if value.isdigit():
            values[variable] = int(value)
        case [variable, "++" | "--" as step]:
            _assigned(values, statement, 0)
            values[variable] += 1 if step == "++" else -1
        case _:
            raise FbtError(f"cannot run `{' '.join(statement)}`: not `v = k`, `v ++`, `v --`, an if or a print")
    return statement[0]
