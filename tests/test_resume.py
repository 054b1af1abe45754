"""Resume semantics, Ctrl-C and SIGTERM, and runs that stay usable from anywhere."""

import csv
import json
import shutil
import signal

import pytest
import torch
from tiny_runs import signal_after, tiny_configs

from fbt import api, checkpoint
from fbt.cli import main
from fbt.errors import FbtError
from fbt.training.trainer import TrainingInterrupted

CPU = torch.device("cpu")


def train_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["kind"] == "train"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_current_step_and_resuming_equals_a_straight_run(tmp_path, text_file, monkeypatch, signum):
    model_config, train_config = tiny_configs(text_file, steps=8)  # save_every 100: no periodic checkpoint
    api.train(model_config, train_config, tmp_path / "straight", "cpu", progress=False)

    signal_after(monkeypatch, 3, signum)
    with pytest.raises(TrainingInterrupted) as stopped:
        api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    monkeypatch.undo()
    assert stopped.value.step == 3
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000003"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"

    assert api.resume(tmp_path / "run", "cpu", progress=False)["step"] == 8
    straight, resumed = train_rows(tmp_path / "straight"), train_rows(tmp_path / "run")
    assert [row["step"] for row in resumed] == [str(step) for step in range(1, 9)]  # no duplicate rows
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in straight]


def test_the_cli_prints_the_resume_command_and_exits_130(tmp_path, text_file, monkeypatch, capsys):
    signal_after(monkeypatch, 2)
    tiny = ["--dim", "16", "--layers", "1", "--heads", "2", "--ff", "32", "--batch", "2", "--segment", "8"]
    code = main(
        ["train", "--data", str(text_file), *tiny, "--steps", "50", "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert code == 130
    assert f"fbt train --resume --out {tmp_path / 'run'}" in capsys.readouterr().err
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000002"


def test_a_start_that_saved_nothing_is_started_afresh_without_duplicate_rows(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=3)
    early = api.make_trainer(model_config, train_config, tmp_path / "run", CPU)
    early.log.write("train", 1, 32, 0.1, 1e-3, train_loss=5.0)  # logged, then killed before any checkpoint
    with pytest.raises(FbtError, match="holds no checkpoint to resume"):
        api.resume(tmp_path / "run", "cpu", progress=False)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    assert [row["step"] for row in train_rows(tmp_path / "run")] == ["1", "2", "3"]


def test_resume_continues_the_runs_own_plan_and_keeps_the_original_config(tmp_path, text_file, monkeypatch):
    model_config, train_config = tiny_configs(text_file, steps=4)
    signal_after(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted):
        api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    monkeypatch.undo()
    assert api.resume(tmp_path / "run", "cpu", progress=False)["step"] == 4  # the run's 4, not a default
    assert not (tmp_path / "run" / "config.original.json").exists()

    assert api.resume(tmp_path / "run", "cpu", progress=False, steps=6)["step"] == 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 6
    assert json.loads((tmp_path / "run" / "config.original.json").read_text())["train"]["steps"] == 4


def test_resume_refuses_conflicting_settings_and_says_when_there_is_nothing_to_do(tmp_path, text_file, capsys):
    model_config, train_config = tiny_configs(text_file, steps=3)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    run = str(tmp_path / "run")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", run, "--lr", "0.5", "--kv", "per-layer"]) == 1
    error = capsys.readouterr().err.strip()
    assert "--lr 0.5 (the run has 0.003)" in error and "--kv per-layer (the run has shared)" in error
    assert len(error.splitlines()) == 1
    assert main(["train", "--resume", "--out", run, "--preset", "code-exec-feedback-small"]) == 1
    assert "drop --preset" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", run, "--lr", "0.003"]) == 0  # equal to the run's: fine
    assert "nothing to do" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", run, "--steps", "2"]) == 1
    assert "already at step 3" in capsys.readouterr().err


def test_a_resume_that_ends_a_run_early_says_so(tmp_path, text_file, capsys):
    model_config, train_config = tiny_configs(text_file, steps=8, schedule="cosine", time_budget=1e-9)  # 1 step
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--steps", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: --steps 4 ends" in err and "before its planned 8 steps, and its learning-rate schedule" in err


def test_a_time_budget_counts_this_call_only(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=3, time_budget=3600)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    trainer = api.resume_trainer(tmp_path / "run", CPU, {"steps": 5, "time_budget": 3600})
    trainer.elapsed = 7200.0  # the run has trained longer than this call's budget before
    assert trainer.fit(progress=False)["step"] == 5


def test_runs_store_absolute_data_paths_and_evaluate_from_anywhere(tmp_path, text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_config, train_config = tiny_configs("corpus.txt", steps=2)
    api.train(model_config, train_config, "run", "cpu", progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["data"] == str(text_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert api.evaluate_run(tmp_path / "run", "test", device="cpu")["loss"] > 0


def test_data_can_be_repointed_to_an_equal_copy_but_not_to_other_data(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=2)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    moved = tmp_path / "moved.txt"
    shutil.move(text_file, moved)
    with pytest.raises(FbtError, match=r"does not exist \(moved\?\); pass --data"):
        api.evaluate_run(tmp_path / "run", "test", device="cpu")
    with pytest.raises(FbtError, match="pass --data"):
        api.resume(tmp_path / "run", "cpu", progress=False, steps=3)
    shorter = tmp_path / "shorter.txt"
    shorter.write_bytes(moved.read_bytes()[:-400])
    with pytest.raises(FbtError, match="the data now gives"):
        api.resume(tmp_path / "run", "cpu", progress=False, steps=3, data=str(shorter))
    assert api.resume(tmp_path / "run", "cpu", progress=False, steps=3, data=str(moved))["step"] == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["data"] == str(moved)


def test_the_api_resumes_or_overwrites_an_existing_run_by_argument(tmp_path, text_file):
    import dataclasses

    run = tmp_path / "run"
    model_config, train_config = tiny_configs(text_file, steps=2)
    api.train(model_config, train_config, run, "cpu", progress=False)
    with pytest.raises(FbtError, match="pass exists='resume' to continue it or exists='overwrite'"):
        api.train(model_config, train_config, run, "cpu", progress=False)
    longer = dataclasses.replace(train_config, steps=4)
    assert api.train(model_config, longer, run, "cpu", progress=False, exists="resume")["step"] == 4
    assert [row["step"] for row in train_rows(run)] == ["1", "2", "3", "4"]
    with pytest.raises(FbtError, match=r"lr=0\.5 \(the run has 0\.003\)"):
        api.train(model_config, dataclasses.replace(longer, lr=0.5), run, "cpu", progress=False, exists="resume")
    (run / "notes.txt").write_text("mine")
    assert api.train(model_config, train_config, run, "cpu", progress=False, exists="overwrite")["step"] == 2
    assert [row["step"] for row in train_rows(run)] == ["1", "2"]  # a new log, not appended to the old one
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(FbtError, match="exists must be one of"):
        api.train(model_config, train_config, run, "cpu", progress=False, exists="append")
