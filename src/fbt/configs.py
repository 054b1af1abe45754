"""Config dataclasses read from JSON objects, strictly. Imports nothing heavy: parsers and `--help` use it."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from fbt.errors import FbtError

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], data: dict, what: str) -> Config:
    """The config dataclass `cls` of a JSON object; a key it does not know is an error naming the `what` config
    ("unknown model config keys: widht"), never silently dropped."""
    unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
        raise FbtError(f"unknown {what} config keys: {', '.join(unknown)}")
    return cls(**data)
