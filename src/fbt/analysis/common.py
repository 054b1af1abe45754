"""What every analysis needs: a model (a run's checkpoint, or a fresh one of given sizes), a batch of its data,
and its loss as a function of a parameter dict (for torch.func)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from fbt.checkpoint import find_checkpoint
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model, model_class


@dataclass
class Subject:
    """A model under analysis and a batch of its data: inputs, targets (B, T)."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    label: str  # the run directory, or the model's name


def load_subject(
    run: str | None,
    config: ModelConfig | None,
    batch: int,
    segment: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Subject:
    """A run's latest checkpoint (or a checkpoint directory) on `batch` x `segment` tokens of its valid split, or a
    freshly initialised `config` on random tokens. Translation models are not analysed (no token streams)."""
    if batch < 1 or segment < 1:
        raise FbtError(f"--batch and --segment must be >= 1, got {batch} and {segment}")
    generator = torch.Generator().manual_seed(seed)
    if run is None:
        if config is None:
            raise FbtError("give a run directory or --model NAME")
        check_family(config.model)
        torch.manual_seed(seed)
        model = build_model(config)
        tokens = torch.randint(0, config.vocab_size, (batch, segment + 1), generator=generator)
        return Subject(model.to(dtype).eval(), tokens[:, :-1], tokens[:, 1:], config.model)
    return run_subject(find_checkpoint(Path(run)), batch, segment, dtype, str(run))


def run_subject(directory: Path, batch: int, segment: int, dtype: torch.dtype, label: str) -> Subject:
    """One checkpoint on the first `segment` tokens of `batch` streams of its run's valid split."""
    from fbt import api

    model, task, model_config, train_config = api.load_run(directory, device="cpu")
    check_family(model_config.model)
    api.check_data_exists(train_config)
    (stream,) = task.streams(train_config, train_config.data, ("valid",), batch, segment)
    inputs, targets = next(stream.iterate_once())
    return Subject(model.to(dtype).eval(), inputs, targets, label)


def require_scored(subject: Subject) -> None:
    """A loss needs scored positions (code-exec scores only the answers of prints)."""
    if not (subject.targets != IGNORE_INDEX).any():
        raise FbtError(
            f"the data of {subject.label} scores no position in its first {subject.inputs.shape[1]} tokens; "
            "try a longer --segment"
        )


def check_family(name: str) -> None:
    if model_class(name).translates:
        raise FbtError(f"analysis reads token streams: translation models ({name}) are not supported")


def reference_path(model: nn.Module) -> nn.Module:
    """torch.func transforms need plain autograd ops: a model's step loop (`fast = False`), not a fused segment
    (whose hand-written backward supports reverse mode only)."""
    if hasattr(model, "fast"):
        model.fast = False
    return model


@contextmanager
def forward_mode_kernels():
    """Kernels forward-mode AD can go through: PyTorch's CPU flash attention (GPT) and oneDNN LSTM have no
    forward-mode derivative, their plain counterparts do (same results up to float rounding)."""
    try:
        with warnings.catch_warnings():
            # Setting and restoring oneDNN's flags touches its TF32 switch, which warns on builds without Intel
            # GPUs; only that warning is silenced.
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN", category=UserWarning)
            with sdpa_kernel(SDPBackend.MATH), torch.backends.mkldnn.flags(enabled=False):
                yield
    except NotImplementedError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "an operation"
        raise FbtError(f"forward-mode differentiation is not available here: {first}") from None


def mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored positions of logits (B, T, V) and targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def loss_function(subject: Subject):
    """params (name -> tensor) -> the mean loss of the subject's batch, for torch.func."""
    model = subject.model

    def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, _ = functional_call(model, params, (subject.inputs,))
        return mean_loss(logits, subject.targets)

    return loss


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters, detached (torch.func differentiates with respect to these copies)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
