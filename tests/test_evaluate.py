"""An evaluation of a task made of documents (code-exec programs) reads rows of whole programs: every answer of
the split is scored, each with its program's beginning, whatever the number of rows; a breakdown groups those
same answers by feature."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_runs import tiny_configs, write_corpus
from torch import nn

from fbt import api
from fbt.data.code_exec import ProgramSpec, generate_dataset, load_code_exec_split
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError
from fbt.models import ModelConfig
from fbt.tasks.base import EvalSettings
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


@pytest.mark.parametrize("batch", [1, 3])
def test_a_breakdown_splits_the_evaluations_answers(code_exec_run, batch):
    """Every feature's buckets hold every scored answer once, and their accuracies add up to the evaluation's."""
    data, run = code_exec_run
    result = api.evaluate_run(run, "test", batch=batch, device="cpu", breakdown=True)
    features = {feature["feature"]: feature["buckets"] for feature in result["breakdown"]}
    assert list(features) == ["since_change", "variables", "changed_by", "statement"]
    for cells in features.values():
        assert sum(cell["examples"] for cell in cells) == result["scored_tokens"]
        correct = sum(cell["accuracy"] * cell["examples"] for cell in cells)
        assert correct / result["scored_tokens"] == pytest.approx(result["accuracy"], abs=1e-12)
    assert [cell["bucket"] for cell in features["statement"]] == ["1-10", "11-20"]  # programs of 20 statements


def test_a_breakdown_finds_labels_that_disagree_with_the_program(code_exec_run, tmp_path):
    data, run = code_exec_run
    for name in ("train", "valid", "test"):
        for suffix in (".txt", ".txt.labels"):
            (tmp_path / f"{name}{suffix}").write_text((data / f"{name}{suffix}").read_text())
    labels = (tmp_path / "test.txt.labels").read_text().split(" ")
    first = next(i for i, label in enumerate(labels) if label != "_")
    labels[first] = "10" if labels[first] != "10" else "9"
    (tmp_path / "test.txt.labels").write_text(" ".join(labels))
    with pytest.raises(FbtError, match="labels disagree"):
        api.evaluate_run(run, "test", data=str(tmp_path), device="cpu", breakdown=True)


def test_a_breakdown_of_a_task_without_one_is_one_error(tmp_path):
    model_config, train_config = tiny_configs(write_corpus(tmp_path / "corpus.txt"), steps=1)
    api.train(model_config, train_config, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(FbtError, match="no breakdown"):
        api.evaluate_run(tmp_path / "run", "valid", device="cpu", breakdown=True)


class Oracle(nn.Module):
    """Answers each position of the rows it is given, segment after segment, with its label."""

    def __init__(self, targets: torch.Tensor):
        super().__init__()
        self.targets, self.column = targets.clamp(min=0), 0  # (B, L); unscored positions answer id 0
        self.anchor = nn.Parameter(torch.zeros(1))  # where the model lives

    def forward(self, inputs, state=None):
        labels = self.targets[:, self.column : self.column + inputs.shape[1]]
        self.column += inputs.shape[1]
        return F.one_hot(labels, CodeExecTask.vocab_size).float(), state


def test_a_breakdown_scores_each_answer_at_its_own_print(code_exec_run):
    data, run = code_exec_run
    _, _, _, config = api.load_run(run, "cpu")
    task = CodeExecTask()
    (stream,) = task.streams(config, str(data), ("test",), 3, 16, whole_documents=True)
    table = task.breakdown(Oracle(stream.targets), config, str(data), "test", EvalSettings(batch=3, segment=16))
    cells = [cell for feature in table["breakdown"] for cell in feature["buckets"]]
    assert cells and all(cell["accuracy"] == 1.0 for cell in cells)


def test_a_recorded_breakdown_is_drawn_and_a_missing_one_is_one_error(code_exec_run, tmp_path):
    pytest.importorskip("matplotlib")
    from fbt.plots import plot_breakdowns

    data, run = code_exec_run
    with pytest.raises(FbtError, match="no breakdown of its valid split"):
        plot_breakdowns([run], tmp_path / "none.png", "valid")
    api.evaluate_run(run, "valid", device="cpu", breakdown=True)
    recorded = json.loads((run / "evaluations.json").read_text())["valid"]["breakdown"]
    assert [f["feature"] for f in recorded] == ["since_change", "variables", "changed_by", "statement"]  # in order
    png = plot_breakdowns([run, run], tmp_path / "breakdown.png", "valid")
    assert png.read_bytes().startswith(b"\x89PNG")
