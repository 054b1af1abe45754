"""The Python API behind the CLI: train a run, load it back, evaluate it, sample from it."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from fbt import runlock
from fbt.checkpoint import find_checkpoint, has_checkpoint
from fbt.data.text import read_text_bytes, subword_split_text
from fbt.data.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer
from fbt.data.translation import TranslationStream, encode_pairs, load_split_pairs, read_corpus
from fbt.device import resolve_device
from fbt.errors import FbtError, warn
from fbt.models import ModelConfig, build_model, family_names, model_class
from fbt.models.config import kv_choice
from fbt.rundir import CONFIG, ORIGINAL_CONFIG, RESUME_INFO, SUMMARY, load_weights, read_json, write_json_atomic
from fbt.sampling import check_sampling, generate
from fbt.tasks import TOKENIZED, Task
from fbt.training.config import TrainConfig
from fbt.training.describe import describe
from fbt.training.distributed import Ranks
from fbt.training.evaluate import evaluate
from fbt.training.trainer import Trainer

UNCONDITIONAL_START = "\n"  # byte-level text has no start token: unconditional samples follow a line break
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


def load_streams(task: Task, config: TrainConfig, data: str, splits: tuple[str, ...], batch: int | None = None,
                 segment: int | None = None) -> list:  # fmt: skip
    """A stream per split of one dataset: segments of a token stream, or batches of sentence pairs."""
    if task.name != "translation":
        return [task.segment_stream(data, split, batch or config.batch, segment or config.segment,
                                    config.target_column) for split in splits]  # fmt: skip
    corpus = read_corpus(data, config.source_column, config.target_column, config.target_data, config.group_column)
    streams = []
    for split in splits:
        sources, targets = encode_pairs(task.tokenizer, *load_split_pairs(corpus, split))
        streams.append(TranslationStream(sources, targets, config.batch_tokens, config.max_length, config.seed,
                                         shuffle=split == "train"))  # fmt: skip
    return streams


def training_text(config: TrainConfig) -> Iterator[str]:
    """What an automatically trained tokenizer learns from: the train split of the run's data."""
    if config.task == "lm":
        yield from subword_split_text(read_text_bytes(config.data, config.target_column), "train").splitlines(True)
        return
    corpus = read_corpus(config.data, config.source_column, config.target_column, config.target_data,
                         config.group_column)  # fmt: skip
    sources, targets = load_split_pairs(corpus, "train")
    yield from sources
    yield from targets


def run_task(config: TrainConfig, run_dir: Path) -> Task:
    """The run's task; a tokenizing task gets the run's own tokenizer.json, else the one of
    --tokenizer, else one trained on the train split."""
    if config.task not in TOKENIZED:
        return Task(config.task)
    saved = Path(run_dir) / TOKENIZER_FILE
    if saved.is_file():
        return Task(config.task, load_tokenizer(saved))
    if config.tokenizer:
        return Task(config.task, load_tokenizer(config.tokenizer))
    return Task(config.task, train_tokenizer(training_text(config), config.tokenizer_vocab))


def check_model_fits_task(model_config: ModelConfig, train_config: TrainConfig) -> None:
    translation = train_config.task == "translation"
    if translation != model_class(model_config.model).translates:
        names = " or ".join(name for name in family_names() if model_class(name).translates)
        raise FbtError(f"translation trains the {names} model (--model {names}), and {names} only translates: "
                       f"got --task {train_config.task} with --model {model_config.model}")  # fmt: skip
    if translation and model_config.context < train_config.max_length + 1:
        raise FbtError(f"--context {model_config.context} must exceed --max-length {train_config.max_length}: "
                       "a sentence and its </s> or <s> must fit the positions")  # fmt: skip


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
    check_model_fits_task(model_config, train_config)
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
    stages = [tuple(load_streams(task, train_config, data, ("train", "valid"))) for data in train_config.stages]
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
        warn(f"warm-up ({train_config.warmup} steps) is not shorter than the run ({train_config.steps} steps): "
             "the learning rate never reaches its peak")  # fmt: skip
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


def conflicting_settings(changes: dict, saved: dict) -> list[str]:
    """`--flag value (the run has X)` for every requested setting that a resumed run cannot change."""
    conflicts = []
    for name, value in changes.items():
        if name in RESUME_CHANGES or value == saved.get(name, value):
            continue
        if name == "shared_kv":  # the flag is --kv shared|per-layer
            conflicts.append(f"--kv {kv_choice(value)} (the run has {kv_choice(saved[name])})")
        else:
            conflicts.append(f"--{name.replace('_', '-')} {value} (the run has {saved[name]})")
    return conflicts


