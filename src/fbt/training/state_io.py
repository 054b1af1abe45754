"""Flattening optimiser, RNG and stream state into (tensors, JSON) pairs for safetensors + JSON files."""

from __future__ import annotations

import torch

from fbt.errors import FbtError

OPTIMIZER = "optimizer."
STREAM = "stream_state."
RNG = "rng.cpu"
CUDA_RNG = "rng.cuda"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors of optimizer.state_dict() under 'optimizer.<param>.<name>'; everything else as JSON."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER}{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER):
            index, name = key[len(OPTIMIZER) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in info["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError) as error:
        raise FbtError(f"optimizer state does not match the model: {error}") from None


def stream_state_to_flat(state: dict | None) -> dict[str, torch.Tensor]:
    """A model's carried state (a dict of tensors, or None for a fresh stream)."""
    return {} if state is None else {f"{STREAM}{name}": value for name, value in state.items()}


def stream_state_from_flat(tensors: dict, device: torch.device) -> dict | None:
    state = {key[len(STREAM) :]: value.to(device) for key, value in tensors.items() if key.startswith(STREAM)}
    return state or None
