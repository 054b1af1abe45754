"""Byte-level language modelling on any file: tokens are raw bytes 0..255, no text encoding assumed.

The file is split 90/5/5 into train/valid/test by position, which for the 100,000,000-byte enwik8 is the
standard 90M/5M/5M split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fbt.data.splits import SPLITS, is_code_exec_dir
from fbt.errors import FbtError


def split_bounds(size: int) -> dict[str, tuple[int, int]]:
    """Byte range [start, end) of each split of a file of `size` bytes (integer arithmetic: exact for enwik8)."""
    train_end, valid_end = size * 90 // 100, size * 95 // 100
    return {"train": (0, train_end), "valid": (train_end, valid_end), "test": (valid_end, size)}


def load_text_split(path: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N,) and next-byte targets (N,) of one split, int64, where N is the split's size minus one.

    Both are views of one tensor (no second copy: enwik8's train split is 720 MB as int64).
    """
    if split not in SPLITS:
        raise FbtError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(path)
    if path.is_dir():
        kind = "a code-exec dataset directory" if is_code_exec_dir(path) else "a directory"
        hint = " (pass --task code-exec)" if is_code_exec_dir(path) else ""
        raise FbtError(f"{path} is {kind}, but the text task reads one text file{hint}")
    if not path.is_file():
        raise FbtError(f"no such text file: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise FbtError(f"text file {path} is empty")
    bounds = split_bounds(size)
    sizes = {name: end - start for name, (start, end) in bounds.items()}
    if min(sizes.values()) < 2:
        # Each split needs one input byte and its next byte; 31 bytes is the smallest file that works.
        raise FbtError(f"{path} has {size} bytes, too few for a 90/5/5 split with at least 2 bytes each (got {sizes})")
    start, end = bounds[split]
    data = np.fromfile(path, dtype=np.uint8, count=end - start, offset=start)  # reads only this split
    tokens = torch.from_numpy(data).long()  # (end - start,)
    return tokens[:-1], tokens[1:]
