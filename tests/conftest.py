"""Fixtures shared by the test files; tests marked `cuda` run only where torch sees a CUDA device (`pytest -m cuda`
selects them)."""

import pytest
import torch
from tiny_runs import write_corpus


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def text_file(tmp_path):
    """A small corpus of words, tmp_path/corpus.txt (tiny_runs.write_corpus)."""
    return write_corpus(tmp_path / "corpus.txt")


@pytest.fixture
def one_thread():
    """Torch on one thread during the test: tiny tensors gain nothing from threads, and on a busy machine waiting
    for them costs much."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
