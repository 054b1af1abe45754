"""Progress of long work: a tqdm bar on a terminal, plain lines in a log.

A bar redrawn with carriage returns is unreadable in a file (`fbt train ... 2> log`, a batch scheduler), and
tqdm hides itself there by default, so a long run said nothing. `progress_display(...)` gives tqdm where stderr is a
terminal and otherwise a `PlainProgress`, which writes one whole line at every tenth of the work and at least
every `every` seconds: "train: 1,200/30,000 step (4%), 2.31 step/s, 3h 27m left, loss 1.0234". A transient
display (a validation pass inside training: `leave=False`) writes only the timed lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

from fbt.formatting import format_duration

LOG_EVERY_S = 60.0


class PlainProgress:
    """The parts of tqdm's interface fbt uses (update, set_postfix, set_postfix_str, iteration, close, with),
    reported as plain lines on stderr."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        every: float = LOG_EVERY_S,
        tenths: bool = True,
    ) -> None:
        self.iterable = iterable
        self.total, self.done, self.start_count = total, initial, initial
        self.desc, self.unit, self.every, self.tenths = desc, unit, every, tenths
        self.postfix = ""
        self.started = self.last_line = time.perf_counter()
        self.last_tenth = self._tenth()
        self.written = initial  # units done at the last line

    def _tenth(self) -> int:
        return 10 * self.done // self.total if self.total else 0

    def update(self, count: int = 1) -> None:
        self.done += count
        tenth = self._tenth()
        if (self.tenths and tenth > self.last_tenth) or time.perf_counter() - self.last_line >= self.every:
            self.last_tenth = tenth
            self.write_line()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{name} {value}" for name, value in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def line(self) -> str:
        spent = time.perf_counter() - self.started
        rate = (self.done - self.start_count) / spent if spent > 0 else 0.0
        parts = [f"{self.done:,}/{self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        parts.append(f"{rate:,.3g} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def write_line(self) -> None:
        self.last_line, self.written = time.perf_counter(), self.done
        print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        """A last line when the work stopped between lines (a lasting display only)."""
        if self.tenths and self.written != self.done:
            self.write_line()

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_display(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str = "",
    unit: str = "it",
    shown: bool = True,
    leave: bool = True,
    unit_scale: bool = False,
) -> tqdm | PlainProgress:
    """A progress display of `total` units: a bar on a terminal, plain lines otherwise, nothing unless `shown`."""
    if shown and not sys.stderr.isatty():
        return PlainProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, tenths=leave)
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc or None,
        unit=unit,
        leave=leave,
        unit_scale=unit_scale,
        dynamic_ncols=True,
        disable=not shown,
    )
