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

Options beyond the official task (its defaults stay the official one): values 1..K (`max_value`, constants in
`=` and in `if` comparisons too), and relative weights of the five statement kinds (=, ++, --, if, print;
official 1, 1, 1, 1, 1), which also weigh the `=`, `++`, `--` of a statement inside an `if`. The options are
recorded beside the data in `generator.json`.
"""

from __future__ import annotations

import json
import random
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from fbt.data.splits import SPLITS
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError

if TYPE_CHECKING:  # the generator needs neither; loading a split does (`fbt data --help` stays light)
    import torch

VARIABLE_NAMES = ("x", "y", "z", "p", "r")
MIN_VALUE, MAX_VALUE = 1, 10
VALUES = tuple(str(v) for v in range(MIN_VALUE, MAX_VALUE + 1))
VOCAB: tuple[str, ...] = (*VARIABLE_NAMES, *VALUES, "=", "++", "--", "if", "print", ";", ":", "<", ">", "END")
TOKEN_TO_ID = {token: i for i, token in enumerate(VOCAB)}
UNLABELLED = "_"  # the label on disk of a position that is not scored (IGNORE_INDEX once loaded)

Pick = tuple[str, str]  # (statement kind, variable or "" for an `if`)
KINDS = ("=", "++", "--", "if", "print")
OFFICIAL_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ProgramSpec:
    """What a program is drawn from; the defaults are the paper's task (3 variables, 100 statements)."""

    variables: int = 3  # the first V of x y z p r
    statements: int = 100  # statements per program, then END
    max_value: int = MAX_VALUE  # values 1..K
    weights: tuple[float, ...] = OFFICIAL_WEIGHTS  # relative weights of =, ++, --, if, print

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        _check_variables(self.variables)
        if not isinstance(self.statements, int) or self.statements < 1:
            raise FbtError(f"statements must be at least 1, got {self.statements}")
        if not isinstance(self.max_value, int) or not 2 <= self.max_value <= MAX_VALUE:
            raise FbtError(f"max_value must be between 2 and {MAX_VALUE}, got {self.max_value}")
        if len(self.weights) != len(KINDS) or any(not w >= 0 for w in self.weights):
            raise FbtError(f"weights must be {len(KINDS)} numbers >= 0 for {' '.join(KINDS)}, got {self.weights}")
        w_assign, w_inc, w_dec, w_if, _ = self.weights
        if w_assign == 0:
            raise FbtError("the weight of `=` must be positive: a program starts by assigning a variable")
        if w_if > 0 and w_inc == w_dec == 0:
            raise FbtError("an `if` needs `++` or `--` with positive weight for its body")

    @property
    def weight(self) -> dict[str, float]:
        return dict(zip(KINDS, self.weights))

    def to_dict(self) -> dict:
        return {
            "variables": self.variables,
            "statements": self.statements,
            "max_value": self.max_value,
            "weights": list(self.weights),
        }


def _feasible_picks(
    state: dict[str, int], names: tuple[str, ...], nested: bool, spec: ProgramSpec
) -> tuple[list[Pick], list[float]]:
    """Every possible statement kind and variable, weighted by how often the official draw-and-redraw loop
    accepts it (kind drawn by weight, then a uniform variable of the right sort). Sampling from these weights
    gives the same distribution with no loop."""
    w = spec.weight
    assigned = [v for v in names if v in state]
    unassigned = [v for v in names if v not in state]
    picks: list[Pick] = []
    weights: list[float] = []

    def add(pick: Pick, weight: float) -> None:
        if weight > 0:
            picks.append(pick)
            weights.append(weight)

    for v in unassigned:
        add(("=", v), w["="] / len(unassigned))
    for v in assigned:
        share = 1 / len(assigned)
        if state[v] < spec.max_value:
            add(("++", v), w["++"] * share)
        if state[v] > MIN_VALUE:
            add(("--", v), w["--"] * share)
        if not nested:
            add(("print", v), w["print"] * share)
    # An `if` needs a possible body; unlike the top level, the body cannot print.
    if not nested and assigned and _feasible_picks(state, names, True, spec)[0]:
        # Half of the `if` draws compare with a constant, half with another assigned variable.
        add(("if-constant", ""), w["if"] * 0.5)
        if len(assigned) >= 2:
            add(("if-variable", ""), w["if"] * 0.5)
    return picks, weights


