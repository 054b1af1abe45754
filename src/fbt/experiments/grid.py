"""A grid file (TOML) and the cells it expands to.

    description = "what the grid asks"
    seeds = 3                       # each cell runs with seeds 0..seeds-1

    [data.code-exec-cpu]            # datasets the grid writes first: `fbt data code-exec` options
    variables = 1

    [defaults]                      # `fbt train` settings of every cell (config field names, or `preset`)
    preset = "code-exec-feedback-cpu"
    data = "code-exec-cpu"          # a [data] name, or a path

    [[cells]]                       # one block per family of cells; a list is a product over its values
    model = "feedback"
    layers = [1, 2, 4]

A cell's name lists the settings that vary across the grid, e.g. `model=feedback,layers=2,seed=0`.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fbt.data.code_exec import Generator
from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.presets import get_preset
from fbt.training.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SETTINGS = {*ModelConfig.__dataclass_fields__, *TrainConfig.__dataclass_fields__, "preset"} - {"vocab_size"}
GRID_KEYS = {"description", "seeds", "data", "defaults", "cells"}
BUILTIN = Path(__file__).parent / "grids"


@dataclass(frozen=True)
class Cell:
    name: str
    settings: dict  # fbt train settings by config field name (and `preset`), data resolved to a path


@dataclass
class Grid:
    path: Path
    description: str
    datasets: dict[str, Generator] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)


def grid_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN.glob("*.toml"))


def locate(name_or_file: str) -> Path:
    """A shipped grid by name, or a grid file."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    if (BUILTIN / f"{name_or_file}.toml").is_file():
        return BUILTIN / f"{name_or_file}.toml"
    raise FbtError(f"no grid {name_or_file!r}: not a file, nor one of {', '.join(grid_names())}")


def line_of(text: str, key: str) -> int:
    """Line number of the first `key =` in the file (for errors about a value, not its syntax)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return 0


def load_grid(name_or_file: str, out: Path, seeds: int | None = None, steps: int | None = None) -> Grid:
    """Parse and check a grid; datasets named in [data] live in out/data/NAME. `seeds` and `steps` override
    the grid's seed count and every cell's training steps."""
    path = locate(name_or_file)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise FbtError(f"{path}: {error}") from None

    def fail(key: str, message: str) -> FbtError:
        return FbtError(f"{path} line {line_of(text, key)}: {message}")

    for key in raw:
        if key not in GRID_KEYS:
            raise fail(key, f"unknown entry {key!r}; a grid has {', '.join(sorted(GRID_KEYS))}")
    datasets = {}
    for name, options in raw.get("data", {}).items():
        try:
            datasets[name] = Generator(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
        except (TypeError, FbtError) as error:
            raise fail(name, f"dataset {name!r}: {error}") from None
    defaults = raw.get("defaults", {})
    blocks = raw.get("cells", [{}])
    for block in [defaults, *blocks]:
        for key in block:
            if key not in SETTINGS:
                raise fail(key, f"unknown setting {key!r} (fbt train's config fields, or preset)")
    if "preset" in defaults:
        get_preset(defaults["preset"])
    seed_count = seeds if seeds is not None else raw.get("seeds", 1)
    if not isinstance(seed_count, int) or seed_count < 1:
        raise fail("seeds", f"seeds must be a positive integer, got {seed_count!r}")
    expanded = []
    for block in blocks:
        lists = {k: v if isinstance(v, list) else [v] for k, v in block.items() if k != "seed"}
        for values in itertools.product(*lists.values()):
            for seed in range(seed_count):
                expanded.append({**defaults, **dict(zip(lists, values)), "seed": seed})
                if steps is not None:
                    expanded[-1]["steps"] = steps
    for settings in expanded:
        if settings.get("data") in datasets:
            settings["data"] = str((out / "data" / settings["data"]).resolve())
    varying = [k for k in dict.fromkeys(k for s in expanded for k in s) if len({repr(s.get(k)) for s in expanded}) > 1]
    cells = [Cell(",".join(f"{k}={s.get(k)}" for k in varying) or "cell", s) for s in expanded]
    if len({cell.name for cell in cells}) != len(cells):
        raise FbtError(f"{path}: two cells have the same settings")
    return Grid(path, raw.get("description", ""), datasets, cells)
