"""fbt directories <-> transformers directories, the weights unchanged (`model.` prefixes our state_dict keys).

An fbt directory is a run directory (`fbt train`), a checkpoint, or a `save_pretrained` directory; the
transformers one holds config.json (FbtConfig), model.safetensors and the run's tokenizer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from fbt.checkpoint import find_checkpoint
from fbt.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from fbt.errors import FbtError, warn
from fbt.hf.modeling import MODEL_TYPE, FbtConfig, FbtForCausalLM, model_config_of
from fbt.hf.tokenization import BYTES, FbtByteTokenizer
from fbt.models import build_model, from_pretrained
from fbt.rundir import CHECKPOINTS, CONFIG, WEIGHTS, load_tensors, read_json
from fbt.tasks import task_class_or_base

PREFIX = "model."  # FbtForCausalLM.model


def export_hf(fbt_path: str | Path, out_dir: str | Path) -> Path:
    """Write the language model of `fbt_path` and its tokenizer as a transformers directory `out_dir`."""
    fbt_path, out_dir = Path(fbt_path), Path(out_dir)
    model = from_pretrained(fbt_path)  # one-line errors for a missing or corrupt directory
    if model.translates:
        raise FbtError(f"{fbt_path} holds a {model.config.model} translation model; only language models export")
    tokenizer = run_tokenizer(fbt_path, model.config.vocab_size)
    wrapped = FbtForCausalLM(FbtConfig.from_model_config(model.config))
    wrapped.model.load_state_dict(model.state_dict())
    wrapped.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def run_tokenizer(fbt_path: Path, vocab_size: int) -> PreTrainedTokenizerBase | None:
    """The tokenizer of the run's task (its config.json's train.task); a pretrained directory names no task,
    so its tokenizer.json or, with 256 ids, bytes. None (with a warning) when neither says."""
    task = read_json(fbt_path / CONFIG).get("train", {}).get("task")
    places = [fbt_path, find_checkpoint(fbt_path)] if (fbt_path / CHECKPOINTS).is_dir() else [fbt_path]
    tokenizer_file = next((place / TOKENIZER_FILE for place in places if (place / TOKENIZER_FILE).is_file()), None)
    tokenizer = task_class_or_base(task or "").transformers_tokenizer(tokenizer_file)
    if tokenizer is None and task is None and vocab_size == BYTES:
        tokenizer = FbtByteTokenizer()
    if tokenizer is None:
        warn(f"{fbt_path} names no tokenizer (task {task}); the export holds the model alone")
        return None
    if len(tokenizer) != vocab_size:
        raise FbtError(f"the tokenizer of {fbt_path} has {len(tokenizer)} ids but the model reads {vocab_size}")
    return tokenizer


def load_hf_as_fbt(hf_dir: str | Path) -> nn.Module:
    """Our model (the family's own nn.Module, eval mode) of a transformers directory written by export_hf or
    FbtForCausalLM.save_pretrained (a Trainer checkpoint too); reads JSON and safetensors only."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FbtError(f"no such transformers directory: {hf_dir}")
    data = read_json(hf_dir / CONFIG)
    if data.get("model_type") != MODEL_TYPE:
        raise FbtError(f"{hf_dir} holds a {data.get('model_type')!r} model, not an fbt one (model_type 'fbt')")
    try:
        config = model_config_of(data)
    except (TypeError, ValueError) as error:
        raise FbtError(f"{hf_dir / CONFIG} is corrupt: {error}") from None
    tensors = load_tensors(hf_dir / WEIGHTS)
    model = build_model(config)
    weights = {name.removeprefix(PREFIX): tensor for name, tensor in tensors.items() if name.startswith(PREFIX)}
    missing = sorted(set(model.state_dict()) - set(weights))
    unexpected = sorted(set(tensors) - {PREFIX + name for name in model.state_dict()})
    if missing or unexpected:
        names = ", ".join([f"missing {PREFIX}{name}" for name in missing] + [f"unexpected {n}" for n in unexpected])
        raise FbtError(f"{hf_dir / WEIGHTS} does not fit its config: {names}")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise FbtError(f"{hf_dir / WEIGHTS} does not fit its config: {str(error).strip().splitlines()[-1]}") from None
    return model.eval()


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the model of a transformers directory as an fbt pretrained directory (and its tokenizer.json)."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    load_hf_as_fbt(hf_dir).save_pretrained(out_dir)
    if (hf_dir / TOKENIZER_FILE).is_file() and is_fbt_bpe(hf_dir / TOKENIZER_FILE):
        shutil.copyfile(hf_dir / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    return out_dir


def is_fbt_bpe(tokenizer_file: Path) -> bool:
    """Whether fbt reads the file as its BPE (a code-exec export's word-level tokenizer.json is not one)."""
    try:
        load_tokenizer(tokenizer_file)
    except FbtError:
        return False
    return True
