"""The `fbt` command end to end, and its answers to bad input: one line on stderr, non-zero exit."""

import json
import subprocess
import sys

import pytest

from fbt.cli import main
from fbt.data.code_exec import load_code_exec_split
from fbt.data.code_exec_heuristics import heuristic_accuracies

TINY = [
    "--dim",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--ff",
    "32",
    "--span",
    "8",
    "--segment",
    "16",
    "--batch",
    "2",
]


def fbt(*args):
    """Run the CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "fbt.cli", *map(str, args)], capture_output=True, text=True)


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    data, run = root / "data", root / "run"
    sizes = ["--train-size", "30", "--valid-size", "4", "--test-size", "4", "--statements", "20"]
    assert main(["data", "code-exec", "--variables", "3", "--out", str(data), *sizes]) == 0
    args = ["train", "--task", "code-exec", "--data", data, "--model", "feedback", *TINY, "--steps", "3"]
    assert main([*map(str, args), "--out", str(run), "--no-progress"]) == 0
    return data, run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    corpus = root / "corpus.txt"
    corpus.write_bytes(bytes(range(256)) * 8)
    run = root / "run"
    args = [
        "train",
        "--task",
        "text",
        "--data",
        corpus,
        "--model",
        "gpt",
        *TINY,
        "--steps",
        "2",
        "--out",
        run,
    ]
    assert main([*map(str, args), "--no-progress"]) == 0
    return corpus, run


def test_code_exec_train_eval_generate(code_run, capsys):
    data, run = code_run
    assert sorted(p.name for p in data.iterdir()) == [
        "generator.json",
        "test.txt",
        "test.txt.labels",
        "train.txt",
        "train.txt.labels",
        "valid.txt",
        "valid.txt.labels",
    ]
    assert main(["eval", str(run), "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert set(result) >= {"accuracy", "loss", "split"} and 0 <= result["accuracy"] <= 1
    floors = heuristic_accuracies(*load_code_exec_split(data, "test"))  # printed beside the model's accuracy
    assert {result["floor_last_print"], result["floor_count_ignoring_ifs"]} == set(floors.values())
    assert main(["generate", str(run), "--prompt", "x = 3 ; print x ;", "--json"]) == 0
    output = last_json(capsys.readouterr().out)["output"]
    assert output.startswith("x = 3 ; print x ; [") and output.endswith("]")


def test_text_generate_is_seeded(text_run, capsys):
    _, run = text_run
    outputs = []
    for _ in range(2):
        assert main(["generate", str(run), "--prompt", "ab", "--max-new-tokens", "7", "--seed", "3", "--json"]) == 0
        outputs.append(last_json(capsys.readouterr().out)["output"])
    assert outputs[0] == outputs[1]
    assert main(["eval", str(run), "--split", "valid", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["bits_per_byte"] > 0


def test_train_json_is_the_last_line_and_flags_override_the_preset(tmp_path, code_run, capsys):
    data, _ = code_run
    out = tmp_path / "run"
    args = [
        "train",
        "--preset",
        "code-exec-feedback-small",
        "--data",
        data,
        "--layers",
        "1",
        "--dim",
        "16",
        "--heads",
        "2",
        "--ff",
        "32",
        "--steps",
        "2",
        "--out",
        out,
        "--json",
        "--no-progress",
    ]
    assert main(list(map(str, args))) == 0
    assert last_json(capsys.readouterr().out)["step"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["layers"] == 1 and config["model"]["span"] == 8  # flag and preset
    assert config["train"]["task"] == "code-exec"


def bad(capsys, *args):
    """Run the CLI in-process on bad input; return its single stderr line."""
    try:
        code = main(list(map(str, args)))
    except SystemExit as exit:  # argparse usage errors
        code = exit.code
    assert code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, code_run, text_run, capsys):
    data, code = code_run
    corpus, text = text_run
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    train = ["train", "--out", tmp_path / "new", "--steps", "1", "--no-progress"]
    assert "no such" in bad(capsys, *train, "--task", "text", "--data", tmp_path / "missing.txt").lower()
    assert "empty" in bad(capsys, *train, "--task", "text", "--data", empty).lower()
    assert "invalid choice" in bad(capsys, *train, "--model", "nonsense")
    assert "unknown preset" in bad(capsys, *train, "--preset", "nonsense")
    assert "divisible" in bad(capsys, *train, "--task", "text", "--data", corpus, "--dim", "10", "--heads", "3")
    assert "span" in bad(capsys, *train, "--task", "text", "--data", corpus, "--span", "0")
    assert "segment" in bad(capsys, *train, "--task", "text", "--data", corpus, "--segment", "0")
    assert "threads" in bad(capsys, *train, "--task", "text", "--data", corpus, "--threads", "0")
    assert "vocabulary" in bad(capsys, "generate", code, "--prompt", "x = 3 ; print w ;")
    assert "answers a program" in bad(capsys, "generate", code, "--prompt", "")
    assert "no such" in bad(capsys, "eval", tmp_path / "nowhere")
    assert "already holds a run" in bad(capsys, "train", "--out", code, "--task", "code-exec", "--data", data)
    assert "top_p" in bad(capsys, "generate", text, "--prompt", "ab", "--top-p", "0")
    assert "top_p" in bad(capsys, "generate", text, "--prompt", "ab", "--top-p", "-0.5")
    assert "temperature" in bad(capsys, "generate", text, "--prompt", "ab", "--temperature", "-1")
    assert "top_p" in bad(capsys, "generate", text, "--top-p", "1.5")
    assert "top_k" in bad(capsys, "generate", text, "--top-k", "-1")
    assert "max_new_tokens" in bad(capsys, "generate", text, "--max-new-tokens", "-5")
    assert "(pass --task code-exec)" in bad(capsys, *train, "--task", "text", "--data", data)
    assert "is a file" in bad(capsys, *train, "--task", "code-exec", "--data", corpus)
    assert "--force" in bad(capsys, "data", "code-exec", "--out", data)
    assert "max_value" in bad(capsys, "data", "code-exec", "--max-value", "1", "--out", tmp_path / "d")
    assert "weight" in bad(capsys, "data", "code-exec", "--weights", "0", "1", "1", "1", "1", "--out", tmp_path / "d")
    assert "unknown init" in bad(capsys, *train, "--task", "text", "--data", corpus, "--init", "nonsense").replace(
        "invalid choice", "unknown init"
    )


def test_eval_reads_any_dataset_in_the_official_format(tmp_path, code_run, capsys):
    """A dataset written elsewhere (here by hand, as the authors' generator writes it: no generator.json)."""
    _, run = code_run
    (tmp_path / "test.txt").write_text("x = 3 ; x ++ ; print x ; END\ny = 1 ; print y ; END\n")
    (tmp_path / "test.txt.labels").write_text("_ _ _ _ _ _ _ _ _ 4 _\n_ _ _ _ _ _ 1 _\n")
    assert main(["eval", str(run), "--data", str(tmp_path), "--split", "test", "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["split"] == "test" and result["accuracy"] in (0.0, 0.5, 1.0)
    assert main(["eval", str(run), "--data", str(tmp_path), "--split", "test", "--breakdown"]) == 0
    shown = capsys.readouterr().out
    assert "accuracy by statements since the printed variable last changed:" in shown
    assert "      1" in shown and "2 examples" in shown  # both prints follow the change of their variable


def test_corrupt_checkpoint_in_a_fresh_process_is_one_line_without_traceback(code_run):
    _, code = code_run
    weights = sorted((code / "checkpoints").glob("step-*"))[-1] / "model.safetensors"
    saved = weights.read_bytes()
    try:
        weights.write_bytes(saved[: len(saved) // 2])
        done = fbt("eval", code)
    finally:
        weights.write_bytes(saved)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "corrupt or truncated" in done.stderr


def test_every_train_flag_that_names_a_config_field_reaches_the_config():
    """A flag missing from MODEL_FLAGS / TRAIN_FLAGS would be parsed and then silently dropped."""
    import argparse
    import dataclasses

    from fbt.commands import train
    from fbt.commands.train_settings import MODEL_FLAGS, TRAIN_FLAGS
    from fbt.models import ModelConfig
    from fbt.training.config import TrainConfig

    subparsers = argparse.ArgumentParser().add_subparsers()
    train.add_parser(subparsers)
    destinations = {action.dest for action in subparsers.choices["train"]._actions}
    fields = {f.name for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
    assert sorted(destinations & fields) == sorted({*MODEL_FLAGS, *TRAIN_FLAGS})
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= destinations
