"""How long the long commands of the README and the presets take, measured as a user runs them.

Each command runs as written (both cores, torch's default threads) for a short probe, and its full time is
extrapolated from what the probe saw:

- `fbt train`: the command with `--time-budget PROBE_S`; the run's fixed costs (start-up, tokenizer, data)
  are the wall time outside training, its speed is the probe's seconds per step, and its final validation is
  timed whole (the trainer runs it after the budget stops the steps). Estimate: fixed costs + steps x seconds
  per step + final validation.
- `fbt rl train`: the command with fewer frames; estimate: fixed costs + frames / frames per second.
- data commands: timed whole.

    python benchmarks/estimates.py --out DIR [--probe-s 60] [--only NAME ...]

Writes DIR/estimates.json (rewritten after every command) and prints a table. Run it on an idle machine: the
figures are the README's and `fbt presets`' expected times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fbt.formatting import format_duration  # noqa: E402
from fbt.presets import DATA_COMMANDS, PRESETS  # noqa: E402

CPU_PRESETS = [name for name in PRESETS if name not in ("bible-es-en-feedback-base", "enwik8-feedback-paper")]
OWN_SIZES = (
    "fbt train --model feedback --data src/fbt/corpora/tinyshakespeare.txt --layers 4 --dim 256 --heads 4 "
    "--ff 1024 --span 128 --segment 64 --batch 32 --steps 5000 --lr 1e-3 --warmup 200 --schedule cosine --clip 1 "
    "--dropout 0.1"
)
BPE_LM = (
    "fbt train --task lm --tokenizer runs/tok-shake --data src/fbt/corpora/tinyshakespeare.txt --model feedback "
    "--layers 4 --dim 256 --heads 4 --ff 1024 --span 64 --steps 1500 --lr 1e-3"
)
RL_MEMORY = "fbt rl train --env MiniGrid-MemoryS7-v0 --policy feedback --frames 1000000"
TOKENIZER = "fbt tokenizer train --data src/fbt/corpora/tinyshakespeare.txt --vocab-size 4000 --out runs/tok-shake"


def commands() -> dict[str, tuple[str, str]]:
    """name -> (kind, command as the README or `fbt presets` writes it; training commands without --out)."""
    listed = {f"data {data}": ("data", command) for data, command in DATA_COMMANDS.items() if "enwik8" not in data}
    listed["tokenizer runs/tok-shake"] = ("data", TOKENIZER)
    listed.update({name: ("train", f"fbt train --preset {name}") for name in CPU_PRESETS})
    listed["own sizes (README)"] = ("train", OWN_SIZES)
    listed["BPE LM (README)"] = ("train", BPE_LM)
    listed["RL MemoryS7 1M frames"] = ("rl", RL_MEMORY)
    return listed


def run(command: str, cwd: Path) -> tuple[float, dict]:
    """Wall seconds and the last JSON line of stdout (the fbt executable beside this Python)."""
    fbt = str(Path(sys.executable).parent / "fbt")
    began = time.perf_counter()
    done = subprocess.run(command.replace("fbt ", f"{fbt} ", 1), shell=True, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return wall, json.loads(lines[-1]) if lines else {}


def estimate(kind: str, command: str, probe_s: float, scratch: Path) -> dict:
    if kind == "data":
        # Written where the commands after it read it; where it exists already, timed into the scratch folder.
        target = command.split("--out ")[1].split()[0]
        if (ROOT / target).exists():
            command = command.replace(f"--out {target}", f"--out {scratch / 'probe'}")
        shutil.rmtree(scratch / "probe", ignore_errors=True)
        wall, _ = run(command, ROOT)
        return {"estimate_s": wall, "measured": "whole"}
    out = scratch / "probe"
    shutil.rmtree(out, ignore_errors=True)
    if kind == "rl":
        planned = int(command.split("--frames ")[1].split()[0])
        probe_frames = 16 * 128 * max(1, int(probe_s // 4))  # PPO updates of 16 x 128 frames, about 4 s each
        probed = command.replace(f"--frames {planned}", f"--frames {probe_frames}")
        wall, result = run(f"{probed} --out {out} --no-progress --json", ROOT)
        rate = result["frames"] / result["elapsed_s"]
        fixed = wall - result["elapsed_s"]
        return {
            "estimate_s": fixed + planned / rate,
            "frames_per_s": rate,
            "fixed_s": fixed,
            "measured": f"{result['frames']:,} frames",
        }
    wall, result = run(f"{command} --time-budget {probe_s} --out {out} --no-progress --json", ROOT)
    seconds_per_step = result["elapsed_s"] / result["step"]
    fixed = wall - result["elapsed_s"] - result["final_valid_s"]
    return {
        "estimate_s": fixed + result["steps"] * seconds_per_step + result["final_valid_s"],
        "seconds_per_step": seconds_per_step,
        "fixed_s": fixed,
        "final_valid_s": result["final_valid_s"],
        "measured": f"{result['step']:,} of {result['steps']:,} steps",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for estimates.json and the probe runs")
    parser.add_argument("--probe-s", type=float, default=60.0, help="training seconds of each probe")
    parser.add_argument("--only", nargs="*", help="names of the commands to measure (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name, (kind, command) in commands().items():
        if args.only and name not in args.only:
            continue
        try:
            results[name] = {"command": command, **estimate(kind, command, args.probe_s, out)}
        except (RuntimeError, KeyError, ZeroDivisionError) as error:
            results[name] = {"command": command, "error": str(error)}
        shown = results[name]
        figure = format_duration(shown["estimate_s"]) if "estimate_s" in shown else f"failed: {shown['error']}"
        print(f"{name:>32}  {figure:>10}  {shown.get('measured', '')}", flush=True)
        (out / "estimates.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(out / "probe", ignore_errors=True)


if __name__ == "__main__":
    main()
