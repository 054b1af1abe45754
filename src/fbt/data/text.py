"""Language modelling on any file: raw bytes 0..255 (task `text`), or BPE subwords (task `lm`).

The file is split 90/5/5 into train/valid/test by position, which for the 100,000,000-byte enwik8 is the
standard 90M/5M/5M split. Subword splits are the same byte ranges, each moved forward to the next character
boundary, then tokenized. A TSV file with a `column` is read as that column's lines joined by line breaks.

A directory holding `dataset.json` stands for the file that JSON names: `fbt data enwik8` checks a copy of
enwik8 and writes it so, and `--data DIR` then reads DIR/enwik8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fbt.data.splits import SPLITS, is_code_exec_dir
from fbt.errors import FbtError
from fbt.rundir import read_json

DATASET_INFO = "dataset.json"  # in a dataset directory: {"file": NAME, ...}, the text file it holds


def split_bounds(size: int) -> dict[str, tuple[int, int]]:
    """Byte range [start, end) of each split of a file of `size` bytes (integer arithmetic: exact for enwik8)."""
    train_end, valid_end = size * 90 // 100, size * 95 // 100
    return {"train": (0, train_end), "valid": (train_end, valid_end), "test": (valid_end, size)}


def resolve_text_path(path: str | Path) -> Path:
    """The text file `path` stands for: itself, or the file named by the dataset.json of a directory."""
    path = Path(path)
    info = path / DATASET_INFO
    if not info.is_file():
        return path
    name = read_json(info).get("file")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise FbtError(f'{info} does not name a file of {path} (expected "file": a file name)')
    return path / name


def check_text_file(path: Path) -> None:
    if path.is_dir():
        kind = "a code-exec dataset directory" if is_code_exec_dir(path) else "a directory"
        hint = " (pass --task code-exec)" if is_code_exec_dir(path) else ""
        raise FbtError(f"{path} is {kind}, but language modelling reads one text file{hint}")
    if not path.is_file():
        raise FbtError(f"no such text file: {path}")
    if os.path.getsize(path) == 0:
        raise FbtError(f"text file {path} is empty")


def read_text_bytes(path: str | Path, column: str = "") -> bytes:
    """The file's bytes, or a TSV column's lines joined by line breaks."""
    path = resolve_text_path(path)
    check_text_file(path)
    if not column:
        return path.read_bytes()
    from fbt.data.translation import read_columns

    return "\n".join(read_columns(path, [column])[0]).encode("utf-8")


def subword_split_text(data: bytes, split: str) -> str:
    """The text of one split: the byte range of `split_bounds`, both ends moved to a character start."""
    if split not in SPLITS:
        raise FbtError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")

    def boundary(at: int) -> int:
        while at < len(data) and 0x80 <= data[at] < 0xC0:  # a UTF-8 continuation byte
            at += 1
        return at

    start, end = split_bounds(len(data))[split]
    return data[boundary(start) : boundary(end)].decode("utf-8", errors="replace")


def load_subword_split(data: bytes, split: str, encode) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N,) and next-token targets (N,) of one split, tokenized by `encode` (str -> list of ids)."""
    ids = torch.tensor(encode(subword_split_text(data, split)), dtype=torch.long)
    if ids.numel() < 2:
        raise FbtError(f"the {split} split has {ids.numel()} tokens, too few to predict one from another")
    return ids[:-1], ids[1:]


def load_text_split(path: str | Path, split: str, column: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N,) and next-byte targets (N,) of one split, int64, where N is the split's size minus one; with
    a `column`, of that TSV column's lines joined by line breaks.

    Both are views of one tensor (no second copy: enwik8's train split is 720 MB as int64).
    """
    if split not in SPLITS:
        raise FbtError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = resolve_text_path(path)
    check_text_file(path)
    text = read_text_bytes(path, column) if column else None
    size = len(text) if column else os.path.getsize(path)
    bounds = split_bounds(size)
    sizes = {name: end - start for name, (start, end) in bounds.items()}
    if min(sizes.values()) < 2:
        # Each split needs one input byte and its next byte; 31 bytes is the smallest file that works.
        what = f"column {column!r} of {path}" if column else str(path)
        raise FbtError(f"{what} has {size} bytes, too few for a 90/5/5 split with at least 2 bytes each (got {sizes})")
    start, end = bounds[split]
    if column:
        data = np.frombuffer(text, dtype=np.uint8)[start:end].copy()  # a writable copy of the split
    else:
        data = np.fromfile(path, dtype=np.uint8, count=end - start, offset=start)  # reads only this split
    tokens = torch.from_numpy(data).long()  # (end - start,)
    return tokens[:-1], tokens[1:]
