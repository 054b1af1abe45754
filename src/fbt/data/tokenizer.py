"""Byte-level BPE subword tokenizers, trained and run by Hugging Face `tokenizers` (the `mt` extra).

Byte-level means the base alphabet is the 256 bytes: any UTF-8 text encodes (no unknown token) and decodes
back to exactly the same text. Three special tokens come first: <pad> (0), <s> (1) and </s> (2); language
models use none of them, translation uses all three. A tokenizer is one file, `tokenizer.json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from fbt.errors import FbtError

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
MIN_VOCAB = len(SPECIAL_TOKENS) + 256  # the specials and the byte alphabet


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise FbtError("BPE tokenizers need the `tokenizers` package: pip install 'fbt[mt]'") from None
    return tokenizers


class BpeTokenizer:
    """A loaded tokenizer: text <-> ids, and how many bytes of text each id stands for."""

    def __init__(self, backend, source: str = ""):
        self.backend = backend
        self.source = source  # where it was read from, for messages
        # Text that spells a special token ("<pad>") is ordinary text: it must round-trip, not become id 0.
        backend.encode_special_tokens = True
        self.vocab_size = backend.get_vocab_size()
        vocab = backend.get_vocab()
        if any(vocab.get(token) != index for index, token in enumerate(SPECIAL_TOKENS)):
            raise FbtError(f"{source or 'the tokenizer'} is not an fbt tokenizer: ids 0..2 must be {SPECIAL_TOKENS}")
        # A byte-level token's string has one character per byte; the specials stand for no text.
        lengths = torch.zeros(self.vocab_size, dtype=torch.long)
        for token, index in vocab.items():
            if token not in SPECIAL_TOKENS:
                lengths[index] = len(token)
        self.token_bytes = lengths  # (V,)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        return self.backend.decode_batch(batch, skip_special_tokens=True)

    def to_str(self) -> str:
        return self.backend.to_str()

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        path.write_text(self.to_str(), encoding="utf-8")
        return path


def train_tokenizer(texts: Iterator[str], vocab_size: int) -> BpeTokenizer:
    """Learn a byte-level BPE of `vocab_size` ids (specials and the 256 bytes included) from `texts`."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise FbtError(f"vocab size must be at least {MIN_VOCAB} (3 special tokens and 256 bytes), got {vocab_size}")
    tk = _tokenizers()
    backend = tk.Tokenizer(tk.models.BPE())
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return BpeTokenizer(backend)


def train_tokenizer_on_files(files: list[str | Path], vocab_size: int) -> BpeTokenizer:
    """A tokenizer learned from text files, read line by line."""
    if not files:
        raise FbtError("no training files given for the tokenizer: pass --data FILE...")
    for file in files:
        if not Path(file).is_file():
            raise FbtError(f"no such text file: {file}")
        if Path(file).stat().st_size == 0:
            raise FbtError(f"text file {file} is empty")

    def lines() -> Iterator[str]:
        for file in files:
            with open(file, encoding="utf-8", errors="replace") as handle:
                yield from handle

    return train_tokenizer(lines(), vocab_size)


def load_tokenizer(path: str | Path) -> BpeTokenizer:
    """A tokenizer from a directory holding tokenizer.json, or from the file itself; one-line errors."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FbtError(f"no tokenizer at {path}: expected {TOKENIZER_FILE} (train one with `fbt tokenizer train`)")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise FbtError(f"{file} is not a valid tokenizer file: {error}") from None
    return tokenizer_from_str(text, str(file))


def tokenizer_from_str(text: str, source: str) -> BpeTokenizer:
    """A tokenizer from the JSON text of tokenizer.json; `source` names it in errors."""
    tk = _tokenizers()
    try:
        backend = tk.Tokenizer.from_str(text)
    except Exception as error:  # the Rust library raises plain Exception for any parse failure
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FbtError(f"{source} is not a valid tokenizer file: {first}") from None
    return BpeTokenizer(backend, source)
