"""How `fbt train`'s flags become a ModelConfig and a TrainConfig: library defaults, then the preset, then the
flags given."""

from __future__ import annotations

import argparse
import dataclasses

from fbt.models.config import ModelConfig, shared_kv_of
from fbt.presets import get_preset
from fbt.tasks import task_of_data
from fbt.training.config import TrainConfig

# Flags that map onto ModelConfig / TrainConfig fields (flag name with dashes -> field name).
MODEL_FLAGS = (
    "model",
    "dim",
    "layers",
    "heads",
    "head_dim",
    "ff",
    "span",
    "context",
    "dropout",
    "memory",
    "memory_layer",
    "init",
    "attend_self",
    "adaptive_span",
    "adaptive_span_ramp",
    "adaptive_span_init",
    "adaptive_span_loss",
    "decoder",
    "encoder_layers",
)
TRAIN_FLAGS = (
    "task",
    "data",
    "batch",
    "segment",
    "steps",
    "time_budget",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup",
    "schedule",
    "decay_steps",
    "clip",
    "seed",
    "log_every",
    "eval_every",
    "eval_tokens",
    "save_every",
    "keep_checkpoints",
    "curriculum",
    "curriculum_steps",
    "curriculum_accuracy",
    "tokenizer",
    "tokenizer_vocab",
    "source_column",
    "target_column",
    "target_data",
    "group_column",
    "max_length",
    "batch_tokens",
    "accumulate",
    "precision",
    "compile",
    "checkpoint_activations",
    "tensorboard",
)
DEFAULTS = {f.name: f.default for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
DEFAULTS["vocab_size"] = ModelConfig.vocab_size  # the model's; the tokenizer's is tokenizer_vocab


def config_help(text: str, name: str) -> str:
    """Help of a flag whose value comes from a preset, else from the config's default."""
    default = DEFAULTS[name]
    shown = "none" if default == "" else default
    return f"{text} (default: the preset's, else {shown})"


def explicit_settings(args: argparse.Namespace) -> dict:
    """Config fields set by flags on the command line (not by a preset or a default)."""
    values = {name: getattr(args, name) for name in (*MODEL_FLAGS, *TRAIN_FLAGS) if getattr(args, name) is not None}
    if args.kv is not None:
        values["shared_kv"] = shared_kv_of(args.kv)
    return values


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, list[str]]:
    """Defaults, then the preset, then explicit flags; and warnings about what was adjusted."""
    model_fields = set(ModelConfig.__dataclass_fields__)
    values: dict = {}
    if args.preset:
        preset = get_preset(args.preset)
        values.update({**preset["model"], **preset["train"]})
    explicit = explicit_settings(args)
    values.update(explicit)
    notes = []
    implied = task_of_data(values["data"]) if "task" not in values and values.get("data") else None
    if implied:
        values["task"] = implied  # the data's form names its task (a code-exec dataset directory)
    steps = values.get("steps", DEFAULTS["steps"])
    warmup = values.get("warmup", DEFAULTS["warmup"])
    if warmup >= steps and "warmup" not in explicit:
        scaled = steps // 10
        notes.append(
            f"warm-up of {warmup} steps is not shorter than --steps {steps}: using {scaled} (10%); pass "
            "--warmup to choose"
        )
        values["warmup"] = scaled
    decay = values.get("decay_steps", DEFAULTS["decay_steps"])
    if decay > steps and "decay_steps" not in explicit:
        notes.append(f"decay of {decay} steps is longer than --steps {steps}: using {steps // 10} (10%)")
        values["decay_steps"] = max(1, steps // 10)
    model_values = {k: v for k, v in values.items() if k in model_fields}
    train_values = {k: v for k, v in values.items() if k not in model_fields}
    return ModelConfig.from_dict(model_values), TrainConfig.from_dict(train_values), notes
