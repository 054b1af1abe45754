"""Run configuration: data, batching, optimiser, schedule and bookkeeping (the model has its own config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fbt.errors import FbtError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    task: str = "text"  # "text" or "code-exec"
    data: str = ""  # a file (text) or a dataset directory (code-exec)
    batch: int = 32  # B parallel contiguous streams
    segment: int = 64  # T tokens per segment; state is carried (detached) between segments
    steps: int = 1000  # optimiser updates
    time_budget: float = 0.0  # seconds; stop early when spent (0: no limit)
    optimizer: str = "adam"  # "adam" or "adamw"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay (adamw only)
    warmup: int = 100  # linear warm-up steps
    schedule: str = "constant"  # after warm-up: "constant" or "cosine" decay to zero at `steps`
    clip: float = 1.0  # gradient norm clipping (0: off)
    seed: int = 0  # model init, dropout and data order
    log_every: int = 10  # steps between metric rows
    eval_every: int = 200  # steps between validation passes (0: only at the end)
    eval_tokens: int = 65536  # tokens of the valid split per periodic evaluation (0: the whole split)
    save_every: int = 500  # steps between checkpoints (a final one is always written)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("batch", "segment", "steps", "log_every", "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FbtError(f"{name} must be a positive integer, got {value!r}")
        for name in ("eval_every", "eval_tokens", "warmup"):
            if getattr(self, name) < 0:
                raise FbtError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise FbtError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise FbtError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise FbtError(f"lr must be positive, got {self.lr}")
        if self.clip < 0 or self.time_budget < 0 or self.weight_decay < 0:
            raise FbtError("clip, time_budget and weight_decay must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FbtError(f"unknown run config keys: {', '.join(unknown)}")
        return cls(**data)
