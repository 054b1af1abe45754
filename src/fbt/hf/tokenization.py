"""Tokenizers transformers can use for our runs: bytes (text), the run's BPE (lm), the code-exec vocabulary."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from fbt.data.tokenizer import SPECIAL_TOKENS, load_tokenizer
from fbt.hf.shims import TOKENIZER_SHIMS, write_shims

BYTES = 256
TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["tokenization_fbt.FbtByteTokenizer", None]}


class FbtByteTokenizer(PreTrainedTokenizer):
    """The 256 byte values of UTF-8 text as ids (id = byte), as the `text` task reads it; no special tokens.

    A token is the byte as one latin-1 character, so the vocabulary needs no file."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, **kwargs):
        kwargs.setdefault("auto_map", TOKENIZER_AUTO_MAP)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return BYTES

    def get_vocab(self) -> dict[str, int]:
        return {chr(byte): byte for byte in range(BYTES)}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(byte) for byte in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        return ord(token)

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return bytes(ord(token) for token in tokens).decode("utf-8", errors="replace")

    def save_pretrained(self, save_directory, *args, **kwargs) -> tuple[str, ...]:
        """transformers' save, and the shim module tokenizer_config.json's auto_map names."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        write_shims(save_directory, TOKENIZER_SHIMS)
        return files

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is the bytes themselves


def bpe_tokenizer(tokenizer_file: str | Path) -> PreTrainedTokenizerFast:
    """The BPE of an `lm` run (tokenizer.json, data/tokenizer.py) with its special tokens named."""
    load_tokenizer(tokenizer_file)  # fbt's checks: one-line errors for a file that is not an fbt tokenizer
    pad, bos, eos = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), pad_token=pad, bos_token=bos, eos_token=eos)


def word_tokenizer(vocabulary: tuple[str, ...]) -> PreTrainedTokenizerFast:
    """Whitespace-separated words, one id each (code-exec's VOCAB); decoding joins them with spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(vocabulary)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend)
