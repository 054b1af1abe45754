"""Run discovery, summaries and comparison plots over real (tiny) training runs."""

from __future__ import annotations

import json
import random

import pytest

from fbt import runs
from fbt.api import train
from fbt.errors import FbtError
from fbt.formatting import format_count
from fbt.models import ModelConfig, build_model
from fbt.plots import plot_runs, stage_switches
from fbt.training.config import TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_MODELS = {
    "a": ModelConfig(model="lstm", dim=16, layers=1),
    "b": ModelConfig(model="feedback", dim=16, layers=2, heads=2, ff=32, span=4),
}
STEPS = 6


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """runs/a (lstm) and runs/b (feedback), both finished, beside a folder that holds no run."""
    root = tmp_path_factory.mktemp("runs")
    rng = random.Random(0)
    corpus = root.parent / "corpus.txt"
    corpus.write_text(" ".join(rng.choice(["to", "be", "or", "not", "question", "\n"]) for _ in range(1500)))
    for name, model_config in TINY_MODELS.items():
        train_config = TrainConfig(
            task="text",
            data=str(corpus),
            steps=STEPS,
            batch=2,
            segment=8,
            log_every=1,
            eval_every=3,
            eval_tokens=0,
            warmup=1,
        )
        train(model_config, train_config, out=root / name, device="cpu", progress=False)
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a run")
    return root


def parameter_count(model_config: ModelConfig) -> int:
    return sum(p.numel() for p in build_model(model_config).parameters())


def test_find_runs_lists_each_finished_run_with_its_size_and_progress(run_root):
    found = runs.find_runs(run_root)
    assert [run.path.name for run in found] == ["a", "b"]
    for run, (name, model_config) in zip(found, TINY_MODELS.items()):
        assert run.model == model_config.model
        assert run.layers == model_config.layers
        assert run.task == "text"
        assert (run.step, run.steps) == (STEPS, STEPS)
        assert run.tokens == STEPS * 2 * 8
        assert run.parameters == parameter_count(model_config), name
        assert run.status == "complete"
        assert run.best_valid_name == "valid_bits_per_byte"
        _, valid_rows = runs.read_metrics(run.path)
        assert run.best_valid == min(row["valid_bits_per_byte"] for row in valid_rows)


def test_find_runs_on_a_run_directory_returns_that_run_and_skips_checkpoints(run_root):
    assert [run.path for run in runs.find_runs(run_root / "a")] == [run_root / "a"]
    assert runs.find_runs(run_root / "a" / "checkpoints") == []
    assert runs.find_runs(run_root / "notes") == []


def test_read_metrics_splits_train_and_valid_rows_with_numbers_parsed(run_root):
    train_rows, valid_rows = runs.read_metrics(run_root / "a")
    assert [row["step"] for row in train_rows] == list(range(1, STEPS + 1))
    assert all(isinstance(row["train_loss"], float) and "valid_loss" not in row for row in train_rows)
    assert [row["step"] for row in valid_rows] == [3, STEPS]  # one periodic, one final
    assert all(0 < row["valid_bits_per_byte"] < 10 for row in valid_rows)


