"""The header `fbt train` prints before the first step: what is trained, on what, for how long."""

from __future__ import annotations

import torch

from fbt.formatting import format_count
from fbt.training.trainer import Trainer


def describe(trainer: Trainer) -> str:
    cfg = trainer.config
    parameters = sum(p.numel() for p in trainer.model.parameters())
    train, valid = trainer.stages[-1]
    start = f"resumed at step {trainer.step}" if trainer.step else "new"
    threads = f", {torch.get_num_threads()} threads" if trainer.device.type == "cpu" else ""
    schedule = f"{cfg.optimizer} lr {cfg.lr:g}, warm-up {cfg.warmup}, "
    schedule += f"cosine to 0 at step {cfg.steps}" if cfg.schedule == "cosine" else "then constant"
    schedule += f", clip {cfg.clip:g}" if cfg.clip else ", no clipping"
    budget = f", at most {cfg.time_budget:g} s in this call" if cfg.time_budget else ""
    ranks = trainer.ranks.world
    device = f"{trainer.device}{threads}" + (f", x {ranks} data-parallel ranks (DDP)" if ranks > 1 else "")
    lines = [
        ("run", f"{trainer.run_dir} ({start}, {cfg.steps} steps{budget})"),
        ("model", f"{trainer.model.describe(trainer.model.config)}: {parameters:,} parameters"),
        ("device", device),
        (
            "data",
            f"{cfg.data} ({cfg.task}): {format_count(train.tokens)} train tokens, "
            f"{format_count(valid.tokens)} valid tokens",
        ),
        ("tokens", trainer.task.batching(cfg, train)),
        ("schedule", schedule),
    ]
    if trainer.task.tokenizer is not None:
        origin = cfg.tokenizer or "trained on the train split"
        lines.insert(4, ("tokenizer", f"byte-level BPE, {trainer.task.vocab_size:,} ids ({origin})"))
    options = (
        (cfg.accumulate > 1, f"{cfg.accumulate} micro-batches per rank"),
        (cfg.precision == "bf16", "bf16 autocast"),
        (cfg.compile, "compiled"),
        (cfg.checkpoint_activations, "activation checkpointing"),
    )
    steps_run = [text for chosen, text in options if chosen]
    if steps_run:
        lines.append(("steps", ", ".join(steps_run)))
    if cfg.curriculum:
        lines.append(("curriculum", f"{cfg.curriculum} first, then {cfg.data}"))
    return "\n".join(f"{name:>10}  {text}" for name, text in lines)
