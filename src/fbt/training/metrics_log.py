"""Appends one CSV row per logged step or evaluation; a resumed run keeps appending to the same file."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = (
    "step",
    "tokens",
    "elapsed_s",
    "lr",
    "train_loss",
    "tokens_per_s",
    "valid_loss",
    "valid_accuracy",
    "valid_bits_per_byte",
)


class MetricsLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, step: int, tokens: int, elapsed: float, lr: float | None, **metrics: float) -> None:
        row = {
            "step": step,
            "tokens": tokens,
            "elapsed_s": f"{elapsed:.3f}",
            "lr": "" if lr is None else f"{lr:.6g}",
        }
        row.update({name: f"{value:.6g}" for name, value in metrics.items() if name in COLUMNS})
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def drop_after(self, step: int) -> None:
        """Forget rows logged after `step`: a resumed run rewrites them from its checkpoint."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