def test_read_metrics_uses_the_kind_column_when_present(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": {"model": "gpt"}, "train": {"task": "text"}}))
    (run_dir / "metrics.csv").write_text(
        "kind,step,tokens,lr,train_loss,valid_loss,memory_weights\n"
        "train,1,16,0.001,5.5,,0.25 0.75\n"
        "valid,1,16,,,5.25,\n"
    )
    train_rows, valid_rows = runs.read_metrics(run_dir)
    assert train_rows == [
        {"kind": "train", "step": 1, "tokens": 16, "lr": 0.001, "train_loss": 5.5, "memory_weights": "0.25 0.75"}
    ]
    assert valid_rows == [{"kind": "valid", "step": 1, "tokens": 16, "valid_loss": 5.25}]


def test_a_run_without_checkpoint_is_listed_as_such(tmp_path):
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    config = {"model": ModelConfig(model="gpt", layers=3).to_dict(), "train": TrainConfig(steps=50).to_dict()}
    (run_dir / "config.json").write_text(json.dumps(config))
    (info,) = runs.find_runs(tmp_path)
    assert (info.status, info.parameters, info.step, info.steps, info.layers) == ("no checkpoint", None, 0, 50, 3)
    assert "0/50" in runs.format_runs_table([info])


@pytest.mark.parametrize(
    "summary, status",
    [(None, "partial"), ({"status": "interrupted", "step": 4}, "interrupted"), ({"step": 4}, "stopped")],
)
def test_status_of_a_run_that_ended_early(summary, status):
    assert runs.run_status(True, 4, 10, summary) == status
    assert runs.run_status(True, 10, 10, summary) == "complete"


def test_a_summary_from_an_earlier_step_does_not_name_the_status():
    assert runs.run_status(True, 8, 10, {"status": "stopped", "step": 4}) == "partial"


def test_format_runs_table_lines_up_one_row_per_run(run_root):
    table = runs.format_runs_table(runs.find_runs(run_root))
    header, *rows = table.splitlines()
    assert header.split()[:5] == ["run", "task", "model", "layers", "params"]
    assert len(rows) == 2
    assert str(run_root / "a") in rows[0] and "lstm" in rows[0] and f"{STEPS}/{STEPS}" in rows[0]
    assert str(run_root / "b") in rows[1] and "feedback" in rows[1] and rows[1].rstrip().endswith("complete")
    assert " bpb" in rows[0]
    assert header.index("status") == rows[0].index("complete")  # columns line up


def test_counts_and_metrics_are_written_for_people():
    assert format_count(1_234_567) == "1.2M"
    assert format_count(85_300) == "85.3K"
    assert format_count(2_560_000, decimals=2) == "2.56M"
    assert format_count(512) == "512"
    assert runs.format_valid(0.9905, "valid_accuracy") == "99.05% acc"
    assert runs.format_valid(1.7123, "valid_bits_per_byte") == "1.712 bpb"
    assert runs.format_valid(None, "valid_accuracy") == "-"


def test_show_run_returns_config_and_info_as_json(run_root):
    shown = runs.show_run(run_root / "b")
    assert shown["run"] == str(run_root / "b")
    assert shown["config"]["model"]["model"] == "feedback"
    assert shown["config"]["train"]["steps"] == STEPS
    assert shown["info"]["status"] == "complete"
    assert shown["info"]["path"] == str(run_root / "b")
    json.dumps(shown)  # plain JSON types only


def test_missing_or_foreign_paths_raise_a_clear_error(tmp_path, run_root):
    with pytest.raises(FbtError, match="no such run directory"):
        runs.run_info(tmp_path / "missing")
    with pytest.raises(FbtError, match="no run in"):
        runs.run_info(run_root / "notes")
    with pytest.raises(FbtError, match="no such directory"):
        runs.find_runs(tmp_path / "missing")


def test_a_corrupt_config_is_named(tmp_path):
    run_dir = tmp_path / "broken"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(FbtError, match="config.json is corrupt"):
        runs.run_info(run_dir)
    with pytest.raises(FbtError, match="config.json is corrupt"):
        runs.find_runs(tmp_path)


@pytest.mark.parametrize("x", ["tokens", "elapsed_s"])
def test_plot_runs_writes_a_png_of_both_runs(run_root, tmp_path, x):
    out = plot_runs([run_root / "a", str(run_root / "b")], tmp_path / "figures" / "runs.png", x=x)
    assert out == tmp_path / "figures" / "runs.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def png_height(path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")  # IHDR: width, then height


def test_plot_runs_moves_a_long_legend_below_the_panels(run_root, tmp_path):
    two = plot_runs([run_root / "a", run_root / "b"], tmp_path / "two.png")
    five = plot_runs([run_root / "a", run_root / "b"] * 2 + [run_root / "a"], tmp_path / "five.png")
    assert png_height(five) > png_height(two) * 1.15  # the room the legends below take


def test_stage_switches_are_where_each_later_stage_first_logs():
    rows = [
        {"kind": "train", "tokens": 100, "stage": 0},
        {"kind": "valid", "tokens": 200, "stage": 1},
        {"kind": "train", "tokens": 150, "stage": 1},
        {"kind": "train", "tokens": 400, "stage": 2},
        {"kind": "train", "tokens": 500, "stage": ""},
    ]
    assert stage_switches(rows, "tokens") == [150, 400]
    assert stage_switches([{"tokens": 1, "stage": 0}], "tokens") == []


def test_plot_runs_refuses_bad_requests(run_root, tmp_path):
    with pytest.raises(FbtError, match="unknown x axis"):
        plot_runs([run_root / "a"], tmp_path / "out.png", x="step")
    with pytest.raises(FbtError, match="no runs"):
        plot_runs([], tmp_path / "out.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model": {"model": "gpt"}, "train": {"task": "text"}}))
    with pytest.raises(FbtError, match="no metrics"):
        plot_runs([empty], tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
