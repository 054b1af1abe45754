"""Appends one CSV row per logged step or evaluation; a resumed run keeps appending to the same file.

CsvLog is the plain file (fixed columns, the header with the first row), also RL's metrics.csv; MetricsLog
adds the training columns and TensorBoard.

Rows are typed by their first column, `kind`: "train" rows hold the training columns (means over the logging
window), "valid" rows the validation metrics of a pass at that step. A value under a name the file has no
column for yet (what a model's `diagnostics` reports, e.g. the feedback memory's RMS) adds a column at the end:
the file is rewritten with the wider header, earlier rows empty there. With `tensorboard`, the same numbers
also go to TensorBoard event files in the run directory (`tensorboard --logdir RUN`), as "train/loss",
"valid/accuracy" and so on, against the step.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fbt.errors import FbtError

KINDS = ("train", "valid")
# The columns every log starts with; others follow in the order they first appear.
COLUMNS = (
    "kind",
    "step",
    "tokens",
    "elapsed_s",
    "lr",
    "stage",  # curriculum stage (0: the first dataset)
    "train_loss",
    "tokens_per_s",
    "grad_norm",  # before clipping, the largest of the logging window
    "valid_loss",
    "valid_accuracy",
    "valid_bits_per_byte",
    "valid_perplexity",  # subword tasks (lm, translation): per token
)


class CsvLog:
    def __init__(self, path: Path, columns: tuple[str, ...], active: bool = True):
        self.path = Path(path)
        self.columns = columns
        self.active = active  # False on every data-parallel rank but the first: one log per run

    def append(self, row: dict) -> None:
        if not self.active:
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def reset(self) -> None:
        """Start an empty log (a new run in a directory left by a start that saved nothing)."""
        if not self.active:
            return
        self.path.unlink(missing_ok=True)


class MetricsLog(CsvLog):
    def __init__(self, path: Path, tensorboard: bool = False, active: bool = True):
        super().__init__(path, COLUMNS, active)
        self.board = open_tensorboard(self.path.parent) if tensorboard and active else None

    def write(self, kind: str, step: int, tokens: int, elapsed: float, lr: float | None, **metrics) -> None:
        """One row; `metrics` are numbers or text, by column name."""
        assert kind in KINDS, kind
        if not self.active:
            return
        if self.board is not None:
            numbers = {"lr": lr, **metrics} if lr is not None else metrics
            for name, value in numbers.items():
                if isinstance(value, int | float):
                    self.board.add_scalar(f"{kind}/{name.removeprefix(kind + '_')}", value, step)
            self.board.flush()
        row = {
            "kind": kind,
            "step": step,
            "tokens": tokens,
            "elapsed_s": f"{elapsed:.3f}",
            "lr": "" if lr is None else f"{lr:.6g}",
        }
        row.update({name: value if isinstance(value, str) else f"{value:.6g}" for name, value in metrics.items()})
        header = self.header()
        self.columns = tuple(dict.fromkeys((*COLUMNS, *header, *row)))
        if header and header != self.columns:
            self.rewrite(self.columns, step=None)
        self.append(row)

    def header(self) -> tuple[str, ...]:
        """The file's columns (none before its first row)."""
        if not self.path.exists():
            return ()
        with open(self.path, newline="") as handle:
            return tuple(next(csv.reader(handle), []))

    def drop_after(self, step: int | None) -> None:
        """Forget rows logged after `step`: a resumed run rewrites them from its checkpoint."""
        if not self.active or not self.path.exists():
            return
        self.rewrite(tuple(dict.fromkeys((*COLUMNS, *self.header()))), step)

    def rewrite(self, columns: tuple[str, ...], step: int | None) -> None:
        """The file with these columns, rows after `step` left out (None: all kept)."""
        with open(self.path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if step is None or int(row["step"]) <= step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def open_tensorboard(directory: Path):
    """A TensorBoard writer of event files in `directory` (needs the `tensorboard` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FbtError("--tensorboard needs the tensorboard package: pip install 'fbt[tensorboard]'") from None
    return SummaryWriter(log_dir=str(directory))
