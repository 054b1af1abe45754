"""The code-execution task of the Feedback Transformer paper: track the values of a few variables.

A program is N statements over the first V of `x y z p r` (values 1..10), then `END`, e.g.
`x = 3 ; if x < 5 : x ++ ; print x ; END`. The label stream is `_` everywhere except at the `;` closing a
`print`, which is labelled with the printed value (`4` here). Inputs and labels are aligned, not shifted.

The generator draws from the same distribution as the official one (facebookresearch/transformer-sequential,
data/gen_data_algo_seq.py) but from a seeded `random.Random`. Choices the rules leave open:

- "Assigned" means holding a value in the executed state. A statement inside an `if` is drawn against the
  current state but changes it only when the condition holds, so after `if x > 7 : y = 2 ;` with a false
  condition `y` is still unassigned and a later `y = k ;` may assign it (as the official generator does):
  each variable is assigned once when executed, although `y =` can appear more than once in the text.
- The statement inside an `if` obeys its own rules whether or not the condition holds: `v = k` only for an
  unassigned v, `v ++` only if v < 10, `v --` only if v > 1.
"""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fbt.data.splits import SPLITS
from fbt.errors import FbtError

VARIABLE_NAMES = ("x", "y", "z", "p", "r")
MIN_VALUE, MAX_VALUE = 1, 10
VALUES = tuple(str(v) for v in range(MIN_VALUE, MAX_VALUE + 1))
VOCAB: tuple[str, ...] = (*VARIABLE_NAMES, *VALUES, "=", "++", "--", "if", "print", ";", ":", "<", ">", "END")
TOKEN_TO_ID = {token: i for i, token in enumerate(VOCAB)}
IGNORE_INDEX = -100  # target of unlabelled positions ("_" on disk); the default ignore_index of cross_entropy
UNLABELLED = "_"

Pick = tuple[str, str]  # (statement kind, variable or "" for an `if`)


def _feasible_picks(state: dict[str, int], names: tuple[str, ...], nested: bool) -> tuple[list[Pick], list[float]]:
    """Every possible statement kind and variable, weighted by how often the official draw-and-redraw loop
    accepts it (kind uniform over 5, then a uniform variable of the right sort). Sampling from these weights
    gives the same distribution with no loop: at top level `=` or `print` is always possible, and inside an
    `if` some assigned variable can always move (it cannot be both 1 and 10)."""
    assigned = [v for v in names if v in state]
    unassigned = [v for v in names if v not in state]
    picks: list[Pick] = []
    weights: list[float] = []
    for v in unassigned:
        picks.append(("=", v))
        weights.append(1 / len(unassigned))
    for v in assigned:
        share = 1 / len(assigned)
        if state[v] < MAX_VALUE:
            picks.append(("++", v))
            weights.append(share)
        if state[v] > MIN_VALUE:
            picks.append(("--", v))
            weights.append(share)
        if not nested:
            picks.append(("print", v))
            weights.append(share)
    if not nested and assigned:
        # Half of the `if` draws compare with a constant, half with another assigned variable.
        picks.append(("if-constant", ""))
        weights.append(0.5)
        if len(assigned) >= 2:
            picks.append(("if-variable", ""))
            weights.append(0.5)
    return picks, weights


def _statement(rng: random.Random, state: dict[str, int], names: tuple[str, ...], nested: bool) -> list[str]:
    """Draws one statement, applies it to `state` and returns its tokens."""
    picks, weights = _feasible_picks(state, names, nested)
    kind, v = rng.choices(picks, weights)[0]
    if kind == "=":
        state[v] = rng.randint(MIN_VALUE, MAX_VALUE)
        return [v, "=", str(state[v]), ";"]
    if kind == "++":
        state[v] += 1
        return [v, "++", ";"]
    if kind == "--":
        state[v] -= 1
        return [v, "--", ";"]
    if kind == "print":
        return ["print", v, ";"]
    assigned = [name for name in names if name in state]
    if kind == "if-variable":
        left, other = rng.sample(assigned, 2)
        right, right_token = state[other], other
    else:
        left = rng.choice(assigned)
        right = rng.randint(MIN_VALUE, MAX_VALUE)
        right_token = str(right)
    op = rng.choice(("<", ">"))
    holds = state[left] < right if op == "<" else state[left] > right
    # The body sees the current state either way; a false condition discards its effect.
    body = _statement(rng, state if holds else dict(state), names, nested=True)
    return ["if", left, op, right_token, ":", *body]


def _check_variables(variables: int) -> None:
    if not 1 <= variables <= len(VARIABLE_NAMES):
        raise FbtError(
            f"variables must be between 1 and {len(VARIABLE_NAMES)} (the paper uses 3 or 5), got {variables}"
        )


