"""Parallel corpora for translation: reading, a deterministic split, and batches of similar length.

Input: a TSV file (optionally gzip-compressed) whose header names its columns, read with `source_column` and
`target_column`; or two aligned text files, one sentence per line (`data` and `target_data`).

Split (train/valid/test, about 90/5/5), the same on every machine and independent of line order:
- with `group_column` (e.g. the Bible's `book`), whole groups are held out: groups are taken in the order of
  the SHA-256 of their name, first into test until it holds 5% of the pairs, then into valid until 5%; the
  rest is train. No verse of a held-out book, or of its chapters, is seen in training.
- without it, each pair goes by the SHA-256 of its source sentence (0-4 of 100: test, 5-9: valid), so a
  sentence repeated in the corpus never lands on two sides.

Batches: token ids are `source + </s>` for the encoder, `<s> + target` as decoder input and `target + </s>` as
its labels. Pairs are sorted by length and cut into batches of at most `batch_tokens` padded tokens (the
longer side times the pair count), so little compute goes to padding; training visits the batches in a new
seeded order every pass. Training pairs with a side longer than `max_length` tokens are dropped; valid and
test loss passes drop them too (BLEU translates every test pair).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from fbt.data.splits import SPLITS
from fbt.data.targets import IGNORE_INDEX
from fbt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, BpeTokenizer
from fbt.errors import FbtError

HELD_OUT = 0.05  # fraction of pairs in each of test and valid


@dataclass(frozen=True)
class ParallelCorpus:
    sources: list[str]
    targets: list[str]
    groups: list[str] | None  # the group of each pair, when the corpus has a group column


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_columns(path: Path, names: list[str]) -> list[list[str]]:
    """The named columns of a TSV file with a header line (gzip-compressed when it ends in .gz)."""
    csv.field_size_limit(sys.maxsize)
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if not header:
                raise FbtError(f"{path} is empty")
            missing = [name for name in names if name not in header]
            if missing:
                raise FbtError(f"{path} has no column {missing[0]!r}; its columns are {', '.join(header)}")
            index = [header.index(name) for name in names]
            rows = [row for row in reader if row]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise FbtError(f"cannot read {path}: {error}") from None
    short = next((n for n, row in enumerate(rows, start=2) if len(row) <= max(index)), None)
    if short is not None:
        raise FbtError(f"{path} line {short} has fewer columns than its header")
    return [[row[i].strip() for row in rows] for i in index]


def read_tsv(path: Path, source_column: str, target_column: str, group_column: str = "") -> ParallelCorpus:
    if not source_column or not target_column:
        raise FbtError("a TSV corpus needs --source-column and --target-column (names from its header line)")
    columns = read_columns(path, [source_column, target_column] + ([group_column] if group_column else []))
    return ParallelCorpus(columns[0], columns[1], columns[2] if group_column else None)


def read_aligned(source_path: Path, target_path: Path) -> ParallelCorpus:
    def lines(path: Path) -> list[str]:
        if not path.is_file():
            raise FbtError(f"no such file: {path}")
        try:
            with _open_text(path) as handle:
                return [line.rstrip("\r\n").strip() for line in handle]
        except (OSError, UnicodeDecodeError) as error:
            raise FbtError(f"cannot read {path}: {error}") from None

    sources, targets = lines(source_path), lines(target_path)
    if len(sources) != len(targets):
        raise FbtError(f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: not aligned")
    return ParallelCorpus(sources, targets, None)


def read_corpus(
    data: str, source_column: str = "", target_column: str = "", target_data: str = "", group_column: str = ""
) -> ParallelCorpus:
    """The pairs of a corpus with empty sides dropped; a clear error if none remain."""
    if not data:
        raise FbtError("no data given for translation: pass --data FILE.tsv (or a source file and --target-data)")
    path = Path(data)
    if not path.is_file():
        raise FbtError(f"no such file: {path}")
    if target_data:
        corpus = read_aligned(path, Path(target_data))
    else:
        corpus = read_tsv(path, source_column, target_column, group_column)
    keep = [i for i, (s, t) in enumerate(zip(corpus.sources, corpus.targets)) if s and t]
    if not keep:
        raise FbtError(f"{path} holds no sentence pair with both sides non-empty")
    groups = [corpus.groups[i] for i in keep] if corpus.groups else None
    return ParallelCorpus([corpus.sources[i] for i in keep], [corpus.targets[i] for i in keep], groups)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_indices(corpus: ParallelCorpus) -> dict[str, list[int]]:
    """Indices of the pairs of each split (see the module docstring for the rule)."""
    n = len(corpus.sources)
    if corpus.groups is None:
        bucket = [_digest(source) % 100 for source in corpus.sources]
        test = [i for i in range(n) if bucket[i] < 5]
        valid = [i for i in range(n) if 5 <= bucket[i] < 10]
        held = set(test) | set(valid)
        return {"train": [i for i in range(n) if i not in held], "valid": valid, "test": test}
    members: dict[str, list[int]] = {}
    for i, group in enumerate(corpus.groups):
        members.setdefault(group, []).append(i)
    if len(members) < 3:
        raise FbtError(f"holding out whole groups needs at least 3 groups, the corpus has {len(members)}")
    order = sorted(members, key=_digest)
    chosen: dict[str, list[int]] = {"test": [], "valid": []}
    names = iter(order)
    for split in ("test", "valid"):
        while len(chosen[split]) < HELD_OUT * n:
            chosen[split].extend(members[next(names)])
    train = [i for name in names for i in members[name]]
    if not train:
        raise FbtError("holding out whole groups left no training pairs: the corpus needs more groups")
    return {"train": sorted(train), "valid": sorted(chosen["valid"]), "test": sorted(chosen["test"])}


def held_out_groups(corpus: ParallelCorpus, split: str) -> list[str]:
    """The groups of a split, in corpus order (for documentation and reports)."""
    if corpus.groups is None:
        return []
    return list(dict.fromkeys(corpus.groups[i] for i in split_indices(corpus)[split]))


def load_split_pairs(corpus: ParallelCorpus, split: str) -> tuple[list[str], list[str]]:
    if split not in SPLITS:
        raise FbtError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    indices = split_indices(corpus)[split]
    if not indices:
        raise FbtError(f"the {split} split of the corpus is empty: it needs more pairs")
    return [corpus.sources[i] for i in indices], [corpus.targets[i] for i in indices]


class TranslationBatch(NamedTuple):
    """Encoder input (B, S) padded with <pad>, decoder input (B, T) starting with <s>, padded with <pad>."""

    source: torch.Tensor
    target: torch.Tensor

    def to(self, device: torch.device) -> TranslationBatch:
        return TranslationBatch(self.source.to(device), self.target.to(device))

    def numel(self) -> int:
        """Target tokens (what a training step is counted in)."""
        return int((self.target != PAD_ID).sum())


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


def make_batch(sources: list[list[int]], targets: list[list[int]]) -> tuple[TranslationBatch, torch.Tensor]:
    """A batch and its labels (B, T), IGNORE_INDEX at padding."""
    batch = TranslationBatch(pad([s + [EOS_ID] for s in sources], PAD_ID), pad([[BOS_ID] + t for t in targets], PAD_ID))
    return batch, pad([t + [EOS_ID] for t in targets], IGNORE_INDEX)


class TranslationStream:
    """Length-sorted batches of token ids with the `SegmentStream` interface the trainer and evaluator use."""

    def __init__(
        self,
        sources: list[list[int]],
        targets: list[list[int]],
        batch_tokens: int,
        max_length: int,
        seed: int = 0,
        shuffle: bool = True,
    ):
        keep = [i for i in range(len(sources)) if len(sources[i]) <= max_length and len(targets[i]) <= max_length]
        if not keep:
            raise FbtError(f"no sentence pair has both sides within --max-length {max_length} tokens")
        if batch_tokens < max_length + 1:
            raise FbtError(f"--batch-tokens {batch_tokens} cannot hold one pair of --max-length {max_length}: raise it")
        self.dropped = len(sources) - len(keep)
        order = sorted(keep, key=lambda i: (len(targets[i]), len(sources[i]), i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        width = 0
        for i in order:
            pair_width = max(len(sources[i]), len(targets[i])) + 1
            if current and (len(current) + 1) * max(width, pair_width) > batch_tokens:
                self.batches.append(current)
                current, width = [], 0
            current.append(i)
            width = max(width, pair_width)
        self.batches.append(current)
        self.sources, self.targets = sources, targets
        self.seed, self.shuffle = seed, shuffle
        self.pairs = len(keep)
        self.tokens = sum(len(targets[i]) + 1 for i in keep)  # decoder labels per pass
        self.position = 0
        self.epoch = 0

    def segments_per_pass(self) -> int:
        return len(self.batches)

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.batches)))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.batches), generator=generator).tolist()

    def _batch(self, index: int) -> tuple[TranslationBatch, torch.Tensor]:
        pairs = self.batches[index]
        return make_batch([self.sources[i] for i in pairs], [self.targets[i] for i in pairs])

    def next_segment(self) -> tuple[TranslationBatch, torch.Tensor, bool]:
        """The next training batch, its labels, and True (every batch starts new sentences)."""
        batch, labels = self._batch(self._order(self.epoch)[self.position])
        self.position += 1
        if self.position == len(self.batches):
            self.position, self.epoch = 0, self.epoch + 1
        return batch, labels, True

    def iterate_once(self) -> Iterator[tuple[TranslationBatch, torch.Tensor]]:
        for index in range(len(self.batches)):
            yield self._batch(index)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "epoch": self.epoch, "batches": len(self.batches)}

    def load_state_dict(self, state: dict) -> None:
        try:
            position, epoch, batches = int(state["position"]), int(state["epoch"]), int(state["batches"])
        except (KeyError, TypeError, ValueError) as error:
            raise FbtError(f"invalid data position {state!r}: {error}") from None
        if batches != len(self.batches):
            raise FbtError(
                f"the saved data position is for {batches} batches per pass, the data now gives "
                f"{len(self.batches)}: the corpus or the batching changed"
            )
        if not 0 <= position < batches or epoch < 0:
            raise FbtError(f"invalid data position {state!r}")
        self.position, self.epoch = position, epoch


def encode_pairs(tokenizer: BpeTokenizer, sources: list[str], targets: list[str]) -> tuple[list, list]:
    return tokenizer.encode_batch(sources), tokenizer.encode_batch(targets)
