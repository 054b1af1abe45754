"""SegmentStream: B contiguous streams read T tokens at a time, wrap-around and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from fbt.data.streams import SegmentStream
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