def resume_trainer(out: str | Path, device: torch.device, changes: dict | None = None) -> Trainer:
    """The trainer of the run in `out`, at its latest checkpoint. `changes` (config field -> value) may extend
    `steps`, set this call's `time_budget` and repoint `data` to an equal-sized copy; any other setting must
    equal the run's. A changed config is written to config.json, the first one kept as config.original.json."""
    out, changes = Path(out), dict(changes or {})
    if not (out / CONFIG).is_file():
        raise FbtError(f"no run to resume in {out}: expected {CONFIG} written by `fbt train`")
    if not has_checkpoint(out):
        raise FbtError(f"{out} holds no checkpoint to resume (it stopped before its first save); start it again "
                       "without --resume")  # fmt: skip
    model_config, saved = read_run_config(out)
    conflicts = conflicting_settings(changes, {**model_config.to_dict(), **saved.to_dict()})
    if conflicts:
        raise FbtError(f"a resumed run keeps its settings, but these differ: {'; '.join(conflicts)}. Start a new "
                       "run (another --out) to change them")  # fmt: skip
    done = int(read_json(find_checkpoint(out) / RESUME_INFO).get("step", 0))
    steps = changes.get("steps") or saved.steps
    if steps < done:
        raise FbtError(f"{out} is already at step {done}; --steps {steps} would not train (pass --steps > {done} "
                       "to extend it)")  # fmt: skip
    if steps == done:
        raise NothingToDo(f"{out} is complete at step {done}; pass --steps N > {done} to train it further")
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
    trainer.resume()
    trainer.ranks.barrier()  # rank 0 has rewritten config.json and the log
    return trainer


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out: str | Path,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Train a new run in `out`; returns its final metrics (also written to out/summary.json)."""
    with runlock.hold(out, Ranks.current().main):
        return fit(make_trainer(model_config, train_config, out, resolve_device(device)), progress)


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


def run_task_name(path: str | Path) -> str:
    """The task of a run or checkpoint directory."""
    return read_run_config(find_checkpoint(Path(path)))[1].task


def checkpoint_task(directory: Path, train_config: TrainConfig) -> Task:
    """The task of a checkpoint, with the tokenizer saved beside its weights (or in its run directory)."""
    if train_config.task not in TOKENIZED:
        return Task(train_config.task)
    for place in (directory, directory.parent.parent):
        if (place / TOKENIZER_FILE).is_file():
            return Task(train_config.task, load_tokenizer(place / TOKENIZER_FILE))
    raise FbtError(f"{directory} has no {TOKENIZER_FILE}: the run's tokenizer is missing")


def evaluate_run(
    path: str | Path,
    split: str = "test",
    data: str | None = None,
    batch: int | None = None,
    segment: int | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """A full pass over `split` with state carried: loss, accuracy and, for text, bits per byte."""
    model, task, _, train_config = load_run(path, device)
    if not data:
        check_data_exists(train_config)
    (stream,) = load_streams(task, train_config, data or train_config.data, (split,), batch, segment)
    target_device = next(model.parameters()).device
    return evaluate(model, stream, task, target_device, progress=progress)


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
    """Text runs: the prompt followed by its sampled continuation (an empty prompt samples unconditionally,
    starting after a newline). Code-exec runs: the prompt program with the model's answer at every print."""
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    model, task, _, _ = load_run(path, device)
    target_device = next(model.parameters()).device
    if task.name == "translation":
        raise FbtError("a translation run translates: use `fbt translate RUN --input FILE`")
    if task.name == "code-exec":
        if not prompt.strip():
            raise FbtError("a code-exec run answers a program: pass one as --prompt, e.g. 'x = 3 ; print x ;'")
        return answer_program(model, task, torch.tensor([task.encode(prompt)], device=target_device))
    context = task.encode(prompt) or task.encode(UNCONDITIONAL_START)
    generator = torch.Generator(device=target_device).manual_seed(seed)
    new = generate(model, torch.tensor([context], device=target_device), max_new_tokens, temperature, top_k, top_p,
                   generator)  # fmt: skip
    return prompt + task.decode(new[0].tolist())


@torch.no_grad()
def answer_program(model: nn.Module, task: Task, program: torch.Tensor) -> str:
    """Code-exec models label positions instead of continuing text: show each print's predicted value."""
    logits, _ = model(program)
    predictions = logits[0].argmax(-1).tolist()
    tokens = task.decode(program[0].tolist()).split()
    shown, in_print = [], False
    for token, predicted in zip(tokens, predictions, strict=True):
        shown.append(token)
        if token == "print":
            in_print = True
        elif token == ";" and in_print:
            shown.append(f"[{task.decode([predicted])}]")
            in_print = False
    return " ".join(shown)
