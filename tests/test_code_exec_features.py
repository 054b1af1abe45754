"""The features of a code-exec print come from running its program: the values agree with the generator's
labels, and a hand-run program gives the ages, counts and causes written out below."""

from __future__ import annotations

import random

import pytest

from fbt.data.code_exec import ProgramSpec, generate_program
from fbt.data.code_exec_features import PrintFeatures, bucket_order, print_features
from fbt.errors import FbtError


@pytest.mark.parametrize("variables, weights", [(1, (1, 1, 1, 1, 1)), (3, (1, 1, 1, 1, 1)), (5, (1, 1, 1, 2, 3))])
def test_printed_values_are_the_generators_labels(variables, weights):
    rng = random.Random(variables)
    for _ in range(50):
        tokens, labels = generate_program(rng, ProgramSpec(variables, 100, weights=weights))
        found = print_features(tokens)
        assert [(f.index, str(f.value)) for f in found] == [(i, v) for i, v in enumerate(labels) if v != "_"]


def test_a_hand_run_program():
    program = "x = 3 ; y = 5 ; if x < y : x ++ ; if y < 2 : y -- ; print x ; y -- ; x ++ ; print y ; print x ; END"
    tokens = program.split()
    assert print_features(tokens) == [
        # statement 5: x changed by the true if of statement 3; y's false if changed nothing
        PrintFeatures(tokens.index("print") + 2, 4, 2, 2, "if", 5),
        PrintFeatures(len(tokens) - 5, 4, 2, 2, "++/--", 8),
        PrintFeatures(len(tokens) - 2, 5, 2, 2, "++/--", 9),
    ]


def test_buckets_double_with_age_and_group_statements_by_ten():
    def bucket(since_change: int, statement: int) -> tuple[str, str]:
        found = PrintFeatures(0, 1, since_change, 1, "=", statement).buckets()
        return found["since_change"], found["statement"]

    assert [bucket(n, n)[0] for n in (1, 2, 3, 4, 7, 8, 16, 31, 32)] == [
        "1", "2-3", "2-3", "4-7", "4-7", "8-15", "16-31", "16-31", "32-63"
    ]  # fmt: skip
    assert [bucket(1, n)[1] for n in (1, 10, 11, 100)] == ["1-10", "1-10", "11-20", "91-100"]
    assert sorted(["16-31", "2-3", "1", "4-7"], key=lambda b: bucket_order("since_change", b)) == [
        "1", "2-3", "4-7", "16-31"
    ]  # fmt: skip
    assert sorted(["if", "=", "++/--"], key=lambda b: bucket_order("changed_by", b)) == ["=", "++/--", "if"]


@pytest.mark.parametrize(
    "program",
    [
        "print x ; END",  # x holds no value
        "x = 3 ; y ++ ; END",
        "x = 3 ; if y < 2 : x ++ ; END",
        "x = 3 ; if x < 2 x ++ ; END",
        "x = ; END",
        "x = 3 ; ; END",
        "x = 3 ; x ++ END",
    ],
)
def test_a_program_that_cannot_run_is_one_error(program):
    with pytest.raises(FbtError, match="cannot run"):
        print_features(program.split())
