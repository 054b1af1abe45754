"""The Python API behind the CLI: train a run, load it back, evaluate it, sample from it."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from fbt import runlock
from fbt.checkpoint import find_checkpoint, has_checkpoint
from fbt.data.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer
from fbt.device import resolve_device
from fbt.errors import FbtError, warn
from fbt.models import ModelConfig, build_model
from fbt.models.config import kv_choice
from fbt.rundir import (
    CHECKPOINTS,
    CONFIG,
    METRICS,
    ORIGINAL_CONFIG,
    RESUME_INFO,
    SUMMARY,
    load_weights,
    read_json,
    record_evaluation,
    write_json_atomic,
)
from fbt.sampling import check_sampling
from fbt.tasks import EvalSettings, SamplingSettings, Task, task_class
from fbt.tasks.translation import TranslationTask
from fbt.training.config import TrainConfig
from fbt.training.describe import describe
from fbt.training.distributed import Ranks
from fbt.training.evaluate import evaluate
from fbt.training.trainer import Trainer
from fbt.translate import translate_texts

# What a resumed run may change: how far it trains, where its data is, and how steps are computed.
SESSION_SETTINGS = ("accumulate", "precision", "compile", "checkpoint_activations", "tensorboard")
RESUME_CHANGES = ("steps", "time_budget", "data", *SESSION_SETTINGS)


def run_config_dict(model_config: ModelConfig, train_config: TrainConfig) -> dict:
    return {"model": model_config.to_dict(), "train": train_config.to_dict()}


def read_run_config(path: Path) -> tuple[ModelConfig, TrainConfig]:
    """Model and run configuration of a run or checkpoint directory."""
    data = read_json(Path(path) / CONFIG)
    if "model" not in data or "train" not in data:
        raise FbtError(f"{path}/{CONFIG} is corrupt: expected 'model' and 'train' entries")
    return ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data["train"])


def run_task(config: TrainConfig, run_dir: Path) -> Task:
    """The run's task; a tokenizing task gets the run's own tokenizer.json, else the one of
    --tokenizer, else one trained on the train split."""
    task = task_class(config.task)
    if not task.needs_tokenizer:
        return task()
    saved = Path(run_dir) / TOKENIZER_FILE
    if saved.is_file():
        return task(load_tokenizer(saved))
    if config.tokenizer:
        return task(load_tokenizer(config.tokenizer))
    return task(train_tokenizer(task.training_text(config), config.tokenizer_vocab))


def resolve_paths(config: TrainConfig) -> TrainConfig:
    """The run's data paths made absolute, so it evaluates and resumes from any working directory."""

    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if path else ""

    curriculum = ",".join(absolute(stage) for stage in config.stages[:-1])
    return dataclasses.replace(
        config,
        data=absolute(config.data),
        curriculum=curriculum,
        target_data=absolute(config.target_data),
        tokenizer=absolute(config.tokenizer),
    )


def check_data_exists(config: TrainConfig) -> None:
    for stage in config.stages:
        if stage and not Path(stage).exists():
            raise FbtError(f"the run's data {stage} does not exist (moved?); pass --data PATH to point the run at it")


def build_trainer(model_config: ModelConfig, train_config: TrainConfig, out: Path, device: torch.device) -> Trainer:
    task_class(train_config.task).check_model(model_config, train_config)
    ranks = Ranks.current()
    if ranks.main:  # rank 0 trains the tokenizer if needed and saves it; the other ranks then read it
        task = run_task(train_config, out)
        if task.tokenizer is not None:
            out.mkdir(parents=True, exist_ok=True)
            task.tokenizer.save(out)
    ranks.barrier()
    if not ranks.main:
        task = run_task(train_config, out)
    if model_config.vocab_size != task.vocab_size:
        model_config = ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": task.vocab_size})
    stages = [tuple(task.streams(train_config, data, ("train", "valid"))) for data in train_config.stages]
    torch.manual_seed(train_config.seed)
    model = build_model(model_config).to(device)
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(model, train_config, task, stages, out, run_config_dict(model_config, train_config), device)


def make_trainer(
    model_config: ModelConfig, train_config: TrainConfig, out: str | Path, device: torch.device
) -> Trainer:
    """A trainer for a new run in `out`, which must not hold a resumable run."""
    out = Path(out)
    if has_checkpoint(out):
        raise FbtError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if train_config.warmup >= train_config.steps:
        warn(
            f"warm-up ({train_config.warmup} steps) is not shorter than the run ({train_config.steps} steps): "
            "the learning rate never reaches its peak"
        )
    ranks = Ranks.current()
    if ranks.main:  # a start that stopped before its first checkpoint leaves files behind: begin them anew
        (out / TOKENIZER_FILE).unlink(missing_ok=True)
    ranks.barrier()
    trainer = build_trainer(model_config, resolve_paths(train_config), out, device)
    trainer.log.reset()
    if ranks.main:
        for stale in (ORIGINAL_CONFIG, SUMMARY):
            (out / stale).unlink(missing_ok=True)
        write_json_atomic(out / CONFIG, trainer.run_config)
    ranks.barrier()
    return trainer


