"""The Python API behind the CLI: train a run, load it back, evaluate it, sample from it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fbt.data.streams import SegmentStream
from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model
from fbt.sampling import check_sampling, generate
from fbt.tasks import Task
from fbt.training import checkpoint
from fbt.training.config import TrainConfig
from fbt.training.evaluate import evaluate
from fbt.training.trainer import Trainer, load_weights


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FbtError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FbtError("--device cuda was asked for but CUDA is not available")
    return device


def run_config_dict(model_config: ModelConfig, train_config: TrainConfig) -> dict:
    return {"model": model_config.to_dict(), "train": train_config.to_dict()}


def read_run_config(path: Path) -> tuple[ModelConfig, TrainConfig]:
    """Model and run configuration of a run or checkpoint directory."""
    data = checkpoint.read_json(Path(path) / "config.json")
    if "model" not in data or "train" not in data:
        raise FbtError(f"{path}/config.json is corrupt: expected 'model' and 'train' entries")
    return ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data["train"])


def load_stage(task: Task, data: str, config: TrainConfig) -> tuple[SegmentStream, SegmentStream]:
    """Train and valid streams of one dataset."""
    streams = [
        SegmentStream(*task.load_split(data, split), config.batch, config.segment) for split in ("train", "valid")
    ]
    return streams[0], streams[1]


def make_trainer(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out: str | Path,
    device: torch.device,
    resume: bool = False,
) -> Trainer:
    """A trainer for a new run in `out` (which must not hold a run) or, with resume, the run saved there."""
    out = Path(out)
    if resume:
        model_config, saved_train = read_run_config(out)
        # A resumed run may only be extended: a longer step count or time budget.
        train_config = TrainConfig.from_dict(
            {**saved_train.to_dict(), "steps": train_config.steps, "time_budget": train_config.time_budget}
        )
    elif (out / "checkpoints").exists():
        raise FbtError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    task = Task(train_config.task)
    if model_config.vocab_size != task.vocab_size:
        model_config = ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": task.vocab_size})
    stages = [load_stage(task, data, train_config) for data in train_config.stages]
    torch.manual_seed(train_config.seed)
    model = build_model(model_config).to(device)
    out.mkdir(parents=True, exist_ok=True)
    config = run_config_dict(model_config, train_config)
    checkpoint.write_json_atomic(out / "config.json", config)
    trainer = Trainer(model, train_config, task, stages, out, config, device)
    if resume:
        trainer.resume()
    return trainer


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or resume) a run in `out`; returns its final metrics."""
    trainer = make_trainer(model_config, train_config, out, resolve_device(device), resume)
    return trainer.fit(progress=progress)


def load_run(path: str | Path, device: str = "auto") -> tuple[nn.Module, Task, ModelConfig, TrainConfig]:
    """The model of a run's latest checkpoint (or of a checkpoint directory), in eval mode."""
    directory = checkpoint.find_checkpoint(Path(path))
    model_config, train_config = read_run_config(directory)
    model = build_model(model_config).to(resolve_device(device))
    load_weights(model, directory)
    return model.eval(), Task(train_config.task), model_config, train_config


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
    inputs, targets = task.load_split(data or train_config.data, split)
    stream = SegmentStream(inputs, targets, batch or train_config.batch, segment or train_config.segment)
    target_device = next(model.parameters()).device
    return evaluate(model, stream, task, target_device, progress=progress)


def generate_from_run(
    path: str | Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    device: str = "auto",
) -> str:
    """Text continuing `prompt` (text runs) or the prompt program with the model's answers (code-exec runs)."""
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    model, task, _, _ = load_run(path, device)
    target_device = next(model.parameters()).device
    ids = task.encode(prompt)
    if not ids:
        raise FbtError("the prompt is empty")
    prompt_tensor = torch.tensor([ids], device=target_device)
    if task.name == "code-exec":
        return answer_program(model, task, prompt_tensor)
    generator = torch.Generator(device=target_device).manual_seed(seed)
    new = generate(model, prompt_tensor, max_new_tokens, temperature, top_k, top_p, generator)
    return task.decode(new[0].tolist())


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
