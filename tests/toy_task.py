"""A task defined outside the package: recall the token seen DELAY positions earlier.

`RecallTask` is registered as "recall" on import, so `fbt train --task recall` (or `--data DIR` of a directory
written by `write_recall_data`) trains it like any shipped task. A split is one file of space-separated ids.
"""

from pathlib import Path

import torch

from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError
from fbt.tasks import Task, register_task

DELAY = 2  # the target at position t is the input at t - DELAY
VOCAB = 6
SUFFIX = ".recall"  # a split's file: DIR/train.recall, DIR/valid.recall, DIR/test.recall


class RecallTask(Task):
    vocab_size = VOCAB
    valid_metric = "valid_accuracy"
    higher_is_better = True
    example_prompt = "1 2 3"

    @classmethod
    def recognises_data(cls, path):
        return (Path(path) / f"train{SUFFIX}").is_file()

    def load_split(self, data, split, config):
        ids = torch.tensor([int(token) for token in (Path(data) / f"{split}{SUFFIX}").read_text().split()])  # (N,)
        targets = ids.roll(DELAY)  # (N,)
        targets[:DELAY] = IGNORE_INDEX  # nothing to recall yet
        return ids, targets

    def encode(self, prompt):
        ids = [int(token) for token in prompt.split()]
        if any(not 0 <= i < VOCAB for i in ids):
            raise FbtError(f"recall ids are 0..{VOCAB - 1}")
        return ids

    def decode(self, ids):
        return " ".join(map(str, ids))


register_task("recall", RecallTask)


def write_recall_data(directory: Path, sizes=(2000, 200, 200), seed: int = 0) -> Path:
    """Uniformly random ids for each split."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for split, size in zip(("train", "valid", "test"), sizes, strict=True):
        ids = torch.randint(0, VOCAB, (size,), generator=generator)
        (directory / f"{split}{SUFFIX}").write_text(" ".join(map(str, ids.tolist())))
    return directory
