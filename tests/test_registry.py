"""Model families are declared, not known: a family registered from here (a one-layer MLP language model) is
accepted by the config, the CLI, the trainer, data-parallel state slicing, the training header, fbt bench and
experiment grids; a family missing a declaration is refused when registered; every diagnostics value reaches
metrics.csv."""

import csv

import pytest
import torch
import torch.nn.functional as F
from families import FAMILIES
from tiny_runs import write_corpus
from torch import nn

from fbt import api
from fbt.bench import forward_flops_per_token, parse_model_spec
from fbt.commands import build_parser
from fbt.errors import FbtError
from fbt.experiments.grid import matters
from fbt.models import ModelConfig, ModelFamily, build_model, family_names, model_class, register_family, registry
from fbt.training.config import TrainConfig
from fbt.training.describe import describe
from fbt.training.distributed import cat_states, state_rows
from fbt.training.metrics_log import COLUMNS, MetricsLog

SIZES = dict(vocab_size=32, dim=8, layers=1, ff=16)


class BigramMLP(ModelFamily, nn.Module):
    """One hidden layer over the embeddings of the current and the previous token; the state carries the last
    token's embedding (B, 1, D)."""

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
        return f"{config.model}, one hidden layer of {config.ff}"

    @classmethod
    def forward_flops_per_token(cls, config: ModelConfig) -> int:
        return 2 * (2 * config.dim) * config.ff + 2 * config.ff * config.vocab_size

    @classmethod
    def state_tokens(cls, config: ModelConfig) -> int:
        return 1

    def forward(self, tokens: torch.Tensor, state: dict | None = None):
        x = self.embed(tokens)  # (B, T, D)
        previous = x.new_zeros(x.shape[0], 1, x.shape[2]) if state is None else state["previous"]
        pairs = torch.cat([x, torch.cat([previous, x[:, :-1]], dim=1)], dim=-1)  # (B, T, 2D)
        return self.out(F.relu(self.hidden(pairs))), {"previous": x[:, -1:].detach()}

    @torch.no_grad()
    def diagnostics(self, state: dict | None) -> dict:
        return {"hidden_weight_rms": self.hidden.weight.square().mean().sqrt().item(), "note": "a b"}


@pytest.fixture
def bigram(monkeypatch):
    """The family "bigram", registered for one test: the registry is restored after it."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    register_family("bigram", BigramMLP)
    return ModelConfig(model="bigram", **SIZES)


def test_a_registered_family_is_a_model_config_choice_and_builds(bigram):
    assert "bigram" in family_names() and model_class("bigram") is BigramMLP
    assert isinstance(build_model(bigram), BigramMLP)
    args = build_parser().parse_args(["train", "--model", "bigram", "--out", "run"])
    assert args.model == "bigram"


def test_state_rows_and_cat_states_split_a_registered_familys_state(bigram):
    torch.manual_seed(0)
    model = build_model(bigram)
    tokens = torch.randint(0, 32, (4, 6))
    _, state = model(tokens[:, :3])
    with torch.no_grad():
        whole, _ = model(tokens[:, 3:], state)
        halves = [
            model(tokens[rows, 3:], state_rows(model.state_batch_dims, state, rows))
            for rows in (slice(0, 2), slice(2, 4))
        ]
    torch.testing.assert_close(torch.cat([logits for logits, _ in halves]), whole, rtol=0, atol=0)
    joined = cat_states(model.state_batch_dims, [state for _, state in halves])
    assert torch.equal(joined["previous"], model(tokens[:, 3:], state)[1]["previous"])


def test_a_registered_family_trains_with_its_header_line_flops_and_diagnostics(bigram, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = TrainConfig(
        task="text",
        data=str(corpus),
        batch=4,
        segment=8,
        steps=2,
        warmup=0,
        eval_every=0,
        eval_tokens=64,
        log_every=1,
        accumulate=2,
    )
    model_config = ModelConfig(model="bigram", **{**SIZES, "vocab_size": 256})
    trainer = api.make_trainer(model_config, config, tmp_path / "header", torch.device("cpu"))
    assert "bigram, one hidden layer of 16: " in describe(trainer)
    api.train(model_config, config, tmp_path / "run", "cpu", progress=False)
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "train"]
    assert len(rows) == 2 and all(float(row["hidden_weight_rms"]) > 0 and row["note"] == "a b" for row in rows)
    label, config, _ = parse_model_spec("bigram:ff=4", {**SIZES, "heads": 2})
    assert label == "bigram L1" and forward_flops_per_token(config) == 2 * 16 * 4 + 2 * 4 * 32
    assert matters("ff", {"model": "bigram"}) and not matters("span", {"model": "bigram"})


class Undeclared(nn.Module):
    state_batch_dims: dict = {}
    options = ()


class NoFlops(ModelFamily, nn.Module):
    state_batch_dims: dict = {}
    options = ()
    describe = state_tokens = classmethod(lambda cls, config: 1)


class UnknownOption(NoFlops):
    options = ("colour",)
    forward_flops_per_token = classmethod(lambda cls, config: 1)


@pytest.mark.parametrize(
    ("name", "cls", "message"),
    [
        ("undeclared", Undeclared, "'undeclared' must be a class deriving from fbt.models.ModelFamily"),
        ("no-flops", NoFlops, "'no-flops' .NoFlops. does not declare forward_flops_per_token$"),
        ("colour", UnknownOption, "options must be a tuple of ModelConfig fields"),
        ("gpt", UnknownOption, "'gpt' is already registered"),
        ("a:b", UnknownOption, "a model family name is"),
    ],
)
def test_a_family_missing_a_declaration_is_refused_when_registered(monkeypatch, name, cls, message):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    with pytest.raises(FbtError, match=message):
        register_family(name, cls)
    assert family_names() == FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_every_built_in_family_declares_what_the_rest_needs(name):
    cls = model_class(name)  # checks the declarations on first use
    config = ModelConfig(model=name, dim=16, heads=2, ff=32, span=4, context=8)
    assert cls.describe(config).startswith(name) and cls.label(config).startswith(name)
    assert cls.forward_flops_per_token(config) > 0 and cls.state_tokens(config) >= 1


def test_unknown_diagnostics_values_get_columns_and_old_logs_keep_theirs(tmp_path):
    path = tmp_path / "metrics.csv"
    written_before = [*COLUMNS, "memory_rms", "memory_weights"]  # a log of a feedback run
    path.write_text(",".join(written_before) + "\n" + "train,1,8,0.1,0.001,0,5.0,,,,,,,0.5,0.2 0.8\n")
    log = MetricsLog(path)
    log.write("train", 2, 16, 0.2, 1e-3, train_loss=4.0, memory_rms=0.25, memory_weights="0.3 0.7")
    assert path.read_text().splitlines()[0] == ",".join(written_before)  # nothing to add: left as it was
    log.write("valid", 2, 16, 0.3, None, valid_loss=3.5, probe=1.5)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*written_before, "probe"]
    assert [row["memory_weights"] for row in rows] == ["0.2 0.8", "0.3 0.7", ""]
    assert [row["probe"] for row in rows] == ["", "", "1.5"]