def _statement(
    rng: random.Random, state: dict[str, int], names: tuple[str, ...], nested: bool, spec: ProgramSpec
) -> list[str]:
    """Draws one statement, applies it to `state` and returns its tokens."""
    picks, weights = _feasible_picks(state, names, nested, spec)
    if not picks:  # only when every variable is assigned and print and the body kinds all have weight 0
        raise FbtError(f"no statement can follow with weights {spec.weights}: give `print` a positive weight")
    kind, v = rng.choices(picks, weights)[0]
    if kind == "=":
        state[v] = rng.randint(MIN_VALUE, spec.max_value)
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
        right = rng.randint(MIN_VALUE, spec.max_value)
        right_token = str(right)
    op = rng.choice(("<", ">"))
    holds = state[left] < right if op == "<" else state[left] > right
    # The body sees the current state either way; a false condition discards its effect.
    body = _statement(rng, state if holds else dict(state), names, True, spec)
    return ["if", left, op, right_token, ":", *body]


def _check_variables(variables: int) -> None:
    if not 1 <= variables <= len(VARIABLE_NAMES):
        raise FbtError(
            f"variables must be between 1 and {len(VARIABLE_NAMES)} (the paper uses 3 or 5), got {variables}"
        )


def generate_program(rng: random.Random, spec: ProgramSpec) -> tuple[list[str], list[str]]:
    """Tokens of one program (`spec.statements` statements, then END) and its labels, of the same length."""
    names = VARIABLE_NAMES[: spec.variables]
    state: dict[str, int] = {}
    tokens: list[str] = []
    labels: list[str] = []
    for _ in range(spec.statements):
        statement = _statement(rng, state, names, False, spec)
        tokens += statement
        labels += [UNLABELLED] * len(statement)
        if statement[0] == "print":
            labels[-1] = str(state[statement[1]])  # the answer sits on the closing ";"
    tokens.append("END")
    labels.append(UNLABELLED)
    return tokens, labels


def generate_dataset(
    out_dir: str | Path,
    spec: ProgramSpec = ProgramSpec(),
    sizes: tuple[int, int, int] = (10000, 1000, 1000),
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Writes {train,valid,test}.txt and their .labels files in the official format, and generator.json with
    the spec's options and seed; returns the directory. Files already there are an error unless
    `overwrite`: a dataset runs were trained on is not replaced by accident.

    Each split draws from its own generator seeded by (seed, split), so the same arguments give byte-identical
    files and a split does not depend on the sizes of the others.
    """
    if len(sizes) != len(SPLITS) or any(size < 1 for size in sizes):
        raise FbtError(f"sizes must be three program counts of at least 1 (train, valid, test), got {tuple(sizes)}")
    out = Path(out_dir)
    if out.is_file():
        raise FbtError(f"{out} is a file; --out names a dataset directory")
    existing = [name for name in dataset_files() if (out / name).exists()]
    if existing and not overwrite:
        raise FbtError(f"{out} already holds a dataset ({existing[0]}, ...); pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for split, size in zip(SPLITS, sizes):
        rng = random.Random(f"code-exec:{seed}:{split}")  # str seeds hash stably across runs and platforms
        with (
            open(out / f"{split}.txt", "w", encoding="ascii") as programs,
            open(out / f"{split}.txt.labels", "w", encoding="ascii") as labels,
        ):
            for _ in tqdm(range(size), desc=split, unit="program", disable=None):
                tokens, marks = generate_program(rng, spec)
                programs.write(" ".join(tokens) + "\n")
                labels.write(" ".join(marks) + "\n")
    info = {**spec.to_dict(), "seed": seed}
    (out / "generator.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def dataset_files() -> list[str]:
    return [*(name for split in SPLITS for name in (f"{split}.txt", f"{split}.txt.labels")), "generator.json"]


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
    if directory.is_file():
        raise FbtError(
            f"{directory} is a file, but the code-exec task reads a dataset directory (train.txt, train.txt.labels, "
            "...); for language modelling on a text file pass --task text"
        )
    if not directory.is_dir():
        raise FbtError(
            f"no such code-exec data directory: {directory} (create one with `fbt data code-exec --out DIR`; "
            "`fbt presets` shows the command that writes each preset's data)"
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
    import numpy as np
    import torch

    return torch.from_numpy(np.frombuffer(values, dtype=np.int64))  # shares the array's memory: no copy
