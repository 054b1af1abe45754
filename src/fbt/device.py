"""Which device `--device NAME` means, for every command and the Python API."""

from __future__ import annotations

import torch

from fbt.errors import FbtError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device NAME means, "auto" being CUDA when there is one, else the CPU. Under torchrun (`local_rank`
    given) each rank takes its own GPU, so NAME may only say which kind."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FbtError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FbtError("--device cuda was asked for but CUDA is not available")
    if local_rank is None:
        return device
    if name not in ("cpu", "cuda"):
        raise FbtError(f"under torchrun each rank picks its device: pass --device cpu, cuda or auto, not {name}")
    return torch.device("cuda", local_rank) if device.type == "cuda" else device
