"""Byte-level splits: exact 90/5/5 boundaries, arbitrary bytes, and clear errors."""

from __future__ import annotations

import pytest
import torch

from fbt.data.text import load_text_split, split_bounds
from fbt.errors import FbtError


def test_split_boundaries(tmp_path):
    path = tmp_path / "corpus.bin"
    path.write_bytes(bytes(range(200)))
    expected = {"train": range(180), "valid": range(180, 190), "test": range(190, 200)}
    for split, span in expected.items():
        inputs, targets = load_text_split(path, split)
        assert inputs.dtype == targets.dtype == torch.int64
        assert inputs.tolist() == list(span)[:-1]
        assert targets.tolist() == list(span)[1:]


def test_enwik8_sizes_are_the_standard_split():
    assert split_bounds(100_000_000) == {
        "train": (0, 90_000_000),
        "valid": (90_000_000, 95_000_000),
        "test": (95_000_000, 100_000_000),
    }


def test_arbitrary_bytes_are_kept(tmp_path):
    data = bytes([0xFF, 0xFE, 0x80, 0x00, 0xC3, 0x28, 0x0A, 0x0D] * 25)  # invalid UTF-8, NUL, CR, LF
    path = tmp_path / "binary"
    path.write_bytes(data)
    inputs, targets = load_text_split(path, "train")
    assert bytes(inputs.tolist()) == data[:179]
    assert bytes(targets.tolist()) == data[1:180]


def test_smallest_file_gives_two_bytes_per_split(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(bytes(range(31)))
    assert [len(load_text_split(path, s)[0]) for s in ("train", "valid", "test")] == [26, 1, 1]


def test_errors(tmp_path):
    with pytest.raises(FbtError, match="no such text file"):
        load_text_split(tmp_path / "missing.txt", "train")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(FbtError, match="empty"):
        load_text_split(empty, "train")
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 30)
    with pytest.raises(FbtError, match="too few"):
        load_text_split(small, "test")
    small.write_bytes(b"x" * 100)
    with pytest.raises(FbtError, match="unknown split"):
        load_text_split(small, "validation")


def test_a_tsv_column_is_split_as_its_lines_joined(tmp_path):
    lines = [f"line {n:03d} é" for n in range(40)]  # 11 bytes each in UTF-8
    path = tmp_path / "corpus.tsv"
    path.write_text("other\tenglish\n" + "".join(f"x{n}\t{line}\n" for n, line in enumerate(lines)))
    text = "\n".join(lines).encode("utf-8")
    bounds = split_bounds(len(text))
    for split, (start, end) in bounds.items():
        inputs, targets = load_text_split(path, split, column="english")
        assert bytes(inputs.tolist()) == text[start : end - 1]
        assert bytes(targets.tolist()) == text[start + 1 : end]
    with pytest.raises(FbtError, match="no column 'french'"):
        load_text_split(path, "train", column="french")
    path.write_text("english\nab\n")
    with pytest.raises(FbtError, match="column 'english' of .* too few"):
        load_text_split(path, "train", column="english")