def generate_program(rng: random.Random, variables: int, statements: int) -> tuple[list[str], list[str]]:
    """Tokens of one program (`statements` statements, then END) and its labels, of the same length."""
    _check_variables(variables)
    if statements < 1:
        raise FbtError(f"statements must be at least 1, got {statements}")
    names = VARIABLE_NAMES[:variables]
    state: dict[str, int] = {}
    tokens: list[str] = []
    labels: list[str] = []
    for _ in range(statements):
        statement = _statement(rng, state, names, nested=False)
        tokens += statement
        labels += [UNLABELLED] * len(statement)
        if statement[0] == "print":
            labels[-1] = str(state[statement[1]])  # the answer sits on the closing ";"
    tokens.append("END")
    labels.append(UNLABELLED)
    return tokens, labels


def generate_dataset(
    out_dir: str | Path,
    variables: int = 3,
    statements: int = 100,
    sizes: tuple[int, int, int] = (10000, 1000, 1000),
    seed: int = 0,
) -> Path:
    """Writes {train,valid,test}.txt and their .labels files in the official format; returns the directory.

    Each split draws from its own generator seeded by (seed, split), so the same arguments give byte-identical
    files and a split does not depend on the sizes of the others.
    """
    _check_variables(variables)
    if statements < 1:
        raise FbtError(f"statements must be at least 1, got {statements}")
    if len(sizes) != len(SPLITS) or any(size < 1 for size in sizes):
        raise FbtError(f"sizes must be three program counts of at least 1 (train, valid, test), got {tuple(sizes)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, size in zip(SPLITS, sizes):
        rng = random.Random(f"code-exec:{seed}:{split}")  # str seeds hash stably across runs and platforms
        with (
            open(out / f"{split}.txt", "w", encoding="ascii") as programs,
            open(out / f"{split}.txt.labels", "w", encoding="ascii") as labels,
        ):
            for _ in tqdm(range(size), desc=split, unit="program", disable=None):
                tokens, marks = generate_program(rng, variables, statements)
                programs.write(" ".join(tokens) + "\n")
                labels.write(" ".join(marks) + "\n")
    return out


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FbtError(f"no such file: {path}")
    # Trailing blank lines and spaces are harmless; a non-ASCII byte becomes an unknown token below.
    return path.read_text(encoding="ascii", errors="replace").rstrip().splitlines()


def load_code_exec_split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All programs of a split as one stream: token ids (N,) and aligned targets (N,), both int64;
    targets are label ids, or IGNORE_INDEX where the label is `_`."""
    if split not in SPLITS:
        raise FbtError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FbtError(
            f"no such code-exec data directory: {directory} (create one with `fbt data code-exec --out DIR`)"
        )
    program_path = directory / f"{split}.txt"
    label_path = directory / f"{split}.txt.labels"
    programs, labels = _read_lines(program_path), _read_lines(label_path)
    if not programs:
        raise FbtError(f"{program_path} is empty")
    if len(programs) != len(labels):
        raise FbtError(f"{program_path} has {len(programs)} lines but {label_path} has {len(labels)}")
    label_to_target = {**TOKEN_TO_ID, UNLABELLED: IGNORE_INDEX}
    ids, targets = array("q"), array("q")  # int64, grown in C
    for number, (program, label) in enumerate(zip(programs, labels), start=1):
        tokens, marks = program.split(), label.split()
        if len(tokens) != len(marks):
            raise FbtError(
                f"{program_path} line {number} has {len(tokens)} tokens but {label_path} has {len(marks)} labels"
            )
        _encode(ids, tokens, TOKEN_TO_ID, program_path, number)
        _encode(targets, marks, label_to_target, label_path, number)
    return _as_tensor(ids), _as_tensor(targets)


def _encode(out: array, tokens: list[str], table: dict[str, int], path: Path, number: int) -> None:
    try:
        out.extend(map(table.__getitem__, tokens))
    except KeyError as error:
        raise FbtError(f"{path} line {number}: unknown token {error.args[0]!r}") from None


def _as_tensor(values: array) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(values, dtype=np.int64))  # shares the array's memory: no copy


def last_print_accuracy(inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of answering each print with the value last printed for that variable (the first print of
    a variable in a program counts as wrong): the reference a model must beat to show it tracks state."""
    tokens = [VOCAB[i] for i in inputs.tolist()]
    labels = targets.tolist()
    last: dict[str, int] = {}
    correct = total = 0
    for index, token in enumerate(tokens):
        if token == "END":
            last.clear()
        elif labels[index] != IGNORE_INDEX:  # the `;` of `print v ;`
            variable = tokens[index - 1]
            correct += last.get(variable) == labels[index]
            total += 1
            last[variable] = labels[index]
    return correct / max(total, 1)
