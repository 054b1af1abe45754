"""Data for the four tasks: byte corpora (`text`), BPE subwords of a corpus (`lm`) and their tokenizer, the
code-execution generator and loader (`code-exec`), parallel corpora (`translation`), and segment streams.

The stream tasks' loaders return aligned int64 inputs (N,) and targets (N,), which `SegmentStream` batches;
translation reads sentence pairs and batches them by length in `TranslationStream`.
"""

from fbt.data.code_exec import (
    TOKEN_TO_ID,
    VARIABLE_NAMES,
    VOCAB,
    generate_dataset,
    generate_program,
    load_code_exec_split,
)
from fbt.data.splits import SPLITS
from fbt.data.streams import SegmentStream
from fbt.data.targets import IGNORE_INDEX
from fbt.data.text import load_text_split

__all__ = [
    "IGNORE_INDEX",
    "SPLITS",
    "TOKEN_TO_ID",
    "VARIABLE_NAMES",
    "VOCAB",
    "SegmentStream",
    "generate_dataset",
    "generate_program",
    "load_code_exec_split",
    "load_text_split",
]
