"""An evaluation of a task made of documents (code-exec programs) reads rows of whole programs: every answer of
the split is scored, each with its program's beginning, whatever the number of rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fbt import api
from fbt.data.code_exec import ProgramSpec, generate_dataset, load_code_exec_split
from fbt.data.targets import IGNORE_INDEX
from fbt.models import ModelConfig
from fbt.tasks.code_exec import CodeExecTask
from fbt.training.config import TrainConfig

PROGRAMS = 5


@pytest.fixture(scope="module")
def code_exec_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = generate_dataset(root / "data", ProgramSpec(variables=3, statements=20), sizes=(30, 4, PROGRAMS), seed=2)
    model_config = ModelConfig(model="feedback", dim=16, layers=1, heads=2, ff=32, span=8)
    train_config = TrainConfig(task="code-exec", data=str(data), batch=2, segment=16, steps=3, eval_every=0)
    api.train(model_config, train_config, root / "run", device="cpu", progress=False)
    return data, root / "run"


@pytest.mark.parametrize("batch", [1, 2, 3, PROGRAMS, 64])
def test_every_answer_of_the_split_is_scored_at_any_row_count(code_exec_run, batch):
    data, run = code_exec_run
    _, targets = load_code_exec_split(str(data), "test")
    result = api.evaluate_run(run, "test", batch=batch, device="cpu")
    assert result["scored_tokens"] == int((targets != IGNORE_INDEX).sum())


def test_a_row_per_program_scores_each_as_if_answered_alone(code_exec_run):
    """Rows begin at programs and their padding comes last: the pass equals each program run on its own."""
    data, run = code_exec_run
    model, _, _, _ = api.load_run(run, "cpu")
    inputs, targets = load_code_exec_split(str(data), "test")
    starts = [*CodeExecTask().document_starts(inputs).tolist(), inputs.numel()]
    assert len(starts) == PROGRAMS + 1
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for begin, end in zip(starts, starts[1:]):
            logits, _ = model(inputs[None, begin:end])  # (1, T, V)
            scored = targets[begin:end] != IGNORE_INDEX
            loss_sum += F.cross_entropy(logits[0][scored], targets[begin:end][scored], reduction="sum").item()
            correct += int((logits[0].argmax(-1) == targets[begin:end])[scored].sum())
    result = api.evaluate_run(run, "test", batch=PROGRAMS, device="cpu")
    scored = result["scored_tokens"]
    assert result["loss"] == pytest.approx(loss_sum / scored, rel=1e-5)
    assert result["accuracy"] == correct / scored
