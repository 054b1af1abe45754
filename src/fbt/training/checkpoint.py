"""Checkpoints that load without executing code and survive a kill at any moment.

Layout of a run directory:
    config.json                      model and run configuration (JSON)
    metrics.csv                      one row per logged step or evaluation
    checkpoints/latest               name of the newest complete checkpoint, replaced atomically
    checkpoints/step-00001000/
        config.json                  same as above, so a checkpoint directory is self-contained
        model.safetensors            weights
        resume.safetensors           optimiser moments, RNG state, the model's carried stream state
        resume.json                  step, data position, optimiser hyper-parameters, counters
        tokenizer.json               the run's BPE tokenizer (tasks lm and translation)

A checkpoint is written into a temporary directory, flushed, renamed into place, and only then named in
`latest`; an interrupted save leaves the previous checkpoint as the latest one. A complete checkpoint is never
replaced: training is deterministic, so a second save of the same step (a resumed run that trained no further)
keeps the first. Loading falls back to the newest complete checkpoint if `latest` names one that is missing or
incomplete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fbt.errors import FbtError

LATEST = "latest"


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file written whole or not at all: into a temporary file, flushed, renamed into place."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        save_file(_contiguous(tensors), temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FbtError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FbtError(f"{path} is corrupt: {error}") from None
    if not isinstance(data, dict):
        raise FbtError(f"{path} is corrupt: expected a JSON object")
    return data


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors stores dense row-major data; clone() also unshares storage between entries.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: dict,
    weights: dict,
    resume_tensors: dict,
    resume_info: dict,
    keep: int = 2,
    files: dict[str, str] | None = None,
) -> Path:
    """Write checkpoint `step` atomically and keep the newest `keep` checkpoints; return its directory.
    `files` (name -> text) are written beside the weights."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    if is_complete(root / name):
        _point_latest(root, name)
        return root / name
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save_file(_contiguous(weights), staging / "model.safetensors")
        save_file(_contiguous(resume_tensors), staging / "resume.safetensors")
        write_json_atomic(staging / "resume.json", resume_info)
        write_json_atomic(staging / "config.json", config)
        for file_name, text in (files or {}).items():
            (staging / file_name).write_text(text, encoding="utf-8")
        for file in staging.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        final = root / name
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover, never loaded
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_latest(root, name)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _point_latest(root: Path, name: str) -> None:
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / LATEST)


def find_checkpoint(path: Path) -> Path:
    """A checkpoint directory from a run directory (its latest checkpoint) or a checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise FbtError(f"no such run or checkpoint directory: {path}")
    if (path / "model.safetensors").exists():
        return path
    root = path / "checkpoints"
    latest = root / LATEST
    named = root / latest.read_text().strip() if latest.exists() else None
    if named is not None and is_complete(named):
        return named
    # `latest` is missing or names an incomplete checkpoint (a kill mid-save): the newest complete one.
    for candidate in sorted(root.glob("step-*"), reverse=True):
        if is_complete(candidate):
            return candidate
    if named is not None:
        raise FbtError(f"{latest} names a missing checkpoint {named.name} and no other checkpoint is complete")
    raise FbtError(f"{path} holds no checkpoint (expected {latest})")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run directory holds at least one complete checkpoint (a run that can be resumed)."""
    return any(is_complete(candidate) for candidate in (Path(run_dir) / "checkpoints").glob("step-*"))


CHECKPOINT_FILES = ("model.safetensors", "resume.safetensors", "resume.json", "config.json")


def is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in CHECKPOINT_FILES)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise FbtError(f"missing file {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise FbtError(f"{path} is corrupt or truncated: {error}") from None
