"""The code-exec generator against an independent interpreter, its reproducibility, and the loader."""

from __future__ import annotations

import random

import pytest
import torch

from fbt.data.code_exec import (
    TOKEN_TO_ID,
    VOCAB,
    ProgramSpec,
    generate_dataset,
    generate_program,
    load_code_exec_split,
)
from fbt.data.code_exec_heuristics import count_ignoring_ifs_accuracy, last_print_accuracy
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError

SMALL = (20, 5, 5)


def interpret(tokens: list[str], variables: int, top: int = 10) -> tuple[list[str], int]:
    """Runs a program written from the rules of DESIGN.md §2 (values 1..top), checking every rule the generator
    must keep; returns the expected label of every token and the number of statements."""
    names = "xyzpr"[:variables]
    state: dict[str, int] = {}
    expected = ["_"] * len(tokens)
    i, statements = 0, 0

    def simple(i: int, execute: bool) -> int:
        """Checks and (if `execute`) runs `v = k ;`, `v ++ ;` or `v -- ;` at i; returns the index after it."""
        v, op = tokens[i], tokens[i + 1]
        assert v in names
        if op == "=":
            assert v not in state, "assignment to an assigned variable"
            k = int(tokens[i + 2])
            assert 1 <= k <= top and tokens[i + 3] == ";"
            if execute:
                state[v] = k
            return i + 4
        assert op in ("++", "--") and tokens[i + 2] == ";" and v in state
        new = state[v] + (1 if op == "++" else -1)
        assert 1 <= new <= top, "value leaves 1..top"
        if execute:
            state[v] = new
        return i + 3

    while tokens[i] != "END":
        statements += 1
        if tokens[i] == "print":
            v = tokens[i + 1]
            assert v in state and tokens[i + 2] == ";"
            expected[i + 2] = str(state[v])
            i += 3
        elif tokens[i] == "if":
            a, op, b, colon = tokens[i + 1 : i + 5]
            assert a in state and op in ("<", ">") and colon == ":"
            if b in names:
                assert b in state and b != a
                right = state[b]
            else:
                right = int(b)
                assert 1 <= right <= top
            holds = state[a] < right if op == "<" else state[a] > right
            i = simple(i + 5, holds)
        else:
            i = simple(i, True)
        assert all(1 <= value <= top for value in state.values())
    assert i == len(tokens) - 1, "END must be the last token"
    return expected, statements


@pytest.mark.parametrize("variables", [1, 3, 5])
def test_labels_agree_with_an_independent_interpreter(variables):
    rng = random.Random(variables)
    for _ in range(100):
        tokens, labels = generate_program(rng, ProgramSpec(variables, 100))
        assert len(tokens) == len(labels)
        assert tokens[-1] == "END" and tokens.count("END") == 1
        assert set(tokens) <= set(VOCAB)
        expected, statements = interpret(tokens, variables)
        assert statements == 100
        assert labels == expected


def test_program_statistics_match_the_official_data():
    # Official data (3 variables, 100 statements): ~430 tokens and ~25 prints per program.
    rng = random.Random(0)
    programs = [generate_program(rng, ProgramSpec(3, 100)) for _ in range(200)]
    tokens = sum(len(t) for t, _ in programs) / len(programs)
    prints = sum(t.count("print") for t, _ in programs) / len(programs)
    assert 400 <= tokens <= 460
    assert 20 <= prints <= 30


def test_single_statement_is_an_assignment():
    tokens, labels = generate_program(random.Random(1), ProgramSpec(3, 1))
    assert tokens[1] == "=" and tokens[-1] == "END" and set(labels) == {"_"}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a = generate_dataset(tmp_path / "a", sizes=SMALL, seed=7)
    b = generate_dataset(tmp_path / "b", sizes=SMALL, seed=7)
    c = generate_dataset(tmp_path / "c", sizes=SMALL, seed=8)
    for name in (
        "train.txt",
        "valid.txt",
        "test.txt",
        "train.txt.labels",
        "valid.txt.labels",
        "test.txt.labels",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert (a / "train.txt").read_text().count("\n") == SMALL[0]
    assert (a / "valid.txt").read_bytes() != (a / "test.txt").read_bytes()


def test_loader_round_trip(tmp_path):
    generate_dataset(tmp_path, ProgramSpec(variables=5, statements=30), sizes=SMALL, seed=3)
    inputs, targets = load_code_exec_split(tmp_path, "valid")
    assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == targets.shape
    programs = (tmp_path / "valid.txt").read_text().split()
    labels = (tmp_path / "valid.txt.labels").read_text().split()
    assert [VOCAB[i] for i in inputs.tolist()] == programs
    assert [("_" if t == IGNORE_INDEX else VOCAB[t]) for t in targets.tolist()] == labels
    assert (inputs == TOKEN_TO_ID["END"]).sum() == SMALL[1]
    # Each scored position is the ";" closing a print.
    scored = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    assert (inputs[scored] == TOKEN_TO_ID[";"]).all() and (inputs[scored - 2] == TOKEN_TO_ID["print"]).all()


def test_loader_tolerates_trailing_whitespace(tmp_path):
    (tmp_path / "test.txt").write_text("x = 3 ; print x ; END  \n\n\n")
    (tmp_path / "test.txt.labels").write_text("_ _ _ _ _ _ 3 _\n")
    inputs, targets = load_code_exec_split(tmp_path, "test")
    assert inputs.tolist() == [TOKEN_TO_ID[t] for t in ["x", "=", "3", ";", "print", "x", ";", "END"]]
    assert targets.tolist() == [IGNORE_INDEX] * 6 + [TOKEN_TO_ID["3"], IGNORE_INDEX]


def test_loader_errors(tmp_path):
    with pytest.raises(FbtError, match="no such code-exec data directory"):
        load_code_exec_split(tmp_path / "nowhere", "train")
    generate_dataset(tmp_path, ProgramSpec(statements=10), sizes=(3, 1, 1))
    with pytest.raises(FbtError, match="unknown split"):
        load_code_exec_split(tmp_path, "dev")
    (tmp_path / "valid.txt.labels").unlink()
    with pytest.raises(FbtError, match="no such file: .*valid.txt.labels"):
        load_code_exec_split(tmp_path, "valid")
    (tmp_path / "test.txt").write_text("")
    with pytest.raises(FbtError, match="empty"):
        load_code_exec_split(tmp_path, "test")

    labels = (tmp_path / "train.txt.labels").read_text().splitlines()
    labels[1] += " _"
    (tmp_path / "train.txt.labels").write_text("\n".join(labels) + "\n")
    with pytest.raises(FbtError, match="line 2 has"):
        load_code_exec_split(tmp_path, "train")

    (tmp_path / "train.txt.labels").write_text("_ _ _ _\n")
    (tmp_path / "train.txt").write_text("x = 11 ;\n")
    with pytest.raises(FbtError, match="line 1: unknown token '11'"):
        load_code_exec_split(tmp_path, "train")


@pytest.mark.parametrize("kwargs", [{"sizes": (1, 0, 1)}, {"sizes": (1, 1)}])
def test_generator_rejects_bad_sizes(tmp_path, kwargs):
    with pytest.raises(FbtError):
        generate_dataset(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {"variables": 0},
        {"variables": 6},
        {"statements": 0},
        {"max_value": 1},
        {"max_value": 11},
        {"weights": (1, 1, 1, 1)},
        {"weights": (1, 1, -1, 1, 1)},
        {"weights": (0, 1, 1, 1, 1)},
        {"weights": (1, 0, 0, 1, 1)},
    ],
)
def test_generator_rejects_bad_options(options):
    with pytest.raises(FbtError):
        ProgramSpec(**options)


