"""A grid file (TOML) and the cells it expands to.

    description = "what the grid asks"
    seeds = 3                       # each cell runs with seeds 0..seeds-1
    command = "train"               # "train" (fbt train + fbt eval per cell), "rl" (fbt rl train + fbt rl eval
                                    # per cell) or "bench" (one fbt bench of all cells)

    [data.code-exec-cpu]            # datasets the grid writes first: `fbt data code-exec` options
    variables = 1

    [defaults]                      # settings of every cell: fbt train's config fields (or `preset`);
    preset = "code-exec-feedback-cpu"   # for a bench grid, model config fields and fbt bench options; for an
                                        # rl grid, fbt rl train's settings (RLConfig fields)
    data = "code-exec-cpu"          # a [data] name, or a path

    [[cells]]                       # one block per family of cells; a list is a product over its values
    section = "depth"               # optional: the report's section (a table and figures per section)
    seeds = 1                       # optional: this block's seed count
    model = "feedback"
    layers = [1, 2, 4]

    [[reference]]                   # optional: a published value marked on the report's figures
    label = "paper: feedback 4 layers"
    model = "feedback"              # settings locating the point (the figure's x among them)
    layers = 4
    value = 0.991

A cell's name lists the model (an rl grid: the policy), layers and seed where they vary across the grid, and
the settings that vary within its section, e.g. `model=feedback,layers=2,seed=0`; a cell whose name another
section already took gets its section as a prefix. Blocks that give one cell the same effective settings
(defaults and preset included) share it: it runs once, in each of their sections.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fbt.data.code_exec import ProgramSpec
from fbt.errors import FbtError
from fbt.models import COMMON_OPTIONS, ModelConfig, family_names, model_class
from fbt.presets import get_preset
from fbt.rl.config import RLConfig
from fbt.training.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL_FIELDS = set(ModelConfig.__dataclass_fields__)
SETTINGS = {
    "train": {*MODEL_FIELDS, *TrainConfig.__dataclass_fields__, "preset"} - {"vocab_size"},
    "bench": {*MODEL_FIELDS, "batch", "segment", "repeats", "steps", "decode_batches", "decode_tokens", "peak_memory"},
    "rl": set(RLConfig.__dataclass_fields__),
}
# What `--budget` sets in every cell: an amount of training (a bench grid has none).
BUDGET_SETTING = {"train": "steps", "rl": "frames"}
NAMED_FIRST = ("model", "policy", "layers")  # in cell names, before the settings that vary and the seed
BLOCK_KEYS = {"section", "seeds"}
GRID_KEYS = {"description", "seeds", "command", "data", "defaults", "cells", "reference"}
SETTING_HELP = {
    "train": "fbt train's config fields, or preset",
    "bench": "model config fields and fbt bench options",
    "rl": "fbt rl train's settings",
}
BUILTIN = Path(__file__).parent / "grids"


@dataclass(frozen=True)
class Cell:
    name: str
    settings: dict  # fbt train settings by config field name (and `preset`), data resolved to a path
    sections: tuple[str, ...] = ("",)
    values: dict = field(default_factory=dict)  # the settings its name shows, with their effective values


@dataclass
class Grid:
    path: Path
    description: str
    command: str = "train"
    references: list[dict] = field(default_factory=list)
    datasets: dict[str, ProgramSpec] = field(default_factory=dict)
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


def line_of(text: str, key: str, value: object = None) -> int:
    """Line number of the first `key =`, `[key]`, `[[key]]` or `[table.key]` in the file (of `key = value`
    when a value is given): for errors about a value, not its syntax."""
    shown = "" if value is None else re.escape(str(value).lower() if isinstance(value, bool) else repr(value))
    name = re.escape(key)
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{name}\s*=\s*{shown}", line) or re.match(rf"\s*\[\[?([\w-]+\.)?{name}\]", line):
            return number
    return 0


def effective_settings(settings: dict, command: str) -> dict:
    """What a cell actually runs with: config defaults, then its preset, then its own settings."""
    if command == "bench":
        return settings
    if command == "rl":
        return RLConfig(**settings).to_dict()
    base = {**ModelConfig().to_dict(), **dataclasses.asdict(TrainConfig())}
    if "preset" in settings:
        preset = get_preset(settings["preset"])
        base.update({**preset["model"], **preset["train"]})
    return {**base, **{k: v for k, v in settings.items() if k != "preset"}}


def matters(key: str, values: dict, command: str = "train") -> bool:
    """Whether a cell's setting changes what it runs: model config fields its family ignores are left out of
    its name (memory_layer only counts with memory = "layer")."""
    if command == "rl":
        return True
    if key == "memory_layer" and values.get("memory") != "layer":
        return False
    if key not in MODEL_FIELDS or key in COMMON_OPTIONS:
        return True
    return key in model_class(values.get("model", ModelConfig.model)).options


@dataclass(frozen=True)
class GridFile:
    """A grid file's text and its parsed TOML, for errors that name the line of the entry they are about."""

    path: Path
    text: str
    raw: dict

    def fail(self, key: str, message: str, value: object = None) -> FbtError:
        return FbtError(f"{self.path} line {line_of(self.text, key, value)}: {message}")