class NothingToDo(FbtError):
    """A resumed run has already trained as far as asked."""


def unchangeable(changes: dict, saved: dict) -> list[str]:
    """The requested settings (config field -> value) that differ from a run's and that a resume cannot change."""
    return [name for name, value in changes.items() if name not in RESUME_CHANGES and value != saved.get(name, value)]


def conflicting_settings(changes: dict, saved: dict) -> list[str]:
    """`--flag value (the run has X)` for every requested setting that a resumed run cannot change."""
    conflicts = []
    for name in unchangeable(changes, saved):
        if name == "shared_kv":  # the flag is --kv shared|per-layer
            conflicts.append(f"--kv {kv_choice(changes[name])} (the run has {kv_choice(saved[name])})")
        else:
            conflicts.append(f"--{name.replace('_', '-')} {changes[name]} (the run has {saved[name]})")
    return conflicts


def resume_trainer(out: str | Path, device: torch.device, changes: dict | None = None) -> Trainer:
    """The trainer of the run in `out`, at its latest checkpoint. `changes` (config field -> value) may extend
    `steps`, set this call's `time_budget` and repoint `data` to an equal-sized copy; any other setting must
    equal the run's. A changed config is written to config.json, the first one kept as config.original.json."""
    out, changes = Path(out), dict(changes or {})
    if not (out / CONFIG).is_file():
        raise FbtError(f"no run to resume in {out}: expected {CONFIG} written by `fbt train`")
    if not has_checkpoint(out):
        raise FbtError(
            f"{out} holds no checkpoint to resume (it stopped before its first save); start it again without --resume"
        )
    model_config, saved = read_run_config(out)
    conflicts = conflicting_settings(changes, {**model_config.to_dict(), **saved.to_dict()})
    if conflicts:
        raise FbtError(
            f"a resumed run keeps its settings, but these differ: {'; '.join(conflicts)}. Start a new "
            "run (another --out) to change them"
        )
    done = int(read_json(find_checkpoint(out) / RESUME_INFO).get("step", 0))
    steps = changes.get("steps") or saved.steps
    if steps < done:
        raise FbtError(
            f"{out} is already at step {done}; --steps {steps} would not train (pass --steps > {done} to extend it)"
        )
    if steps == done:
        raise NothingToDo(f"{out} is complete at step {done}; pass --steps N > {done} to train it further")
    if steps < saved.steps and Ranks.current().main:
        schedule = ", and its learning-rate schedule now ends there" if saved.schedule != "constant" else ""
        warn(f"--steps {steps} ends {out} before its planned {saved.steps} steps{schedule}")
    plan = dataclasses.replace(
        saved,
        steps=steps,
        data=str(Path(changes["data"]).resolve()) if changes.get("data") else saved.data,
        **{name: changes[name] for name in SESSION_SETTINGS if name in changes},
    )
    check_data_exists(plan)
    if plan != saved and Ranks.current().main:
        if not (out / ORIGINAL_CONFIG).exists():
            shutil.copyfile(out / CONFIG, out / ORIGINAL_CONFIG)
        write_json_atomic(out / CONFIG, run_config_dict(model_config, plan))
    session = dataclasses.replace(plan, time_budget=changes.get("time_budget") or 0.0)
    trainer = build_trainer(model_config, session, out, device)
    trainer.restore_checkpoint()
    trainer.ranks.barrier()  # rank 0 has rewritten config.json and the log
    return trainer


# What `train` does when `out` already holds a run.
EXISTS = ("error", "resume", "overwrite")


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out: str | Path,
    device: str = "auto",
    progress: bool = True,
    exists: str = "error",
) -> dict:
    """Train a new run in `out`; returns its final metrics (also written to out/summary.json).

    When `out` already holds a run, `exists` decides: "error" (an FbtError), "resume" (continue it, as `resume`
    does; the configs must be the run's, but `steps` may extend it and `data` point to a moved copy), or
    "overwrite" (delete the run's files, then start anew)."""
    if exists not in EXISTS:
        raise FbtError(f"exists must be one of {', '.join(map(repr, EXISTS))}, got {exists!r}")
    out = Path(out)
    with runlock.hold(out, Ranks.current().main):
        if has_checkpoint(out):
            if exists == "error":
                raise FbtError(
                    f"{out} already holds a run; pass exists='resume' to continue it or exists='overwrite' to "
                    "replace it, or choose another out"
                )
            if exists == "resume":
                changes = settings_to_resume(out, model_config, train_config)
                return fit(resume_trainer(out, resolve_device(device), changes), progress)
            remove_run(out)
        return fit(make_trainer(model_config, train_config, out, resolve_device(device)), progress)


def settings_to_resume(out: Path, model_config: ModelConfig, train_config: TrainConfig) -> dict:
    """The settings `train(..., exists="resume")` passes on: its steps and data; any other field must be the run's
    (the vocabulary is the task's, whatever the given config says)."""
    saved_model, saved_train = read_run_config(out)
    saved = {**saved_model.to_dict(), **saved_train.to_dict()}
    given = {**model_config.to_dict(), **train_config.to_dict()}
    given.pop("vocab_size")
    differ = [f"{name}={given[name]!r} (the run has {saved[name]!r})" for name in unchangeable(given, saved)]
    if differ:
        raise FbtError(f"{out} holds a run with other settings: {'; '.join(differ)}; use exists='overwrite'")
    return {"steps": train_config.steps, "data": train_config.data}


