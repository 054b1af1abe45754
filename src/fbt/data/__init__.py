"""Data for both tasks: byte corpora, the code-execution generator and loader, and segment streams.

Every loader returns aligned int64 inputs (N,) and targets (N,); `SegmentStream` batches them.
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
