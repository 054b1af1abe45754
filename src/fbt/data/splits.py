"""The split names every loader accepts, and how a code-exec dataset directory is recognised."""

from pathlib import Path

SPLITS = ("train", "valid", "test")


def is_code_exec_dir(path: str | Path) -> bool:
    """A directory in the official code-exec format: train.txt beside train.txt.labels."""
    path = Path(path)
    return (path / "train.txt").is_file() and (path / "train.txt.labels").is_file()
