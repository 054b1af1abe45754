"""Data parallelism on PyTorch's own engine: torchrun starts the processes, DistributedDataParallel averages
the gradients (gloo on CPU, NCCL on GPU).

Every rank reads the same global segment (B, T) and keeps rows [r·B/N, (r+1)·B/N): rank r owns that slice of
the B parallel streams, so a stream's carried state stays on one rank. Checkpoints hold the global state
(gathered by rows), so a run resumes under any number of ranks: the slices are recomputed from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fbt.data.translation import TranslationBatch
from fbt.device import resolve_device
from fbt.errors import FbtError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str) -> torch.device:
    """Joins the process group torchrun describes in the environment; returns this rank's device."""
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int, even: bool = True) -> slice:
        """This rank's rows of a global batch of `batch` rows: equal shares of streams, or (even=False, for
        batches of sentences) shares that differ by at most one."""
        if even and batch % self.world:
            raise FbtError(
                f"{batch} streams or environments (--batch, --envs) cannot be split evenly over {self.world} ranks"
            )
        if batch < self.world:
            raise FbtError(f"a batch of {batch} rows cannot give each of {self.world} ranks one")
        return share(batch, self.world, self.rank)

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sum over ranks (float64, so counts stay exact)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (a signal or a time budget seen by one rank)."""
        return self.sum([float(flag)])[0] > 0 if self.world > 1 else flag

    def gather_rows(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """The global tensor from every rank's rows along `dim` (ranks hold equal shares)."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def share(rows: int, parts: int, index: int) -> slice:
    """Part `index` of `parts` contiguous shares of `rows` rows, sizes differing by at most one."""
    size, extra = divmod(rows, parts)
    start = index * size + min(index, extra)
    return slice(start, start + size + (index < extra))


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# `dims` below: the model family's state_batch_dims, {state tensor name: its batch dimension} (negative: from
# the end).


def state_rows(dims: dict[str, int], state: dict | None, rows: slice) -> dict | None:
    """The rows `rows` of a carried state (None stays None)."""
    if state is None:
        return None
    return {
        name: tensor.narrow(dims[name] % tensor.dim(), rows.start, rows.stop - rows.start)
        for name, tensor in state.items()
    }


def cat_states(dims: dict[str, int], states: list[dict | None]) -> dict | None:
    """Row-wise concatenation of the states of consecutive row blocks."""
    if states[0] is None:
        return None
    return {name: torch.cat([s[name] for s in states], dim=dims[name] % states[0][name].dim()) for name in states[0]}


def gather_state(ranks: Ranks, dims: dict[str, int], state: dict | None) -> dict | None:
    """The global carried state from every rank's slice (every rank must call it)."""
    if ranks.world == 1 or state is None:
        return state
    return {name: ranks.gather_rows(tensor, dims[name] % tensor.dim()) for name, tensor in state.items()}


def rows_of(batch, rows: slice):
    """Rows of a (B, T) tensor or of a TranslationBatch."""
    if isinstance(batch, TranslationBatch):
        return TranslationBatch(batch.source[rows], batch.target[rows])
    return batch[rows]
