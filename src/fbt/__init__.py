"""Feedback Transformers and their baselines behind one interface: `logits, state = model(tokens, state)`."""

from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model

__all__ = ["FbtError", "ModelConfig", "build_model"]
__version__ = "0.1.0"
