"""Feedback Transformers and their baselines behind one interface: `logits, state = model(tokens, state)`.

Names are imported on first use, so that `fbt --help` and the lighter commands do not load torch.
"""

from fbt.errors import FbtError

__all__ = ["FbtError", "ModelConfig", "build_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("ModelConfig", "build_model"):
        import fbt.models

        return getattr(fbt.models, name)
    raise AttributeError(f"module 'fbt' has no attribute {name!r}")
