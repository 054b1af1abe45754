"""Model families by name: the built-in ones (imported on first use) and those added by `register_family`."""

from __future__ import annotations

import importlib
import re

from fbt.errors import FbtError
from fbt.models.family import COMMON_OPTIONS, DECLARATIONS, ModelFamily

# name -> the family's class, or "module:class" until first used
_FAMILIES: dict[str, type | str] = {
    "feedback": "fbt.models.feedback:FeedbackTransformer",
    "transformer-xl": "fbt.models.transformer_xl:TransformerXL",
    "gpt": "fbt.models.gpt:GPT",
    "lstm": "fbt.models.lstm:LSTMLanguageModel",
    "seq2seq": "fbt.models.seq2seq:Seq2Seq",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # no ":", "," or "=": `fbt bench` specs hold names


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def register_family(name: str, cls: type) -> None:
    """Add model family `name`, built as `cls(config)`; `cls` must declare what ModelFamily lists."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise FbtError(f"a model family name is letters, digits, '.', '_' and '-', got {name!r}")
    if name in _FAMILIES:
        raise FbtError(f"model family {name!r} is already registered")
    check_declarations(name, cls)
    _FAMILIES[name] = cls


def model_class(name: str) -> type:
    """The class of model family `name`."""
    if name not in _FAMILIES:
        raise FbtError(f"unknown model {name!r}; choose one of {', '.join(_FAMILIES)}")
    cls = _FAMILIES[name]
    if isinstance(cls, str):
        module, _, attribute = cls.partition(":")
        cls = getattr(importlib.import_module(module), attribute)
        check_declarations(name, cls)
        _FAMILIES[name] = cls
    return cls


def check_declarations(name: str, cls: type) -> None:
    """Fail now, not at some later step, when `cls` misses a declaration or declares an unknown option."""
    from fbt.models.config import ModelConfig  # imported here: config.py validates names against this registry

    if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
        raise FbtError(f"model family {name!r} must be a class deriving from fbt.models.ModelFamily, got {cls!r}")
    missing = [declaration for declaration in DECLARATIONS if not hasattr(cls, declaration)]
    if missing:
        raise FbtError(f"model family {name!r} ({cls.__name__}) does not declare {', '.join(missing)}")
    dims = cls.state_batch_dims
    if not isinstance(dims, dict) or not all(isinstance(k, str) and type(v) is int for k, v in dims.items()):
        raise FbtError(f"model family {name!r}: state_batch_dims must map state tensor names to dimensions")
    options = cls.options
    fields = ModelConfig.__dataclass_fields__
    if not isinstance(options, tuple) or any(o not in fields or o in COMMON_OPTIONS for o in options):
        raise FbtError(
            f"model family {name!r}: options must be a tuple of ModelConfig fields besides "
            f"{', '.join(COMMON_OPTIONS)}, got {options!r}"
        )
