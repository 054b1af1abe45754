"""What a model family declares so that the rest of fbt needs no knowledge of it.

A family is an nn.Module built as `cls(config)` from a ModelConfig, subclassing ModelFamily and declaring:

- `state_batch_dims`: {state tensor name: dimension of the batch in it} for the carried state its forward
  returns (negative: counted from the end). Data parallelism slices and gathers the state by it; a family
  carrying no state declares {}.
- `options`: the ModelConfig fields it reads besides COMMON_OPTIONS; experiment grids leave the others out of
  a cell's name.
- `describe(config) -> str`: the one-line description of a configuration in the training header.
- `forward_flops_per_token(config) -> int`: matmul FLOPs of one token's forward once its state is full
  (`fbt bench` reports MFU with it).
- `state_tokens(config) -> int`: tokens a stream reads before its carried state stops growing.

Optional, where a family has them: `diagnostics(state) -> dict` (values for the training log),
`auxiliary_loss()` (a scalar tensor or None, added to the training loss) and `after_update()` (run after every
optimiser step); adaptive spans (adaptive_span.py) use the last two.

The defaults below may be overridden: `label` (fbt bench's name of a configuration), `reach` (how far back
`fbt analyze memory` marks a step's direct reach) and `translates` (the family reads translation batches).
The registry (registry.py) refuses a family that misses a declaration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from fbt.models.config import ModelConfig

DECLARATIONS = ("state_batch_dims", "options", "describe", "forward_flops_per_token", "state_tokens")
# ModelConfig fields every family reads.
COMMON_OPTIONS = ("model", "vocab_size", "dim", "layers", "dropout", "init")


class ModelFamily:
    """The declarations of a model family (see the module's docstring)."""

    state_batch_dims: ClassVar[dict[str, int]]
    options: ClassVar[tuple[str, ...]]
    translates: ClassVar[bool] = False  # True: reads a TranslationBatch, `logits, None = model(batch)`

    @classmethod
    def label(cls, config: ModelConfig) -> str:
        """A configuration's short name in `fbt bench` tables."""
        return f"{config.model} L{config.layers}"

    @classmethod
    def reach(cls, config: ModelConfig) -> int | None:
        """Distance (tokens) of the furthest input one step attends to directly; None: no fixed limit."""
        return None


def layers_line(config: ModelConfig) -> str:
    """The start of `describe` every family shares: "gpt, 2 layers, d256"."""
    plural = "s" if config.layers > 1 else ""
    return f"{config.model}, {config.layers} layer{plural}, d{config.dim}"


def attention_line(config: ModelConfig) -> str:
    """The attention sizes of a Transformer's `describe`: ", 4 heads, FF1024", or ", 8 heads of 128, FF4096"
    when the head width is set apart from the model width."""
    width = f" of {config.head_width}" if config.head_dim else ""
    return f", {config.heads} heads{width}, FF{config.ff}"
