"""Answers to code-exec prints that need no model: the floors a model must beat to show it tracks state.

- `last_print`: the value last printed for that variable in this program (a variable's first print is wrong).
- `count_ignoring_ifs`: the value of the variable's top-level `v = k`, plus its top-level `++`, minus its
  top-level `--`, ignoring every `if` (what a model that counts but does not evaluate conditions gets).

Both read any dataset in the official format: token ids and aligned targets, as `load_code_exec_split` returns.
"""

from __future__ import annotations

import torch

from fbt.data.code_exec import VOCAB
from fbt.data.targets import IGNORE_INDEX

HEURISTIC_LABELS = {
    "last_print": "heuristic: repeat the last print",
    "count_ignoring_ifs": "heuristic: count ++/-- ignoring ifs",
}


def _prints(inputs: torch.Tensor, targets: torch.Tensor):
    """Yields (tokens, index) for every scored `;` of a print, and None at each END (a program's end)."""
    tokens = [VOCAB[i] for i in inputs.tolist()]
    labels = targets.tolist()
    for index, token in enumerate(tokens):
        if token == "END":
            yield tokens, index, None
        else:
            yield tokens, index, (None if labels[index] == IGNORE_INDEX else VOCAB[labels[index]])


def last_print_accuracy(inputs: torch.Tensor, targets: torch.Tensor) -> float:
    last: dict[str, str] = {}
    correct = total = 0
    for tokens, index, answer in _prints(inputs, targets):
        if tokens[index] == "END":
            last.clear()
        elif answer is not None:  # the `;` of `print v ;`
            variable = tokens[index - 1]
            correct += last.get(variable) == answer
            total += 1
            last[variable] = answer
    return correct / max(total, 1)


def count_ignoring_ifs_accuracy(inputs: torch.Tensor, targets: torch.Tensor) -> float:
    value: dict[str, int] = {}
    correct = total = 0
    for tokens, index, answer in _prints(inputs, targets):
        token = tokens[index]
        if token == "END":
            value.clear()
            continue
        # A statement at top level starts after `;` or END (or at the stream's start), never after `:`.
        top_level = index < 2 or tokens[index - 2] in (";", "END")
        if token == "=" and top_level:
            value[tokens[index - 1]] = int(tokens[index + 1])
        elif token in ("++", "--") and top_level and tokens[index - 1] in value:
            value[tokens[index - 1]] += 1 if token == "++" else -1
        elif answer is not None:
            correct += value.get(tokens[index - 1]) == int(answer)
            total += 1
    return correct / max(total, 1)


def heuristic_accuracies(inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {
        "last_print": last_print_accuracy(inputs, targets),
        "count_ignoring_ifs": count_ignoring_ifs_accuracy(inputs, targets),
    }
