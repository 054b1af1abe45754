"""Run configuration: data, batching, optimiser, schedule and bookkeeping (the model has its own config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fbt.configs import config_from_dict
from fbt.errors import FbtError
from fbt.tasks import task_class_or_base

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "wsd")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    task: str = "text"  # a registered task (fbt.tasks): "text", "code-exec", "lm", "translation", ...
    data: str = ""  # a file (text, lm, translation) or a dataset directory (code-exec)
    # lm and translation: a BPE tokenizer (a directory with tokenizer.json, or the file); empty: one of
    # `tokenizer_vocab` ids is trained on the run's train split. Either way the run keeps a copy.
    tokenizer: str = ""
    tokenizer_vocab: int = 8000
    # A TSV corpus: translation reads source_column -> target_column; text and lm read target_column's lines.
    source_column: str = ""
    target_column: str = ""
    target_data: str = ""  # translation from two aligned text files: `data` holds the sources, this the targets
    group_column: str = ""  # translation: hold out whole groups (e.g. books) for valid and test
    max_length: int = 128  # translation: pairs with a side longer than this many tokens are not trained on
    batch_tokens: int = 4096  # translation: padded tokens per batch (sentences of similar length batched together)
    batch: int = 32  # B parallel contiguous streams
    segment: int = 64  # T tokens per segment; state is carried (detached) between segments
    steps: int = 1000  # optimiser updates
    time_budget: float = 0.0  # seconds; stop early when spent (0: no limit)
    optimizer: str = "adam"  # "adam" or "adamw"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled weight decay (adamw only)
    warmup: int = 100  # linear warm-up steps
    # After warm-up: "constant"; "cosine" decay to zero at `steps`; "wsd" (warm-up, stable, decay) constant,
    # then a cosine to zero over the last `decay_steps` updates.
    schedule: str = "constant"
    decay_steps: int = 0
    clip: float = 1.0  # gradient norm clipping (0: off)
    seed: int = 0  # model init, dropout and data order
    log_every: int = 10  # steps between metric rows
    eval_every: int = 200  # steps between validation passes (0: only at the end)
    eval_tokens: int = 65536  # tokens of the valid split per periodic evaluation (0: the whole split)
    save_every: int = 500  # steps between checkpoints (a final one is always written)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    # Curriculum: datasets trained on, in order, before `data` (comma-separated, same task). A stage ends after
    # `curriculum_steps` updates, or earlier once a periodic validation on the stage's own valid split reaches
    # `curriculum_accuracy` (0: no threshold).
    curriculum: str = ""
    curriculum_steps: int = 0
    curriculum_accuracy: float = 0.0
    # How a step is computed; none changes what it computes beyond float rounding, so a resumed run may change
    # them. `batch` streams are split into `accumulate` micro-batches (on each rank), one backward each.
    accumulate: int = 1
    precision: str = "fp32"  # "bf16": forward under bfloat16 autocast, fp32 master weights and optimiser
    compile: bool = False  # model.compile() (torch.compile in place: checkpoints keep their keys)
    checkpoint_activations: bool = False  # recompute activations in backward instead of storing them
    tensorboard: bool = False  # also log to TensorBoard event files in the run directory

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        task = task_class_or_base(self.task)  # an unknown task is reported where the run's task is built
        for name in (
            "batch",
            "segment",
            "steps",
            "log_every",
            "save_every",
            "keep_checkpoints",
            "max_length",
            "batch_tokens",
            "tokenizer_vocab",
            "accumulate",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FbtError(f"{name} must be a positive integer, got {value!r}")
        for name in ("eval_every", "eval_tokens", "warmup"):
            if getattr(self, name) < 0:
                raise FbtError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise FbtError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise FbtError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if task.even_split and self.batch % self.accumulate:
            raise FbtError(
                f"--batch {self.batch} streams cannot be split into --accumulate {self.accumulate} equal micro-batches"
            )
        if self.schedule not in SCHEDULES:
            raise FbtError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if (self.schedule == "wsd") != (self.decay_steps > 0) or self.decay_steps > self.steps:
            raise FbtError(
                f"decay_steps (got {self.decay_steps}) must be in 1..steps with the wsd schedule, and 0 without it"
            )
        if not self.lr > 0:
            raise FbtError(f"lr must be positive, got {self.lr}")
        if self.clip < 0 or self.time_budget < 0 or self.weight_decay < 0:
            raise FbtError("clip, time_budget and weight_decay must be >= 0")
        if self.curriculum_steps < 0 or not 0 <= self.curriculum_accuracy <= 1:
            raise FbtError("curriculum_steps must be >= 0 and curriculum_accuracy in [0, 1]")
        if self.curriculum and not (self.curriculum_steps or self.curriculum_accuracy):
            raise FbtError("a curriculum needs curriculum_steps or curriculum_accuracy to know when to advance")
        if self.curriculum and not task.takes_curriculum:
            raise FbtError(f"curricula are for token streams; {self.task} trains on one corpus")
        if self.curriculum_accuracy and not self.eval_every:
            raise FbtError("curriculum_accuracy is checked at periodic validations: set eval_every > 0")

    @property
    def stages(self) -> list[str]:
        """Datasets in training order: the curriculum's, then `data`."""
        return [*filter(None, (d.strip() for d in self.curriculum.split(","))), self.data]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return config_from_dict(cls, data, "run")