def parse(path: Path) -> GridFile:
    """The file's TOML; a syntax error is one line naming the file and where it is."""
    text = path.read_text()
    try:
        return GridFile(path, text, tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise FbtError(f"{path}: {error}") from None


def check_command(grid: GridFile, steps: int | None) -> str:
    """The grid's command, once its top-level entries are known ones and a bench grid is given no training steps."""
    for key in grid.raw:
        if key not in GRID_KEYS:
            raise grid.fail(key, f"unknown entry {key!r}; a grid has {', '.join(sorted(GRID_KEYS))}")
    command = grid.raw.get("command", "train")
    if command not in SETTINGS:
        raise grid.fail("command", f"command must be one of {', '.join(SETTINGS)}, got {command!r}")
    if command not in BUDGET_SETTING and steps is not None:
        raise FbtError(f"{grid.path} is a bench grid: --budget (training steps) does not apply")
    return command


def datasets_of(grid: GridFile) -> dict[str, ProgramSpec]:
    """The [data] tables as program specs (TOML lists become the spec's tuples)."""
    datasets = {}
    for name, options in grid.raw.get("data", {}).items():
        try:
            datasets[name] = ProgramSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
        except (TypeError, FbtError) as error:
            raise grid.fail(name, f"dataset {name!r}: {error}") from None
    return datasets


def check_settings(grid: GridFile, command: str, defaults: dict, blocks: list[dict]) -> None:
    """Every setting is one the command takes, the default preset exists, and every seed count is positive."""
    for key in defaults:
        if key not in SETTINGS[command]:
            raise grid.fail(key, f"unknown setting {key!r} ({SETTING_HELP[command]})")
    for block in blocks:
        for key in block:
            if key not in SETTINGS[command] | BLOCK_KEYS:
                raise grid.fail(key, f"unknown setting {key!r} ({SETTING_HELP[command]}, section or seeds)")
    if "preset" in defaults:
        get_preset(defaults["preset"])
    counts = [grid.raw.get("seeds", 1)] + [block["seeds"] for block in blocks if "seeds" in block]
    for value in counts:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise grid.fail("seeds", f"seeds must be a positive integer, got {value!r}", value)


def expand(
    blocks: list[dict], defaults: dict, command: str, grid_seeds: int, seeds: int | None, steps: int | None
) -> list[tuple[dict, str]]:
    """Each block's product over its listed values, times its seeds: (settings over the defaults, section) per run.
    `steps` (--budget) sets every cell's amount of training: its steps, or an rl cell's frames."""
    expanded = []
    for block in blocks:
        seed_count = seeds if seeds is not None else block.get("seeds", grid_seeds)
        if command == "bench":
            seed_count = 1  # timings have no seed
        lists = {k: v if isinstance(v, list) else [v] for k, v in block.items() if k not in BLOCK_KEYS | {"seed"}}
        for values in itertools.product(*lists.values()):
            for seed in range(seed_count):
                settings = {**defaults, **dict(zip(lists, values))}
                if command != "bench":
                    settings["seed"] = seed
                if steps is not None:
                    settings[BUDGET_SETTING[command]] = steps
                expanded.append((settings, block.get("section", "")))
    return expanded


def resolve_data(expanded: list[tuple[dict, str]], datasets: dict, out: Path) -> None:
    """A cell's `data` naming a [data] table becomes the path that dataset is written to."""
    for settings, _ in expanded:
        if settings.get("data") in datasets:
            settings["data"] = str((out / "data" / settings["data"]).resolve())


def name_order(key: str) -> tuple[int, bool]:
    """Where a setting goes in a cell's name: model (or policy) and layers first, the seed last."""
    return (NAMED_FIRST.index(key) if key in NAMED_FIRST else len(NAMED_FIRST), key == "seed")


def build_cells(grid: GridFile, command: str, expanded: list[tuple[dict, str]]) -> list[Cell]:
    """One cell per distinct effective settings, named by what varies (see the module docstring)."""
    try:
        effective = [effective_settings(settings, command) for settings, _ in expanded]
    except FbtError as error:
        raise FbtError(f"{grid.path}: {error}") from None
    for values in effective if command != "rl" else ():  # RLConfig checked its policy
        model = values.get("model", ModelConfig.model)
        if model not in family_names():
            raise grid.fail("model", f"unknown model {model!r}; choose one of {', '.join(family_names())}", model)
    given = list(dict.fromkeys(k for settings, _ in expanded for k in settings if k != "preset"))

    def varying(indices: list[int]) -> list[str]:
        keys = [k for k in given if len({repr(effective[i].get(k)) for i in indices}) > 1]
        return sorted(keys, key=name_order)

    everywhere = varying(list(range(len(expanded))))
    in_section = {section: varying([i for i, (_, s) in enumerate(expanded) if s == section]) for _, section in expanded}
    cells: dict[str, Cell] = {}  # by effective settings
    names: dict[str, str] = {}  # name -> effective settings
    for (settings, section), values in zip(expanded, effective, strict=True):
        identity = repr(sorted(values.items()))
        keys = [k for k in everywhere if k in (*NAMED_FIRST, "seed") or k in in_section[section]]
        shown = {k: values.get(k) for k in keys if matters(k, values, command)}
        if identity in cells:
            first = cells[identity]
            if section in first.sections:
                raise FbtError(f"{grid.path}: two cells of section {section!r} have the same settings ({first.name})")
            cells[identity] = Cell(first.name, first.settings, (*first.sections, section), {**first.values, **shown})
            continue
        name = ",".join(f"{k}={v}" for k, v in shown.items()) or "cell"
        if name in names:  # the same settings shown, others differ: the section tells them apart
            name = f"{re.sub(r'[^A-Za-z0-9]+', '-', section).strip('-')}.{name}"
        if name in names:
            raise FbtError(f"{grid.path}: two different cells would be named {name}; vary a setting the model uses")
        names[name] = identity
        cells[identity] = Cell(name, settings, (section,), shown)
    return list(cells.values())


def references_of(grid: GridFile) -> list[dict]:
    """The [[reference]] points, each with a label and a numeric value."""
    references = grid.raw.get("reference", [])
    for reference in references:
        if not isinstance(reference.get("value"), (int, float)) or "label" not in reference:
            raise grid.fail("reference", "a [[reference]] needs a label and a numeric value")
    return references


def load_grid(name_or_file: str, out: Path, seeds: int | None = None, steps: int | None = None) -> Grid:
    """Parse and check a grid; datasets named in [data] live in out/data/NAME. `seeds` and `steps` override
    the grid's (and every block's) seed count and every cell's training steps."""
    grid = parse(locate(name_or_file))
    command = check_command(grid, steps)
    datasets = datasets_of(grid)
    defaults = grid.raw.get("defaults", {})
    blocks = grid.raw.get("cells", [{}])
    check_settings(grid, command, defaults, blocks)
    expanded = expand(blocks, defaults, command, grid.raw.get("seeds", 1), seeds, steps)
    resolve_data(expanded, datasets, out)
    cells = build_cells(grid, command, expanded)
    references = references_of(grid)
    return Grid(grid.path, grid.raw.get("description", ""), command, references, datasets, cells)
