"""Data for the four tasks: byte corpora (`text`), BPE subwords of a corpus (`lm`) and their tokenizer, the
code-execution generator and loader (`code-exec`), parallel corpora (`translation`), and segment streams.

The stream tasks' loaders return aligned int64 inputs (N,) and targets (N,), which `SegmentStream` batches;
translation reads sentence pairs and batches them by length in `TranslationStream`. Names are imported on first
use, so that what parsers read (`fbt.data.splits`, the code-exec grammar) does not load torch.
"""

import importlib

_HOMES = {
    "TOKEN_TO_ID": "code_exec",
    "VARIABLE_NAMES": "code_exec",
    "VOCAB": "code_exec",
    "generate_dataset": "code_exec",
    "generate_program": "code_exec",
    "load_code_exec_split": "code_exec",
    "SPLITS": "splits",
    "SegmentStream": "streams",
    "IGNORE_INDEX": "targets",
    "load_text_split": "text",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"fbt.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'fbt.data' has no attribute {name!r}")


__all__ = sorted(_HOMES)