@pytest.mark.parametrize(
    "variables,top,weights", [(1, 5, (1, 1, 1, 4, 2)), (3, 3, (1, 2, 0, 1, 1)), (2, 10, (1, 0, 1, 3, 1))]
)
def test_generator_options_keep_the_rules_and_follow_the_weights(variables, top, weights):
    rng = random.Random(5)
    spec = ProgramSpec(variables, 60, top, weights)
    kinds = dict.fromkeys(("=", "++", "--", "if", "print"), 0)
    for _ in range(50):
        tokens, labels = generate_program(rng, spec)
        assert labels == interpret(tokens, variables, top)[0]
        for i, token in enumerate(tokens):
            if token in ("if", "print"):
                kinds[token] += 1
            elif token in ("=", "++", "--") and tokens[i - 2] != ":":  # top level, not an if's body
                kinds[token] += 1
    for kind, weight in zip(kinds, weights):
        assert (kinds[kind] == 0) == (weight == 0), kind


def test_generator_json_records_the_options(tmp_path):
    import json

    generate_dataset(tmp_path, ProgramSpec(1, 12, 5, (1, 1, 1, 4, 2)), sizes=(2, 1, 1), seed=9)
    assert json.loads((tmp_path / "generator.json").read_text()) == {
        "variables": 1,
        "statements": 12,
        "max_value": 5,
        "weights": [1.0, 1.0, 1.0, 4.0, 2.0],
        "seed": 9,
    }


def encode(program: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.tensor([TOKEN_TO_ID[t] for t in program.split()])
    targets = torch.tensor([IGNORE_INDEX if t == "_" else TOKEN_TO_ID[t] for t in labels.split()])
    return inputs, targets


def test_last_print_reference_on_a_known_program():
    program = "x = 3 ; print x ; x ++ ; print x ; print x ; END x = 4 ; print x ; END"
    labels = "_ _ _ _ _ _ 3 _ _ _ _ _ 4 _ _ 4 _ _ _ _ _ _ _ 4 _"
    inputs, targets = encode(program, labels)
    # Four prints: the first of each program is wrong, "3" for the second is wrong, "4" for the third right.
    assert last_print_accuracy(inputs, targets) == 0.25


def test_count_ignoring_ifs_on_a_known_program():
    program = "x = 3 ; x ++ ; print x ; if x < 9 : x ++ ; print x ; y = 2 ; y -- ; print y ; END x = 5 ; print x ; END"
    labels = "_ _ _ _ _ _ _ _ _ 4 _ _ _ _ _ _ _ _ _ _ 5 _ _ _ _ _ _ _ _ _ 1 _ _ _ _ _ _ _ 5 _"
    inputs, targets = encode(program, labels)
    # 4 (right), 4 for 5 (the if is ignored: wrong), 1 (right), 5 in the next program (right).
    assert count_ignoring_ifs_accuracy(inputs, targets) == 0.75
    assert last_print_accuracy(inputs, targets) == 0.0


def test_count_ignoring_ifs_is_exact_without_ifs():
    rng = random.Random(3)
    spec = ProgramSpec(3, 50, 10, (1, 1, 1, 0, 1))
    program, labels = zip(*(generate_program(rng, spec) for _ in range(20)))
    inputs, targets = encode(" ".join(" ".join(p) for p in program), " ".join(" ".join(lab) for lab in labels))
    assert count_ignoring_ifs_accuracy(inputs, targets) == 1.0
