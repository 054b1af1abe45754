"""One training process per run directory: `fbt train` holds an exclusive lock on RUN/.lock for the whole run.

A second process on the same directory stops at once with one line, before writing anything. The lock is an
flock, so the operating system releases it when its holder ends, however it ends (a crash or a kill included);
the file stays, naming the last holder's pid.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fbt.errors import FbtError
from fbt.rundir import LOCK


@contextmanager
def hold(run_dir: str | Path, active: bool = True) -> Iterator[None]:
    """Hold `run_dir` (created if missing) while the block runs. A directory this call created and in which
    nothing was written (the run failed before its first file) is removed again. Inactive (the data-parallel
    ranks but the first, which write nothing there), it holds nothing."""
    if not active:
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = acquire(run_dir / LOCK)
    try:
        yield
    finally:
        if [path.name for path in run_dir.iterdir()] == [LOCK]:
            (run_dir / LOCK).unlink()  # while still holding it, so no one else can have locked this file
            if created:
                run_dir.rmdir()
        handle.close()


def acquire(path: Path):
    """The open lock file, locked; FbtError naming the holder if another process has it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A holder that unlinked the file as it let go (hold's cleanup) leaves a lock on a file no one else sees.
        if os.fstat(handle.fileno()).st_ino != os.stat(path).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise FbtError(
            f"{path.parent} is in use by another fbt train (pid {owner}); wait for it to end or choose another --out"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
