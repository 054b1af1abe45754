"""Hugging Face `transformers` for fbt's language models (the `hf` extra): `AutoModelForCausalLM`, `generate()`,
`Trainer`, pipelines.

Importing fbt.hf registers model_type "fbt" with AutoConfig, AutoModelForCausalLM and AutoTokenizer; a saved
directory also loads elsewhere with `trust_remote_code=True` (its shim modules import fbt). `export_hf` and
`load_hf_as_fbt` convert between fbt directories and transformers ones.
"""

from __future__ import annotations

from fbt.errors import FbtError

try:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
except ImportError:
    raise FbtError("the transformers integration needs the `hf` extra: pip install 'fbt[hf]'") from None

from fbt.hf.convert import export_hf, import_hf, load_hf_as_fbt
from fbt.hf.modeling import FbtCache, FbtConfig, FbtForCausalLM
from fbt.hf.tokenization import FbtByteTokenizer

AutoConfig.register(FbtConfig.model_type, FbtConfig, exist_ok=True)
AutoModelForCausalLM.register(FbtConfig, FbtForCausalLM, exist_ok=True)
AutoTokenizer.register(FbtConfig, slow_tokenizer_class=FbtByteTokenizer, exist_ok=True)

__all__ = ["FbtByteTokenizer", "FbtCache", "FbtConfig", "FbtForCausalLM", "export_hf", "import_hf", "load_hf_as_fbt"]
