"""What a new user sees: versions, defaults in --help, presets, headers, run listings, plots, generation."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_runs import tiny_configs, write_corpus

from fbt import __version__, api
from fbt.cli import main
from fbt.data.code_exec import ProgramSpec, generate_dataset
from fbt.formatting import format_duration
from fbt.models import ModelConfig, build_model
from fbt.presets import PRESETS
from fbt.progress import PlainProgress
from fbt.sampling import generate
from fbt.training import trainer as trainer_module

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--dim", "16", "--layers", "1", "--heads", "2", "--ff", "32", "--batch", "2", "--segment", "8"]


def run_cli(capsys, *args):
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


HELP_PROBE = """
import sys
from fbt.cli import main
from fbt.commands import COMMANDS
for argv in (["--help"], *([command.NAME, "--help"] for command in COMMANDS), ["rl", "train", "--help"],
             ["analyze", "hessian", "--help"], ["data", "code-exec", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(name for name in ("torch", "numpy", "safetensors", "matplotlib", "transformers") if name in sys.modules))
"""


def test_help_imports_no_torch():
    # `fbt --help` and every command's --help read names and defaults only: loading torch took over a second.
    probe = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, check=True)
    assert probe.stdout.splitlines()[-1] == "[]"


def test_version_and_defaults_in_help(capsys):
    assert run_cli(capsys, "--version")[:2] == (0, f"fbt {__version__}\n")
    help_text = " ".join(run_cli(capsys, "train", "--help")[1].split())  # argparse wraps lines
    assert "peak learning rate (default: the preset's, else 0.001)" in help_text
    assert "linear warm-up steps (default: the preset's, else 100;" in help_text
    assert "(default: test)" in run_cli(capsys, "eval", "--help")[1]
    assert "(default: 200)" in run_cli(capsys, "generate", "--help")[1]


def test_presets_show_steps_data_time_and_command(capsys):
    code, out, _ = run_cli(capsys, "presets", "--json")
    listing = json.loads(out)
    assert code == 0 and list(listing) == list(PRESETS)
    for name, entry in listing.items():
        assert entry["steps"] == PRESETS[name]["train"]["steps"] and entry["expected_time"]
        assert entry["command"].endswith(f"fbt train --preset {name} --out runs/{name}")
    assert "about" in run_cli(capsys, "presets")[1]
    # A curriculum preset writes every stage's dataset, then the task's, then trains.
    for name in ("code-exec-3var-feedback-cpu", "code-exec-5var-xl-cpu"):
        steps = listing[name]["command"].split(" && ")
        stages = PRESETS[name]["train"]["curriculum"].split(",")
        assert [step.split("--out ")[-1] for step in steps[:-1]] == [*stages, PRESETS[name]["train"]["data"]]


def test_a_shrunk_preset_scales_its_warmup_and_an_explicit_one_warns(tmp_path, capsys):
    data = generate_dataset(tmp_path / "data", ProgramSpec(statements=5), sizes=(20, 4, 4))
    common = ["train", "--data", data, *TINY, "--steps", "10", "--no-progress"]
    code, _, err = run_cli(capsys, *common, "--preset", "code-exec-feedback-small", "--out", tmp_path / "a")
    assert code == 0 and "using 1 (10%)" in err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["warmup"] == 1
    code, _, err = run_cli(
        capsys,
        *common,
        "--preset",
        "code-exec-3var-feedback-cpu",
        "--curriculum",
        "",
        "--batch",
        "4",
        "--out",
        tmp_path / "c",
    )
    assert code == 0 and "decay of 2000 steps is longer than --steps 10: using 1 (10%)" in err, err
    assert json.loads((tmp_path / "c" / "config.json").read_text())["train"]["decay_steps"] == 1
    code, _, err = run_cli(capsys, *common, "--warmup", "40", "--out", tmp_path / "b")
    assert code == 0 and "never reaches its peak" in err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["warmup"] == 40


def test_a_code_exec_directory_implies_the_task_and_data_is_never_overwritten(tmp_path, capsys):
    data = generate_dataset(tmp_path / "data", ProgramSpec(statements=5), sizes=(20, 4, 4))
    assert (
        run_cli(capsys, "train", "--data", data, *TINY, "--steps", "2", "--out", tmp_path / "r", "--no-progress")[0]
        == 0
    )
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["task"] == "code-exec"
    before = (data / "train.txt").read_text()
    code, _, err = run_cli(capsys, "data", "code-exec", "--statements", "7", "--out", data)
    assert code == 1 and "--force" in err and (data / "train.txt").read_text() == before
    assert (
        run_cli(capsys, "data", "code-exec", "--statements", "7", "--train-size", "3", "--out", data, "--force")[0] == 0
    )
    assert (data / "train.txt").read_text() != before


def test_training_prints_a_header_with_the_parameter_count_and_the_next_commands(tmp_path, text_file, capsys):
    code, _, err = run_cli(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", tmp_path / "r")
    model = api.load_run(tmp_path / "r", "cpu")[0]
    parameters = sum(p.numel() for p in model.parameters())
    assert code == 0 and f"{parameters:,} parameters" in err and "2 streams x 8 = 16 per step" in err
    assert f"fbt eval {tmp_path / 'r'} --split test" in err and "fbt plot" in err


def test_training_logged_to_a_file_prints_plain_progress_lines_and_keeps_stdout_for_results(
    tmp_path, text_file, capsys, monkeypatch
):
    # capsys is not a terminal, as a log file is not: whole lines, no carriage returns, the results on stdout.
    monkeypatch.setattr(trainer_module, "ETA_AFTER_S", 0.0)  # the estimate of the time left, after one step
    code, out, err = run_cli(
        capsys, "train", "--data", text_file, *TINY, "--steps", "20", "--eval-every", "10", "--out", tmp_path / "r"
    )
    progress = [line for line in err.splitlines() if line.startswith("train: ")]
    assert code == 0 and "\r" not in err
    assert [line.split(" step ")[0] for line in progress] == [f"train: {n}/20" for n in range(2, 21, 2)]
    assert "(50%)" in progress[4] and "left" in progress[4] and "loss " in progress[4]
    assert "step 10: valid" in err and "valid" not in out.replace("valid_", "")
    assert "step 1: " in err and " steps/s over the first 0 s; about " in err and "to step 20, then a full" in err


def test_plain_progress_writes_a_line_per_tenth_and_transient_work_only_when_slow(capsys):
    with PlainProgress(total=30, desc="work", unit="item") as bar:
        for _ in range(30):
            bar.update(1)
            bar.set_postfix(score="0.5")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("work: 30/30 item (100%)") and lines[-1].endswith("score 0.5")
    assert "left" in lines[0] and "left" not in lines[-1]
    for _ in PlainProgress(range(30), total=30, tenths=False):
        pass
    assert capsys.readouterr().err == ""
    for _ in PlainProgress(range(3), total=3, tenths=False, every=0.0):
        pass
    assert len(capsys.readouterr().err.splitlines()) == 3
    assert [format_duration(s) for s in (5, 125, 3 * 3600 + 27 * 60, 2 * 86400 + 4 * 3600)] == [
        "5s",
        "2m 05s",
        "3h 27m",
        "2d 04h",
    ]


def test_the_summary_reports_a_mean_training_loss_whole_counts_and_the_threads(tmp_path, text_file, capsys):
    model_config, train_config = tiny_configs(text_file, steps=5)
    result = api.train(model_config, train_config, tmp_path / "r", "cpu", progress=False)
    with open(tmp_path / "r" / "metrics.csv") as handle:
        losses = [float(line.split(",")[6]) for line in handle if line.startswith("train,")]
    assert result["train_loss"] == pytest.approx(sum(losses) / 5) and result["train_loss_steps"] == 5
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["device"] == "cpu" and summary["threads"] == torch.get_num_threads()
    main(["eval", str(tmp_path / "r")])
    assert "scored_tokens:" in (out := capsys.readouterr().out) and ".0000" not in out.split("scored_tokens:")[1]


def test_runs_show_and_plot_on_a_directory_of_runs(tmp_path, text_file, capsys):
    for name, model in (("fb", "feedback"), ("xl", "transformer-xl")):
        api.train(
            *tiny_configs(text_file, model, steps=3, eval_every=2), tmp_path / "runs" / name, "cpu", progress=False
        )
    code, out, _ = run_cli(capsys, "runs", tmp_path / "runs")
    assert code == 0 and "fb" in out and "transformer-xl" in out and out.count("complete") == 2
    code, out, _ = run_cli(capsys, "runs", tmp_path / "runs", "--json")
    assert [run["model"] for run in json.loads(out)] == ["feedback", "transformer-xl"]
    (tmp_path / "empty").mkdir()
    assert "no runs under" in run_cli(capsys, "runs", tmp_path / "empty")[1]
    code, out, _ = run_cli(capsys, "show", tmp_path / "runs" / "fb", "--json")
    assert json.loads(out)["summary"]["step"] == 3
    # For people: the family's description and the settings that differ from the defaults and apply to the run.
    code, out, _ = run_cli(capsys, "show", tmp_path / "runs" / "fb")
    assert code == 0 and "complete: 3 of 3 steps" in out and "feedback, 2 layers, d16, 2 heads" in out
    assert "steps 3" in out and "decoder" not in out and "tokenizer_vocab" not in out and "{" not in out
    # An evaluation of the test split is recorded and listed beside the validation.
    code, out, _ = run_cli(capsys, "eval", tmp_path / "runs" / "xl", "--json")
    bpb = json.loads(out.splitlines()[-1])["bits_per_byte"]
    code, out, _ = run_cli(capsys, "runs", tmp_path / "runs")
    assert out.splitlines()[0].split()[-2:] == ["test", "status"] and f"{bpb:.3f} bpb  complete" in out
    other = write_corpus(tmp_path / "other.txt")
    code, out, _ = run_cli(capsys, "eval", tmp_path / "runs" / "xl", "--data", other, "--split", "valid")
    assert "valid" not in json.loads((tmp_path / "runs" / "xl" / "evaluations.json").read_text())  # other data
    code, out, _ = run_cli(
        capsys, "eval", tmp_path / "runs" / "xl", "--data", os.path.relpath(text_file), "--split", "valid"
    )
    assert "valid" in json.loads(
        (tmp_path / "runs" / "xl" / "evaluations.json").read_text()
    )  # its own, named otherwise
    png = tmp_path / "curves.png"
    assert run_cli(capsys, "plot", tmp_path / "runs" / "fb", tmp_path / "runs" / "xl", "--out", png)[0] == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_text_generation_shows_the_prompt_and_samples_without_one(tmp_path, text_file, capsys):
    api.train(*tiny_configs(text_file, "gpt", steps=2), tmp_path / "r", "cpu", progress=False)
    long_prompt = "to be or not " * 5  # longer than the GPT's 16-token context: read in windows
    code, out, _ = run_cli(
        capsys, "generate", tmp_path / "r", "--prompt", long_prompt, "--max-new-tokens", "5", "--json"
    )
    assert code == 0 and json.loads(out)["output"].startswith(long_prompt)
    code, out, _ = run_cli(capsys, "generate", tmp_path / "r", "--max-new-tokens", "5", "--json")
    assert code == 0 and json.loads(out)["output"]


def test_a_long_prompt_gives_a_gpt_the_last_context_tokens():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="gpt", vocab_size=11, dim=8, layers=1, heads=2, ff=16, context=6)).eval()
    prompt = torch.randint(0, 11, (2, 15))
    greedy = generate(model, prompt, 3, temperature=0)
    assert torch.equal(greedy, generate(model, prompt[:, -6:], 3, temperature=0))
