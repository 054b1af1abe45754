"""The modules a saved directory carries so that `trust_remote_code=True` finds our classes (config.json's
auto_map names them); each imports from fbt, which must be installed where the directory is loaded."""

from __future__ import annotations

from pathlib import Path

from fbt.rundir import write_text_atomic

MODEL_SHIMS = {
    "configuration_fbt.py": "from fbt.hf import FbtConfig\n\n__all__ = ['FbtConfig']\n",
    "modeling_fbt.py": "from fbt.hf import FbtForCausalLM\n\n__all__ = ['FbtForCausalLM']\n",
}
TOKENIZER_SHIMS = {"tokenization_fbt.py": "from fbt.hf import FbtByteTokenizer\n\n__all__ = ['FbtByteTokenizer']\n"}


def write_shims(directory: str | Path, shims: dict[str, str]) -> None:
    for name, text in shims.items():
        write_text_atomic(Path(directory) / name, text)