def remove_run(out: Path) -> None:
    """Delete what training wrote in `out` (checkpoints, configs, logs, summary, tokenizer, TensorBoard events);
    anything else there is kept."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for name in (CONFIG, ORIGINAL_CONFIG, METRICS, SUMMARY, TOKENIZER_FILE):
        (out / name).unlink(missing_ok=True)
    for events in out.glob("events.out.tfevents.*"):
        events.unlink()


def resume(out: str | Path, device: str = "auto", progress: bool = True, **changes: object) -> dict:
    """Continue the run in `out` from its latest checkpoint (`steps=N` extends it; see resume_trainer)."""
    with runlock.hold(out, Ranks.current().main):
        return fit(resume_trainer(out, resolve_device(device), changes), progress)


def fit(trainer: Trainer, progress: bool = True) -> dict:
    """Train with a header of what is trained (on stderr) and a progress bar, or silently."""
    if progress and trainer.ranks.main:
        print(describe(trainer), file=sys.stderr)
    return trainer.fit(progress=progress)


def load_run(path: str | Path, device: str = "auto") -> tuple[nn.Module, Task, ModelConfig, TrainConfig]:
    """The model of a run's latest checkpoint (or of a checkpoint directory), in eval mode."""
    directory = find_checkpoint(Path(path))
    model_config, train_config = read_run_config(directory)
    model = build_model(model_config).to(resolve_device(device))
    load_weights(model, directory)
    return model.eval(), checkpoint_task(directory, train_config), model_config, train_config


def checkpoint_task(directory: Path, train_config: TrainConfig) -> Task:
    """The task of a checkpoint, with the tokenizer saved beside its weights (or in its run directory)."""
    task = task_class(train_config.task)
    if not task.needs_tokenizer:
        return task()
    for place in (directory, directory.parent.parent):
        if (place / TOKENIZER_FILE).is_file():
            return task(load_tokenizer(place / TOKENIZER_FILE))
    raise FbtError(f"{directory} has no {TOKENIZER_FILE}: the run's tokenizer is missing")


def evaluate_run(
    path: str | Path,
    split: str = "test",
    data: str | None = None,
    batch: int | None = None,
    segment: int | None = None,
    device: str = "auto",
    progress: bool = False,
    beam: int = 1,
    length_penalty: float = 1.0,
    outputs: str | None = None,
    breakdown: bool = False,
) -> dict:
    """The run's task scores `split`: a full pass with state carried (loss, accuracy and, for text, bits per
    byte); translation adds BLEU and chrF of decoding with `beam` and `length_penalty`, and writes the decoded
    split to `outputs` when given; `breakdown` adds the task's accuracy by feature of the examples
    (Task.breakdown). An evaluation of the run's own data is recorded in the run (evaluations.json)."""
    model, task, _, train_config = load_run(path, device)
    if outputs and not task.decodes:
        raise FbtError(f"outputs are decoded translations; a {task.name} run decodes none")
    own_data = not data or Path(data).resolve() == Path(train_config.data).resolve()
    if not data:
        check_data_exists(train_config)
    data = data or train_config.data
    settings = EvalSettings(batch, segment, beam, length_penalty, progress, outputs)
    # First, so that a task without one says so before the pass.
    by_feature = task.breakdown(model, train_config, data, split, settings) if breakdown else {}
    (stream,) = task.streams(train_config, data, (split,), batch, segment, whole_documents=True)
    metrics = evaluate(model, stream, task, next(model.parameters()).device, progress=progress)
    result = {**metrics, **task.decoded_scores(model, train_config, data, split, settings), **by_feature}
    if own_data:  # `fbt runs` shows the test figure beside the run's validation
        record_evaluation(find_checkpoint(Path(path)), split, result)
    return result


def generate_from_run(
    path: str | Path,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    device: str = "auto",
) -> str:
    """What the run's task generates from `prompt`: for text, the prompt followed by its sampled continuation (an
    empty prompt samples unconditionally, starting after a newline); for code-exec, the prompt program with the
    model's answer at every print."""
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    model, task, _, _ = load_run(path, device)
    return task.generate(model, prompt, SamplingSettings(max_new_tokens, temperature, top_k, top_p, seed))


def translate_run(
    path: str,
    texts: list[str],
    beam: int = 1,
    length_penalty: float = 1.0,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = False,
) -> list[str]:
    """Translations of `texts` by the latest checkpoint of a translation run (or a checkpoint directory)."""
    model, task, _, _ = load_run(path, device)
    if not isinstance(task, TranslationTask):
        raise FbtError(f"{path} is a {task.name} run; fbt translate needs a translation run")
    with torch.no_grad():
        return translate_texts(model, task.tokenizer, texts, beam, length_penalty, batch_size, progress)
