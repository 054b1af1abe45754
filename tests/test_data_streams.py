"""SegmentStream: B contiguous streams read T tokens at a time, wrap-around and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from fbt.data.streams import SegmentStream
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError


def make(n: int = 103, batch: int = 4, segment: int = 10) -> SegmentStream:
    tokens = torch.arange(n)
    return SegmentStream(tokens, tokens + 1000, batch, segment)


def test_streams_are_contiguous_and_segments_cover_them_in_order():
    stream = make()  # 103 tokens, 4 streams of 25 (3 dropped), segments of 10, 10, 5
    assert stream.segments_per_pass() == 3
    segments = list(stream.iterate_once())
    assert [s[0].shape for s in segments] == [(4, 10), (4, 10), (4, 5)]
    rows = torch.cat([inputs for inputs, _ in segments], dim=1)  # (B, L)
    assert torch.equal(rows, torch.arange(100).view(4, 25))
    for inputs, targets in segments:
        assert torch.equal(targets, inputs + 1000) and inputs.is_contiguous()


def test_wrap_around_marks_the_start_of_each_pass():
    stream = make()
    flags, epochs = [], []
    for _ in range(7):
        _, _, new_stream = stream.next_segment()
        flags.append(new_stream)
        epochs.append(stream.epoch)
    assert flags == [True, False, False, True, False, False, True]
    assert epochs == [0, 0, 1, 1, 1, 2, 2]


def test_iterate_once_leaves_the_training_position_alone():
    stream = make()
    stream.next_segment()
    assert len(list(stream.iterate_once())) == 3
    inputs, _, new_stream = stream.next_segment()
    assert not new_stream and inputs[0, 0].item() == 10


def test_resume_continues_with_the_same_segments():
    stream = make()
    for _ in range(5):
        stream.next_segment()
    saved = json.loads(json.dumps(stream.state_dict()))
    expected = [stream.next_segment() for _ in range(4)]
    resumed = make()
    resumed.load_state_dict(saved)
    for (a, b, flag), (c, d, flag2) in zip(expected, [resumed.next_segment() for _ in range(4)], strict=True):
        assert torch.equal(a, c) and torch.equal(b, d) and flag == flag2
    assert resumed.state_dict() == stream.state_dict()


def test_resume_on_other_data_is_refused():
    saved = make().state_dict()
    with pytest.raises(FbtError, match="saved data position"):
        make(n=203).load_state_dict(saved)
    with pytest.raises(FbtError, match="invalid"):
        make().load_state_dict({"position": 0})


def test_one_token_per_stream_is_enough():
    stream = make(n=4, batch=4, segment=8)
    inputs, _, new_stream = stream.next_segment()
    assert inputs.shape == (4, 1) and new_stream and stream.epoch == 1


@pytest.mark.parametrize("n, batch, segment", [(3, 4, 8), (10, 0, 8), (10, 2, 0)])
def test_bad_sizes(n, batch, segment):
    with pytest.raises(FbtError):
        make(n, batch, segment)


def test_mismatched_inputs_and_targets():
    with pytest.raises(FbtError):
        SegmentStream(torch.arange(10), torch.arange(9), 2, 4)


@pytest.mark.parametrize("batch", [1, 2, 3, 6])
def test_rows_of_documents_begin_at_documents_and_hold_all_of_them(batch):
    tokens = torch.arange(37)
    starts = torch.tensor([0, 5, 9, 20, 22, 30])  # documents of 5, 4, 11, 2, 8 and 7 tokens
    stream = SegmentStream.of_documents(tokens, tokens + 1000, starts, batch, segment=4, pad=-1)
    rows = torch.cat([inputs for inputs, _ in stream.iterate_once()], dim=1)  # (B, L)
    row_targets = torch.cat([targets for _, targets in stream.iterate_once()], dim=1)  # (B, L)
    assert rows.shape[0] == batch
    assert all(int(row[0]) in starts.tolist() for row in rows)
    assert torch.equal(rows[rows >= 0], tokens)  # every token once, in order, padding only after a row's documents
    assert torch.equal(row_targets[rows >= 0], tokens + 1000)
    assert (row_targets[rows < 0] == IGNORE_INDEX).all()
    assert all((row[row < 0].numel() == 0) or (row[(row < 0).nonzero()[0, 0] :] < 0).all() for row in rows)


@pytest.mark.parametrize("starts, batch", [([0, 5], 3), ([2, 5], 1), ([], 1)])
def test_rows_of_documents_refuse_what_cannot_fill_them(starts, batch):
    tokens = torch.arange(10)
    with pytest.raises(FbtError):
        SegmentStream.of_documents(tokens, tokens, torch.tensor(starts, dtype=torch.long), batch, segment=4)
