"""`make demo`: a small Feedback Transformer and a same-budget Transformer-XL on code execution, on CPU.

Writes a code-exec dataset (3 variables), trains both small presets for the same number of updates (the
same tokens), prints their test accuracies side by side, lets the Feedback model answer a test program, and
samples a continuation from a Feedback model trained briefly on tiny Shakespeare.
Everything lands in runs/demo/; a second `make demo` starts afresh.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from fbt import api
from fbt.data.code_exec import generate_dataset, last_print_accuracy, load_code_exec_split
from fbt.models import ModelConfig
from fbt.presets import SHAKESPEARE, get_preset
from fbt.training.config import TrainConfig

ROOT = Path("runs/demo")
DATA = ROOT / "code-exec-3"
PAIR = ("code-exec-feedback-small", "code-exec-xl-small")
TEXT_SECONDS = 90


def train_preset(name: str) -> tuple[dict, float]:
    preset = get_preset(name)
    model_config = ModelConfig.from_dict(preset["model"])
    train_config = TrainConfig.from_dict({**preset["train"], "data": str(DATA)})
    print(f"\n== {name}: {preset['description']}")
    start = time.perf_counter()
    api.train(model_config, train_config, ROOT / name, device="cpu")
    return api.evaluate_run(ROOT / name, "test", device="cpu", progress=True), time.perf_counter() - start


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    print("== writing the code-exec dataset (3 variables, 100 statements per program)")
    generate_dataset(DATA, variables=3, statements=100, sizes=(10000, 200, 200), seed=0)
    results = {name: train_preset(name) for name in PAIR}

    print("\n== test accuracy on print answers")
    print(f"{'model':34} {'accuracy':>9} {'loss':>7} {'minutes':>8}")
    for name, (metrics, seconds) in results.items():
        print(f"{name:34} {metrics['accuracy']:9.1%} {metrics['loss']:7.3f} {seconds / 60:8.1f}")
    reference = last_print_accuracy(*load_code_exec_split(DATA, "test"))
    print(f"{'reference: repeat the last print':34} {reference:9.1%}   (chance: 10%)")

    program = (DATA / "test.txt").read_text().splitlines()[0].split()[:80]
    labels = (DATA / "test.txt.labels").read_text().splitlines()[0].split()[:80]
    print("\n== the feedback model answers the start of a test program; [n] is its answer at each print:")
    print(api.generate_from_run(ROOT / PAIR[0], " ".join(program), max_new_tokens=0, device="cpu"))
    print("true answers:", " ".join(label for label in labels if label != "_"))

    if Path(SHAKESPEARE).exists():
        print(f"\n== a Feedback model trained for {TEXT_SECONDS} s on tiny Shakespeare continues a prompt:")
        preset = get_preset("shakespeare-feedback-small")
        train_config = TrainConfig.from_dict({**preset["train"], "time_budget": TEXT_SECONDS, "eval_tokens": 8192})
        api.train(ModelConfig.from_dict(preset["model"]), train_config, ROOT / "shakespeare", device="cpu")
        prompt = "ROMEO:\n"
        text = api.generate_from_run(ROOT / "shakespeare", prompt, 300, temperature=0.8, top_k=40, device="cpu")
        print(prompt + text)


if __name__ == "__main__":
    main()
