"""Checkpoints that load without executing code and survive a kill, or a full disk, at any moment.

Layout of a run directory (file names in rundir.py):
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
`latest`; an interrupted or failed save (a kill, a full disk) removes the temporary directory and leaves the
previous checkpoint as the latest one. A complete checkpoint is never replaced: training is deterministic, so
a second save of the same step (a resumed run that trained no further) keeps the first. Loading falls back to
the newest complete checkpoint if `latest` names one that is missing or incomplete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError

from fbt import rundir
from fbt.errors import FbtError
from fbt.rundir import CHECKPOINTS, CONFIG, LATEST, RESUME_INFO, RESUME_TENSORS, WEIGHTS

CHECKPOINT_FILES = (WEIGHTS, RESUME_TENSORS, RESUME_INFO, CONFIG)


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
    `weights` come from rundir.finite_weights; `files` (name -> text) are written beside them."""
    root = Path(run_dir) / CHECKPOINTS
    name = f"step-{step:08d}"
    final = root / name
    if is_complete(final):
        _point_latest(root, name)
        return final
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        rundir.write_tensors(staging / WEIGHTS, weights)
        rundir.write_tensors(staging / RESUME_TENSORS, resume_tensors)
        rundir.write_json(staging / RESUME_INFO, resume_info)
        rundir.write_json(staging / CONFIG, config)
        for file_name, text in (files or {}).items():
            rundir.write_text(staging / file_name, text)
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover, never loaded
        os.rename(staging, final)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError | SafetensorError):
            raise rundir.write_error(final, error) from None
        raise
    _point_latest(root, name)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _point_latest(root: Path, name: str) -> None:
    rundir.write_text_atomic(root / LATEST, name + "\n")


def find_checkpoint(path: Path) -> Path:
    """A checkpoint directory from a run directory (its latest checkpoint) or a checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise FbtError(f"no such run or checkpoint directory: {path}")
    if (path / WEIGHTS).exists():
        return path
    root = path / CHECKPOINTS
    latest = root / LATEST
    named = root / latest.read_text().strip() if latest.exists() else None
    if named is not None and is_complete(named):
        return named
    # `latest` is missing or names an incomplete checkpoint (a kill mid-save): the newest complete one.
    complete = complete_checkpoints(path)
    if complete:
        return complete[-1]
    if named is not None:
        raise FbtError(f"{latest} names a missing checkpoint {named.name} and no other checkpoint is complete")
    raise FbtError(f"{path} holds no checkpoint (expected {latest})")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """A run's complete checkpoint directories, oldest first."""
    return [path for path in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*")) if is_complete(path)]


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run directory holds at least one complete checkpoint (a run that can be resumed)."""
    return bool(complete_checkpoints(run_dir))


def is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in CHECKPOINT_FILES)
