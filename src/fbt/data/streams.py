"""Batching for truncated BPTT, as in the paper: B parallel contiguous streams read T tokens at a time.

The token stream (N,) is cut into B streams of L = N // B consecutive tokens (the last N - B*L are dropped);
segment i holds columns [i*T, (i+1)*T) of every stream, so segment i+1 continues segment i row by row and a
model can carry its state (memory, cache) from one segment to the next. The last segment of a pass is
shorter when T does not divide L.

An evaluation of a task made of independent documents (code-exec programs) reads `SegmentStream.of_documents`
instead: rows that begin at document starts and hold whole documents, so that no document is scored without its
beginning, whatever B is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError


class SegmentStream:
    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch: int, segment: int):
        if inputs.dim() != 1 or inputs.shape != targets.shape:
            raise FbtError(
                "inputs and targets must be 1-D and of equal length, "
                f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        if batch < 1 or segment < 1:
            raise FbtError(f"batch and segment length must be at least 1, got batch {batch} and segment {segment}")
        length = inputs.numel() // batch
        # One token per stream is enough: inputs and targets are already paired.
        if length < 1:
            raise FbtError(f"{inputs.numel()} tokens cannot fill {batch} streams; use a smaller batch")
        self.batch, self.segment, self.length = batch, segment, length
        self.inputs = inputs[: batch * length].reshape(batch, length)  # (B, L), row b = tokens [b*L, (b+1)*L)
        self.targets = targets[: batch * length].reshape(batch, length)  # (B, L)
        self.position = 0  # index of the next segment within the current pass
        self.epoch = 0  # passes completed by next_segment

    @classmethod
    def of_documents(
        cls, inputs: torch.Tensor, targets: torch.Tensor, starts: torch.Tensor, batch: int, segment: int, pad: int = 0
    ) -> SegmentStream:
        """B rows of whole documents, none dropped: `starts` (D,) are the ascending indices where the documents of
        `inputs` (N,) begin, the first 0; row b holds documents [b*D // B, (b+1)*D // B). A row shorter than the
        longest ends in `pad` inputs with unscored targets, after all of its documents, so they change no score."""
        if inputs.dim() != 1 or inputs.shape != targets.shape:
            raise FbtError("inputs and targets must be 1-D and of equal length")
        documents = starts.numel()
        if documents == 0 or int(starts[0]) != 0:
            raise FbtError("the first document must start at index 0")
        if not 1 <= batch <= documents:
            raise FbtError(f"{documents} documents cannot fill {batch} rows; use a batch of at most {documents}")
        bounds = [*starts.tolist(), inputs.numel()]
        firsts = [row * documents // batch for row in range(batch + 1)]
        spans = [(bounds[firsts[row]], bounds[firsts[row + 1]]) for row in range(batch)]  # [begin, end) per row
        length = max(end - begin for begin, end in spans)
        row_inputs = torch.full((batch, length), pad, dtype=inputs.dtype)  # (B, L)
        row_targets = torch.full((batch, length), IGNORE_INDEX, dtype=targets.dtype)  # (B, L)
        for row, (begin, end) in enumerate(spans):
            row_inputs[row, : end - begin] = inputs[begin:end]
            row_targets[row, : end - begin] = targets[begin:end]
        return cls(row_inputs.reshape(-1), row_targets.reshape(-1), batch, segment)

    @property
    def tokens(self) -> int:
        """Tokens one pass reads."""
        return self.batch * self.length

    def segments_per_pass(self) -> int:
        return -(-self.length // self.segment)

    def _segment(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.segment
        columns = slice(start, start + self.segment)
        return self.inputs[:, columns].contiguous(), self.targets[:, columns].contiguous()  # (B, <=T) each

    def next_segment(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs (B, <=T), targets (B, <=T) and whether this segment starts a pass (reset the model state).
        After the last segment of a pass the next call starts over from the beginning."""
        index = self.position
        inputs, targets = self._segment(index)
        self.position += 1
        if self.position == self.segments_per_pass():
            self.position = 0
            self.epoch += 1
        return inputs, targets, index == 0

    def iterate_once(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every segment of one pass from the start (for evaluation); leaves the training position alone."""
        for index in range(self.segments_per_pass()):
            yield self._segment(index)

    def state_dict(self) -> dict[str, int]:
        """The position, JSON-serialisable, with the shape it refers to so a mismatched resume is caught."""
        return {
            "position": self.position,
            "epoch": self.epoch,
            "batch": self.batch,
            "segment": self.segment,
            "stream_length": self.length,
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            shape = (int(state["batch"]), int(state["segment"]), int(state["stream_length"]))
            position, epoch = int(state["position"]), int(state["epoch"])
        except (KeyError, TypeError, ValueError) as error:
            raise FbtError(f"invalid data position {state!r}: {error}") from None
        if shape != (self.batch, self.segment, self.length):
            raise FbtError(
                f"the saved data position is for batch {shape[0]}, segment {shape[1]}, streams of {shape[2]} tokens, "
                f"but the data now gives batch {self.batch}, segment {self.segment}, streams of {self.length} tokens"
            )
        if not 0 <= position < self.segments_per_pass() or epoch < 0:
            raise FbtError(f"invalid data position {state!r}")
        self.position, self.epoch = position, epoch
