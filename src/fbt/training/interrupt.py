"""Stop training cleanly on Ctrl-C or SIGTERM: the step in progress finishes, then the trainer saves.

A second signal aborts at once (the last complete checkpoint stays the latest one).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals(announce: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGINT/SIGTERM set `request.signal` instead of raising; a second one raises
    KeyboardInterrupt. Signal handlers can only be set from the main thread; elsewhere nothing changes.
    `announce`: say so on stderr (one data-parallel rank speaks for all)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: object) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.signal = signum
        name = signal.Signals(signum).name
        if announce:
            print(
                f"\nfbt: {name}: saving a checkpoint after this step (again to abort without saving)", file=sys.stderr
            )

    previous = {number: signal.signal(number, handle) for number in SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
