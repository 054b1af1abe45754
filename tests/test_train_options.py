"""The flags of how steps run, end to end through `fbt train`: TensorBoard beside the CSV, the memory and
precision options, what a resume may change, and one-line errors."""

import csv
import json

import pytest

from fbt.cli import main
from fbt.models import ModelConfig, model_class
from fbt.presets import SHAKESPEARE as CORPUS

TINY = [
    "train",
    "--model",
    "feedback",
    "--dim",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--ff",
    "64",
    "--span",
    "8",
    "--batch",
    "4",
    "--segment",
    "16",
    "--warmup",
    "0",
    "--log-every",
    "1",
    "--eval-every",
    "0",
    "--eval-tokens",
    "256",
    "--data",
    str(CORPUS),
    "--no-progress",
]


def csv_rows(run, kind="train"):
    with open(run / "metrics.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["kind"] == kind]


def test_tensorboard_logs_the_csv_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main([*TINY, "--steps", "3", "--tensorboard", "--out", str(run)]) == 0
    events = EventAccumulator(str(run))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("train/loss")}
    assert logged == pytest.approx({int(r["step"]): float(r["train_loss"]) for r in csv_rows(run)}, rel=1e-5)
    assert "valid/loss" in events.Tags()["scalars"]


def test_memory_and_precision_flags_train_and_a_resume_may_change_them(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--checkpoint-activations", "--accumulate", "2", "--precision", "bf16"]
    assert main([*TINY, "--steps", "2", *flags, "--out", str(run), "--json"]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["checkpoint_activations"], saved["accumulate"], saved["precision"]) == (True, 2, "bf16")
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--resume",
                "--steps",
                "4",
                "--precision",
                "fp32",
                "--accumulate",
                "1",
                "--out",
                str(run),
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 4
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "fp32"
    assert [int(r["step"]) for r in csv_rows(run)] == [1, 2, 3, 4]


def test_head_dim_sets_the_attention_width_apart_from_the_model_width(tmp_path):
    run = tmp_path / "run"
    assert main([*TINY, "--steps", "1", "--dim", "30", "--heads", "4", "--head-dim", "8", "--out", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["dim"], saved["heads"], saved["head_dim"]) == (30, 4, 8)
    assert "4 heads of 8" in model_class("feedback").describe(ModelConfig.from_dict(saved))  # the header's line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dim", "30", "--heads", "4"], "dim 30 is not divisible by heads 4; give the head width"),
        (["--head-dim", "-1"], "head_dim must be a positive integer, or 0"),
        (["--accumulate", "3"], "cannot be split into --accumulate 3"),
        (["--accumulate", "0"], "accumulate must be a positive integer"),
        (["--precision", "fp8"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, flags, message):
    code = main([*TINY, "--steps", "2", *flags, "--out", str(tmp_path / "run")]) if "fp8" not in flags else None
    if code is None:
        with pytest.raises(SystemExit):
            main([*TINY, "--steps", "2", *flags, "--out", str(tmp_path / "run")])
    else:
        assert code == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
