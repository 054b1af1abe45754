"""The header `fbt train` prints before the first step: what is trained, on what, for how long."""

from __future__ import annotations

import torch

from fbt.runs import format_count
from fbt.training.trainer import Trainer


def model_line(model: dict) -> str:
    name = model["model"]
    layers = model["layers"]
    shape = f"{name}, {layers} layer{'s' if layers > 1 else ''}, d{model['dim']}"
    if name != "lstm":
        shape += f", {model['heads']} heads, FF{model['ff']}"
    if name in ("feedback", "transformer-xl"):
        shape += f", span {model['span']}"
    if name == "gpt":
        shape += f", context {model['context']}"
    if name == "feedback":
        shape += f", {'shared' if model['shared_kv'] else 'per-layer'} K/V, memory from {model['memory']}"
    return shape


def describe(trainer: Trainer) -> str:
    cfg = trainer.config
    parameters = sum(p.numel() for p in trainer.model.parameters())
    train, valid = trainer.stages[-1]
    tokens_per_step = cfg.batch * cfg.segment
    start = f"resumed at step {trainer.step}" if trainer.step else "new"
    threads = f", {torch.get_num_threads()} threads" if trainer.device.type == "cpu" else ""
    schedule = f"{cfg.optimizer} lr {cfg.lr:g}, warm-up {cfg.warmup}, "
    schedule += f"cosine to 0 at step {cfg.steps}" if cfg.schedule == "cosine" else "then constant"
    schedule += f", clip {cfg.clip:g}" if cfg.clip else ", no clipping"
    budget = f", at most {cfg.time_budget:g} s in this call" if cfg.time_budget else ""
    lines = [
        ("run", f"{trainer.run_dir} ({start}, {cfg.steps} steps{budget})"),
        ("model", f"{model_line(trainer.run_config['model'])}: {parameters:,} parameters"),
        ("device", f"{trainer.device}{threads}"),
        (
            "data",
            f"{cfg.data} ({cfg.task}): {format_count(train.batch * train.length)} train tokens, "
            f"{format_count(valid.batch * valid.length)} valid tokens",
        ),  # fmt: skip
        (
            "tokens",
            f"{cfg.batch} streams x {cfg.segment} = {tokens_per_step:,} per step, "
            f"{format_count(tokens_per_step * cfg.steps)} in all",
        ),  # fmt: skip
        ("schedule", schedule),
    ]
    if cfg.curriculum:
        lines.append(("curriculum", f"{cfg.curriculum} first, then {cfg.data}"))
    return "\n".join(f"{name:>10}  {text}" for name, text in lines)
