"""The files of run, checkpoint and pretrained directories: their names, and how each is written and read.

Every file is written whole or not at all (a temporary file, flushed, renamed into place) and read as JSON or
safetensors only, so loading never executes code. Weights holding NaN or infinity are never written. A write
that fails on the disk (full, read-only, gone) is one FbtError naming the file and the cause.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fbt.errors import FbtError, warn

CONFIG = "config.json"  # a run's {"model": ..., "train": ...} (or {"rl": ...}); a pretrained model's ModelConfig
ORIGINAL_CONFIG = "config.original.json"  # the run's first config, kept once a resume changes config.json
METRICS = "metrics.csv"
SUMMARY = "summary.json"  # the end of the latest training call of a run
WEIGHTS = "model.safetensors"
RESUME_TENSORS = "resume.safetensors"  # optimiser moments, RNG state, the model's carried stream state
RESUME_INFO = "resume.json"  # step, data position, optimiser hyper-parameters, counters
GENERATION_CONFIG = "generation_config.json"  # a pretrained model's defaults of `generate`
CHECKPOINTS = "checkpoints"  # a run's checkpoint directories (checkpoint.py)
LATEST = "latest"  # in CHECKPOINTS: the name of the newest complete checkpoint
LOCK = ".lock"  # held by the process training in the run directory (runlock.py)
EVALUATIONS = "evaluations.json"  # {split: the last `fbt eval` of the run's own data, with its checkpoint}


class NonFiniteError(FbtError):
    """Training produced a NaN or infinite loss, gradient or weight."""


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json_text(data))


def write_text_atomic(path: Path, text: str) -> None:
    with staged(Path(path)) as temporary:
        write_text(temporary, text)


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with staged(Path(path)) as temporary:
        write_tensors(temporary, tensors)


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# Written in place and flushed to the disk: for files inside a staging directory (checkpoint.py), which is
# renamed into place whole; anywhere else, the *_atomic writers above.


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, data: dict) -> None:
    write_text(path, json_text(data))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(_contiguous(tensors), str(path))
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors stores dense row-major data; clone() also unshares storage between entries.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed onto it once written; removed if anything fails."""
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(handle)
    except OSError as error:
        raise write_error(path, error) from None
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError | SafetensorError):
            raise write_error(path, error) from None
        raise


def write_error(path: Path, error: OSError | SafetensorError) -> FbtError:
    """One line: which file or checkpoint could not be written, and why (e.g. no space left on the device)."""
    cause = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return FbtError(f"could not write {path}: {cause}")


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


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise FbtError(f"missing file {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise FbtError(f"{path} is corrupt or truncated: {error}") from None


def finite_weights(module: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The module's state_dict to save as `what` ("step 100", "to DIR"): never one holding NaN or infinity."""
    weights = module.state_dict()
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"refusing to save {what}: weight {name} holds NaN or infinite values")
    return weights


def load_weights(model: nn.Module, directory: Path) -> None:
    """The weights of a checkpoint or pretrained directory into `model`, which its config built."""
    path = Path(directory) / WEIGHTS
    try:
        model.load_state_dict(load_tensors(path))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise FbtError(f"{path} does not fit the model config: {first}") from None


def record_evaluation(checkpoint: Path, name: str, result: dict) -> None:
    """Keep `result` (an evaluation of `checkpoint` on the run's own data) as entry `name` of its run's
    evaluations.json, where `fbt runs` and `fbt show` read it. A checkpoint outside a run keeps nothing; a run
    directory that cannot be written (read-only, full) gets a warning, the evaluation is still reported."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name != CHECKPOINTS:
        return
    path = checkpoint.parent.parent / EVALUATIONS
    try:
        known = read_json(path) if path.is_file() else {}
        write_json_atomic(path, {**known, name: {**result, "checkpoint": checkpoint.name}})
    except FbtError as error:
        warn(f"the evaluation was not recorded in the run: {error}")
