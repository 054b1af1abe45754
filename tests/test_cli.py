"""The `fbt` command end to end, and its answers to bad input: one line on stderr, non-zero exit."""

import json
import subprocess
import sys

import pytest

from fbt.cli import main

TINY = ["--dim", "16", "--layers", "1", "--heads", "2", "--ff", "32", "--span", "8", "--segment", "16", "--batch", "2"]


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
    args = ["train", "--task", "text", "--data", corpus, "--model", "gpt", *TINY, "--steps", "2", "--out", run]
    assert main([*map(str, args), "--no-progress"]) == 0
    return corpus, run


def test_code_exec_train_eval_generate(code_run, capsys):
    data, run = code_run
    assert sorted(p.name for p in data.iterdir()) == [
        "test.txt", "test.txt.labels", "train.txt", "train.txt.labels", "valid.txt", "valid.txt.labels",
    ]  # fmt: skip
    assert main(["eval", str(run), "--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert set(result) >= {"accuracy", "loss", "split"} and 0 <= result["accuracy"] <= 1
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


def test_train_json_is_the_last_line_and_flags_override_the_preset(tmp_path, code_run):
    data, _ = code_run
    out = tmp_path / "run"
    done = fbt("train", "--preset", "code-exec-feedback-small", "--data", data, "--layers", "1", "--dim", "16",
               "--heads", "2", "--ff", "32", "--steps", "2", "--out", out, "--json", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["step"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["layers"] == 1 and config["model"]["span"] == 64  # flag and preset
    assert config["train"]["task"] == "code-exec"


def bad(*args):
    done = fbt(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, code_run, text_run):
    data, code = code_run
    corpus, text = text_run
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    train = ["train", "--out", tmp_path / "new", "--steps", "1"]
    assert "no such" in bad(*train, "--task", "text", "--data", tmp_path / "missing.txt").lower()
    assert "empty" in bad(*train, "--task", "text", "--data", empty).lower()
    assert "invalid choice" in bad(*train, "--model", "nonsense")
    assert "unknown preset" in bad(*train, "--preset", "nonsense")
    assert "divisible" in bad(*train, "--task", "text", "--data", corpus, "--dim", "10", "--heads", "3")
    assert "span" in bad(*train, "--task", "text", "--data", corpus, "--span", "0")
    assert "segment" in bad(*train, "--task", "text", "--data", corpus, "--segment", "0")
    assert "vocabulary" in bad("generate", code, "--prompt", "x = 3 ; print w ;")
    assert "no such" in bad("eval", tmp_path / "nowhere")
    weights = sorted((code / "checkpoints").glob("step-*"))[-1] / "model.safetensors"
    saved = weights.read_bytes()
    try:
        weights.write_bytes(saved[: len(saved) // 2])
        assert "corrupt or truncated" in bad("eval", code)
    finally:
        weights.write_bytes(saved)
