"""The code-exec generator against an independent interpreter, its reproducibility, and the loader."""

from __future__ import annotations

import random

import pytest
import torch

from fbt.data.code_exec import (
    IGNORE_INDEX,
    TOKEN_TO_ID,
    VOCAB,
    generate_dataset,
    generate_program,
    load_code_exec_split,
)
from fbt.errors import FbtError

SMALL = (20, 5, 5)


def interpret(tokens: list[str], variables: int) -> tuple[list[str], int]:
    """Runs a program written from the rules of DESIGN.md §2, checking every rule the generator must keep;
    returns the expected label of every token and the number of statements."""
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
            assert 1 <= k <= 10 and tokens[i + 3] == ";"
            if execute:
                state[v] = k
            return i + 4
        assert op in ("++", "--") and tokens[i + 2] == ";" and v in state
        new = state[v] + (1 if op == "++" else -1)
        assert 1 <= new <= 10, "value leaves 1..10"
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
                assert 1 <= right <= 10
            holds = state[a] < right if op == "<" else state[a] > right
            i = simple(i + 5, holds)
        else:
            i = simple(i, True)
        assert all(1 <= value <= 10 for value in state.values())
    assert i == len(tokens) - 1, "END must be the last token"
    return expected, statements


@pytest.mark.parametrize("variables", [1, 3, 5])
def test_labels_agree_with_an_independent_interpreter(variables):
    rng = random.Random(variables)
    for _ in range(100):
        tokens, labels = generate_program(rng, variables, 100)
        assert len(tokens) == len(labels)
        assert tokens[-1] == "END" and tokens.count("END") == 1
        assert set(tokens) <= set(VOCAB)
        expected, statements = interpret(tokens, variables)
        assert statements == 100
        assert labels == expected


def test_program_statistics_match_the_official_data():
    # Official data (3 variables, 100 statements): ~430 tokens and ~25 prints per program.
    rng = random.Random(0)
    programs = [generate_program(rng, 3, 100) for _ in range(200)]
    tokens = sum(len(t) for t, _ in programs) / len(programs)
    prints = sum(t.count("print") for t, _ in programs) / len(programs)
    assert 400 <= tokens <= 460
    assert 20 <= prints <= 30


def test_single_statement_is_an_assignment():
    tokens, labels = generate_program(random.Random(1), 3, 1)
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
    generate_dataset(tmp_path, variables=5, statements=30, sizes=SMALL, seed=3)
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
    generate_dataset(tmp_path, statements=10, sizes=(3, 1, 1))
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


@pytest.mark.parametrize(
    "kwargs", [{"variables": 0}, {"variables": 6}, {"statements": 0}, {"sizes": (1, 0, 1)}, {"sizes": (1, 1)}]
)
def test_generator_rejects_bad_sizes(tmp_path, kwargs):
    with pytest.raises(FbtError):
        generate_dataset(tmp_path, **kwargs)


def test_last_print_reference_on_a_known_program():
    from fbt.data.code_exec import last_print_accuracy

    program = "x = 3 ; print x ; x ++ ; print x ; print x ; END x = 4 ; print x ; END"
    labels = "_ _ _ _ _ _ 3 _ _ _ _ _ 4 _ _ 4 _ _ _ _ _ _ _ 4 _"
    inputs = torch.tensor([TOKEN_TO_ID[t] for t in program.split()])
    targets = torch.tensor([IGNORE_INDEX if t == "_" else TOKEN_TO_ID[t] for t in labels.split()])
    # Four prints: the first of each program is wrong, "3" for the second is wrong, "4" for the third right.
    assert last_print_accuracy(inputs, targets) == 0.25
