"""A model family and a task of a user's own, defined in this file and in no other: registered, they go through
`fbt train`, the training header, resume, 2-rank gloo DDP under torchrun, `fbt eval`, `fbt bench` and an
experiment cell like the shipped ones. Processes that `fbt` starts (torchrun's ranks, experiment cells) see
them through a plugin (FBT_PLUGINS) that calls `register()` below."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fbt import tasks
from fbt.cli import main
from fbt.data.targets import IGNORE_INDEX
from fbt.models import ModelConfig, ModelFamily, register_family, registry
from fbt.tasks import Task, register_task

VOCAB = 8
FAMILY, TASK = "echo-mlp", "echo"
SIZES = ["--dim", "16", "--ff", "32", "--layers", "1", "--batch", "4", "--segment", "8", "--warmup", "1"]
TRAIN = ["train", "--model", FAMILY, "--task", TASK, *SIZES, "--log-every", "1", "--eval-every", "0", "--threads", "1"]


class EchoMLP(ModelFamily, nn.Module):
    """One hidden layer over the current token's and the previous token's embeddings; the state carries the
    last token's embedding (B, 1, D)."""

    state_batch_dims = {"previous": 0}
    options = ("ff",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.hidden = nn.Linear(2 * config.dim, config.ff)
        self.out = nn.Linear(config.ff, config.vocab_size)

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"{config.model}: an MLP over 2 tokens, hidden width {config.ff}"

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        return 2 * 2 * config.dim * config.ff + 2 * config.ff * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return 1

    def forward(self, tokens: torch.Tensor, state: dict | None = None):
        x = self.embed(tokens)  # (B, T, D)
        previous = x.new_zeros(x.shape[0], 1, x.shape[2]) if state is None else state["previous"]
        pairs = torch.cat([x, torch.cat([previous, x[:, :-1]], dim=1)], dim=-1)  # (B, T, 2D)
        return self.out(F.relu(self.hidden(pairs))), {"previous": x[:, -1:].detach()}


class EchoTask(Task):
    """Say the previous token again: the target at t is the input at t - 1. A split is DIR/SPLIT.echo, ids
    separated by spaces."""

    vocab_size = VOCAB
    valid_metric = "valid_accuracy"
    higher_is_better = True
    example_prompt = "1 2 3"

    @classmethod
    def recognises_data(cls, path):
        return (Path(path) / "train.echo").is_file()

    def load_split(self, data, split, config):
        ids = torch.tensor([int(token) for token in (Path(data) / f"{split}.echo").read_text().split()])  # (N,)
        targets = ids.roll(1)  # (N,)
        targets[0] = IGNORE_INDEX
        return ids, targets

    def encode(self, prompt):
        return [int(token) for token in prompt.split()]

    def decode(self, ids):
        return " ".join(map(str, ids))


def register() -> None:
    register_family(FAMILY, EchoMLP)
    register_task(TASK, EchoTask)


@pytest.fixture
def own_registries(monkeypatch):
    """Registries that this test may add to: restored after it."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))


@pytest.fixture
def registered(own_registries):
    register()


@pytest.fixture
def plugin(own_registries, tmp_path, monkeypatch):
    """FBT_PLUGINS naming a module that imports this file and calls register(), for `fbt` in this process
    and in every process it starts."""
    (tmp_path / "echo_plugin.py").write_text("import test_extension\n\ntest_extension.register()\n")
    path = [str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
    monkeypatch.setenv("FBT_PLUGINS", "echo_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("echo_plugin", None)


@pytest.fixture
def data(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for split, size in (("train", 3000), ("valid", 400), ("test", 400)):
        ids = torch.randint(0, VOCAB, (size,), generator=generator)
        (tmp_path / f"{split}.echo").write_text(" ".join(map(str, ids.tolist())))
    return tmp_path


def train_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row["kind"] == "train"]


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_a_family_and_a_task_of_ones_own_train_resume_evaluate_and_benchmark(registered, data, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*TRAIN, "--data", str(data), "--steps", "40", "--lr", "1e-2", "--out", str(straight)]) == 0
    header = capsys.readouterr().err
    assert f"{FAMILY}: an MLP over 2 tokens, hidden width 32" in header and f"({TASK})" in header
    assert main([*TRAIN, "--data", str(data), "--steps", "20", "--lr", "1e-2", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", "--steps", "40", "--out", str(resumed), "--no-progress"]) == 0
    assert train_losses(resumed) == train_losses(straight)  # the resumed run continues the same curve

    capsys.readouterr()
    assert main(["eval", str(straight), "--split", "test", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["accuracy"] > 0.5  # chance is 1/8: it learned to echo

    bench = ["bench", "--models", FAMILY, "--dim", "16", "--ff", "32", "--layers", "1", "--vocab-size", "8"]
    bench += ["--batch", "4", "--segment", "8", "--repeats", "1", "--steps", "1", "--no-memory", "--json"]
    assert main([*bench, "--decode-batches", "1"]) == 0
    (entry,) = last_json(capsys.readouterr().out)["models"]
    assert entry["name"] == f"{FAMILY} L1" and entry["train_flops_per_token"] == 3 * (
        2 * 2 * 16 * 32 + 2 * 32 * 8
    )  # forward + backward


def test_torchrun_ranks_train_them_as_one_process_does(plugin, data, tmp_path):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fbt.cli"]
    runs = {"one": [sys.executable, "-m", "fbt.cli"], "two": launch}
    for name, command in runs.items():
        args = [*TRAIN, "--data", str(data), "--steps", "6", "--out", str(tmp_path / name), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    reference = train_losses(tmp_path / "one")
    assert len(reference) == 6 and train_losses(tmp_path / "two") == pytest.approx(reference, rel=1e-5)


def test_an_experiment_cell_trains_and_evaluates_them(plugin, data, tmp_path):
    grid = tmp_path / "echo.toml"
    grid.write_text(f"""
description = "the echo task"
[defaults]
model = "{FAMILY}"
task = "{TASK}"
data = "{data}"
dim = 16
ff = 32
layers = 1
batch = 4
segment = 8
steps = 20
warmup = 1
lr = 0.01
[[cells]]
seed = 0
""")
    out = tmp_path / "experiment"
    assert main(["experiment", str(grid), "--out", str(out), "--no-progress"]) == 0
    (result,) = [json.loads(path.read_text()) for path in (out / "results").glob("*.json")]
    assert result["train"]["step"] == 20 and 0 <= result["test"]["accuracy"] <= 1
    assert result["train_command"].startswith(f"fbt train --model {FAMILY}")
