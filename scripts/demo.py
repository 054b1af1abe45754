"""`make demo`: the paper's gap on two CPU cores, then a small Shakespeare model.

Writes the CPU code-exec dataset (presets.CPU_CODE_EXEC), trains the Feedback Transformer and a Transformer-XL
with twice its layers on the same tokens (two processes, one thread each), evaluates both on the test split
with `fbt eval`, prints them beside the two heuristics, writes runs/demo/accuracy.png and runs/demo/summary.json,
shows the feedback model's answers on a test program, and samples from a Feedback model trained briefly on
tiny Shakespeare. Everything lands in runs/demo/; a second `make demo` starts afresh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fbt import api
from fbt.data.code_exec import ProgramSpec, generate_dataset, load_code_exec_split
from fbt.data.code_exec_heuristics import HEURISTIC_LABELS, heuristic_accuracies
from fbt.models import ModelConfig
from fbt.plots import plot_accuracy_curves
from fbt.presets import CPU_CODE_EXEC, get_preset, preset_flags
from fbt.training.config import TrainConfig

ROOT = Path("runs/demo")
DATA = ROOT / "code-exec-cpu"
PAIR = {"feedback": "code-exec-feedback-cpu", "transformer-xl": "code-exec-xl-cpu"}
TEXT_SECONDS = 60


def fbt(*args: str) -> list[str]:
    return [sys.executable, "-m", "fbt.cli", *args]


def train_pair() -> dict[str, float]:
    """Both presets at once, one thread each; returns the wall-clock seconds of each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started, processes = time.perf_counter(), {}
    for model, preset in PAIR.items():
        command = fbt("train", "--preset", preset, "--data", str(DATA), "--out", str(ROOT / model), "--threads", "1")
        log = open(ROOT / f"{model}.log", "w")
        processes[model] = (
            subprocess.Popen([*command, "--no-progress"], stdout=log, stderr=subprocess.STDOUT, env=env),
            log,
        )
        print(f"$ {' '.join(command[2:])}")
    seconds = {}
    for model, (process, log) in processes.items():
        if process.wait():
            log.close()
            sys.exit(f"training {model} failed:\n{(ROOT / f'{model}.log').read_text()[-2000:]}")
        seconds[model] = time.perf_counter() - started
        log.close()
    return seconds


def evaluate(model: str) -> dict:
    command = fbt("eval", str(ROOT / model), "--data", str(DATA), "--split", "test", "--json")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    spec = ProgramSpec(**CPU_CODE_EXEC["generator"])
    print(f"== writing the CPU code-exec dataset: {spec.to_dict()}")
    generate_dataset(DATA, spec, sizes=CPU_CODE_EXEC["sizes"], seed=CPU_CODE_EXEC["seed"])
    layers = {model: get_preset(preset)["model"]["layers"] for model, preset in PAIR.items()}
    print(
        f"\n== training feedback ({layers['feedback']} layers) and transformer-xl ({layers['transformer-xl']} "
        "layers) on the same tokens, side by side"
    )
    seconds = train_pair()
    results = {model: evaluate(model) for model in PAIR}
    heuristics = heuristic_accuracies(*load_code_exec_split(DATA, "test"))

    print("\n== test accuracy on print answers")
    print(f"{'':38} {'accuracy':>9} {'minutes':>8}")
    for model, result in results.items():
        print(f"{f'{model}, {layers[model]} layers':38} {result['accuracy']:9.1%} {seconds[model] / 60:8.1f}")
    for name, value in heuristics.items():
        print(f"{HEURISTIC_LABELS[name]:38} {value:9.1%}")

    curves = {f"{model}, {layers[model]} layers": ROOT / model / "metrics.csv" for model in PAIR}
    plot_accuracy_curves(curves, heuristics, ROOT / "accuracy.png", title=f"code-exec {spec.to_dict()}")
    summary = {
        **{model: {"accuracy": result["accuracy"], "run": str(ROOT / model)} for model, result in results.items()},
        "heuristics": heuristics,
        "test_data": str(DATA),
    }
    (ROOT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {ROOT / 'accuracy.png'} and {ROOT / 'summary.json'}")

    program = (DATA / "test.txt").read_text().splitlines()[0]
    labels = (DATA / "test.txt.labels").read_text().splitlines()[0].split()
    print("\n== the feedback model answers a test program; [n] is its answer at each print:")
    print(api.generate_from_run(ROOT / "feedback", program, max_new_tokens=0, device="cpu"))
    print("true answers:", " ".join(label for label in labels if label != "_"))

    print(f"\n== a Feedback model trained for {TEXT_SECONDS} s on tiny Shakespeare continues a prompt:")
    preset = get_preset("shakespeare-feedback-small")
    train_config = TrainConfig.from_dict({**preset["train"], "time_budget": TEXT_SECONDS, "eval_tokens": 8192})
    api.train(ModelConfig.from_dict(preset["model"]), train_config, ROOT / "shakespeare", device="cpu")
    prompt = "ROMEO:\n"
    text = api.generate_from_run(ROOT / "shakespeare", prompt, 300, temperature=0.8, top_k=40, device="cpu")
    print(text)
    print("\nthe same runs by hand:", *(preset_flags(name) for name in PAIR.values()), sep="\n  ")


if __name__ == "__main__":
    main()
