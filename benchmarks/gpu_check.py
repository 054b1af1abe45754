"""The GPU check, one script for a short lease of a GPU machine:

1. versions and the device's measured matmul peaks (fp32, tf32, bf16);
2. the device tests, `pytest -m cuda`;
3. `fbt bench` side by side in fp32 and bf16 at three sizes: config A, the paper's code-exec size and the
   paper's enwik8 width (feedback against Transformer-XL with as many and with twice the layers);
4. 300 updates of the `code-exec-feedback-cpu` preset on the device and on the CPU from one seed: the first
   20 losses side by side and both final valid accuracies;
5. a torch.profiler summary of one feedback training step at config A and at the code-exec size: device
   operations per token step, device busy time against wall time, the top 10 device kernels.

    python benchmarks/gpu_check.py --out DIR [--device cuda] [--quick]

Everything lands in DIR: `gpu_check.json` (rewritten after every section, so a run cut off keeps what it
measured), `gpu_check.log`, and the outputs of the commands it runs. A section that fails records its error
and the next one runs. `--quick` shrinks every size so the whole script runs on a CPU in about a minute
(the test suite runs it so); on an H200 the full script is sized to finish in about 7 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing, as on the GPU machine

from fbt.bench import StepOptions, TrainProbe, forward_flops_per_token, synchronize  # noqa: E402
from fbt.data.code_exec import ProgramSpec, generate_dataset  # noqa: E402
from fbt.models import ModelConfig  # noqa: E402
from fbt.presets import CPU_CODE_EXEC  # noqa: E402

# (name, shared sizes, models, batch, segment). The quick sizes keep each comparison's shape (feedback L
# against Transformer-XL 2L) at toy widths.
BENCH_SIZES = {
    "config-A": (
        dict(dim=256, ff=1024, heads=4, span=100, layers=4),
        ["feedback", "transformer-xl:layers=8", "transformer-xl:layers=4"],
        32,
        64,
    ),
    "code-exec-paper": (
        dict(dim=256, ff=1024, heads=4, span=100, layers=4),
        ["feedback", "transformer-xl:layers=8"],
        256,
        64,
    ),
    "enwik8-width": (
        dict(dim=512, ff=4096, heads=8, span=512, layers=12),
        ["feedback", "transformer-xl:layers=12", "transformer-xl:layers=24"],
        32,
        128,
    ),
}
QUICK_SIZES = dict(dim=32, ff=64, heads=2, span=8, layers=2)
QUICK_LAYERS = {"4": 2, "8": 4, "12": 2, "24": 4}
PROFILE_SIZES = {name: (BENCH_SIZES[name][0], *BENCH_SIZES[name][2:]) for name in ("config-A", "code-exec-paper")}
TRAIN_STEPS, COMPARED_LOSSES = 300, 20
# fp32 on both sides with TF32 off: the first updates differ only by the order of float32 sums.
LOSS_RTOL = 1e-3


class Check:
    """The report being written: sections in order, each with its figures or its error."""

    def __init__(self, out: Path, device: str, quick: bool):
        self.out, self.device, self.quick = out, torch.device(device), quick
        self.report: dict = {"device": device, "quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.log_file = open(out / "gpu_check.log", "a")

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def section(self, name: str, run) -> None:
        self.log(f"== {name}")
        start = time.perf_counter()
        try:
            result = run()
        except Exception as error:  # a failed section must not cost the lease the sections after it
            self.log(traceback.format_exc())
            result = {"error": f"{type(error).__name__}: {error}"}
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.report[name] = result
        self.log(f"   {name}: {json.dumps(result)[:2000]}")
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2) + "\n")

    def command(self, arguments: list[str], name: str, timeout: float) -> subprocess.CompletedProcess:
        """Runs a command with src/ on the path; its output goes to DIR/<name>.txt."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        self.log(f"   $ {' '.join(arguments)}")
        with open(self.out / f"{name}.txt", "w") as output:
            done = subprocess.run(
                arguments, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=timeout, text=True
            )
        return done

    def fbt(self, arguments: list[str], name: str, timeout: float) -> subprocess.CompletedProcess:
        return self.command([sys.executable, "-m", "fbt.cli", *arguments], name, timeout)


def versions(check: Check) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if check.device.type == "cuda":
        properties = torch.cuda.get_device_properties(check.device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1))
        info["multiprocessors"] = properties.multi_processor_count
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["driver"] = f"unknown ({error})"
    return info


def matmul_peaks(check: Check) -> dict:
    """Median FLOP/s of square products of random matrices, per precision; tf32 on CUDA only."""
    n = 256 if check.quick else 8192
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "tf32" and check.device.type != "cuda":
            continue
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        a = torch.randn(n, n, device=check.device, dtype=dtype)
        b = torch.randn(n, n, device=check.device, dtype=dtype)
        out = torch.empty(n, n, device=check.device, dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=out)
        times = []
        for _ in range(5 if check.quick else 20):
            synchronize(check.device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            synchronize(check.device)
            times.append(time.perf_counter() - start)
        peaks[name] = round(2 * n**3 / statistics.median(times) / 1e12, 3)
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"tflops": peaks, "size": n}


def cuda_tests(check: Check) -> dict:
    xml = check.out / "pytest_cuda.xml"
    arguments = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", f"--junitxml={xml}"]
    done = check.command(arguments, "pytest_cuda", timeout=120 if check.quick else 240)
    suite = ElementTree.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failures = [
        {"test": f"{case.get('classname')}::{case.get('name')}", "message": (problem.get("message") or "")[:500]}
        for case in suite.iter("testcase")
        for problem in list(case)
        if problem.tag in ("failure", "error")
    ]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    return {"exit_code": done.returncode, **counts, "failed": failures}


def bench(check: Check) -> dict:
    results = {}
    for name, (sizes, models, batch, segment) in BENCH_SIZES.items():
        if check.quick:
            sizes, batch, segment = QUICK_SIZES, 4, 8
            models = [re.sub(r"layers=(\d+)", lambda m: f"layers={QUICK_LAYERS[m[1]]}", spec) for spec in models]
        specs = models + [f"{spec}{',' if ':' in spec else ':'}precision=bf16" for spec in models]
        arguments = ["bench", "--models", *specs, "--batch", str(batch), "--segment", str(segment)]
        arguments += [f"--{key.replace('_', '-')}={value}" for key, value in sizes.items()]
        arguments += ["--device", str(check.device), "--decode-batches", "1", "64", "--json"]
        arguments += ["--repeats", "1", "--steps", "1", "--no-memory"] if check.quick else ["--repeats", "3"]
        done = check.fbt(arguments, f"bench_{name}", timeout=120 if check.quick else 300)
        output = (check.out / f"bench_{name}.txt").read_text()
        if done.returncode != 0:
            results[name] = {"error": output.strip().splitlines()[-1] if output.strip() else done.returncode}
            continue
        report = json.loads(output.strip().splitlines()[-1])
        report["command"] = "fbt " + " ".join(arguments)
        peaks = check.report.get("matmul_peaks", {}).get("tflops", {})
        for entry in report["models"]:
            peak = peaks.get(entry["options"]["precision"])
            if peak:  # against the measured peak of the precision the matmuls run in
                entry["mfu_measured_peak"] = round(
                    entry["train_flops_per_token"] * entry["train_tokens_per_s"] / (peak * 1e12), 4
                )
        results[name] = report
        check.log("\n" + format_bench(name, report))
    return results


def format_bench(name: str, report: dict) -> str:
    lines = [f"{name}: batch {report['batch']} x segment {report['segment']}"]
    for entry in report["models"]:
        decode = " / ".join(f"{rate:,.0f}" for rate in entry["decode_tokens_per_s"].values())
        memory = f"{entry['peak_memory_mb']:,.0f} MB" if "peak_memory_mb" in entry else "-"
        mfu = entry.get("mfu_measured_peak", entry["mfu"])
        lines.append(
            f"  {entry['name']:32} train {entry['train_tokens_per_s']:12,.0f} tok/s  MFU {mfu:6.1%}  "
            f"decode {decode} tok/s  peak {memory}"
        )
    return "\n".join(lines)


def train_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row["kind"] == "train"]


def training_pair(check: Check) -> dict:
    """The same preset and seed on the device and on the CPU, run at once (neither is timed against the other)."""
    data = check.out / "code-exec-cpu"
    sizes = (400, 100, 100) if check.quick else CPU_CODE_EXEC["sizes"]
    if not (data / "train.txt").exists():
        generate_dataset(data, ProgramSpec(**CPU_CODE_EXEC["generator"]), sizes=sizes, seed=CPU_CODE_EXEC["seed"])
    steps = 10 if check.quick else TRAIN_STEPS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    runs, processes = {}, {}
    threads = "1" if check.quick else str(max(1, min(8, (os.cpu_count() or 2) // 2)))
    for label, device in (("device", str(check.device)), ("cpu", "cpu")):  # with --device cpu: two equal runs
        runs[label] = check.out / f"train_{label}"
        shutil.rmtree(runs[label], ignore_errors=True)  # a rerun into the same DIR starts afresh
        arguments = [
            "train",
            "--preset",
            "code-exec-feedback-cpu",
            "--data",
            str(data),
            "--steps",
            str(steps),
            "--device",
            device,
            "--threads",
            threads,
            "--out",
            str(runs[label]),
            "--no-progress",
            "--log-every",
            "1",
            "--json",
        ]
        if check.quick:
            arguments += ["--eval-every", "0", "--eval-tokens", "512"]
        check.log(f"   $ fbt {' '.join(arguments)}")
        output = open(check.out / f"train_{label}.txt", "w")
        processes[label] = (
            time.perf_counter(),
            output,
            subprocess.Popen(
                [sys.executable, "-m", "fbt.cli", *arguments],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    result: dict = {"steps": steps, "rtol": LOSS_RTOL}
    for label, (start, output, process) in processes.items():
        code = process.wait(timeout=150 if check.quick else 360)
        output.close()
        text = (check.out / f"train_{label}.txt").read_text().strip()
        if code != 0:
            result[label] = {"error": text.splitlines()[-1] if text else code}
            continue
        summary = json.loads(text.splitlines()[-1])
        result[label] = {
            "seconds": round(time.perf_counter() - start, 1),
            "final_valid": {key: value for key, value in summary.items() if key.startswith("valid_")},
            "first_losses": train_losses(runs[label])[:COMPARED_LOSSES],
        }
    if "first_losses" in result.get("device", {}) and "first_losses" in result.get("cpu", {}):
        pairs = zip(result["device"]["first_losses"], result["cpu"]["first_losses"], strict=True)
        worst = max(abs(a - b) / abs(b) for a, b in pairs)
        result["max_relative_difference"] = worst
        result["agree"] = worst <= LOSS_RTOL
    return result


def profile(check: Check) -> dict:
    """One feedback training step under torch.profiler, after warm-up steps that fill the carried memory."""
    results = {}
    for name, (sizes, batch, segment) in PROFILE_SIZES.items():
        if check.quick:
            sizes, batch, segment = QUICK_SIZES, 4, 8
        config = ModelConfig(model="feedback", vocab_size=256, **sizes)
        probe = TrainProbe(config, batch, segment, device=str(check.device), options=StepOptions())
        for _ in range(max(2, -(-config.span // segment) + 1)):
            probe.step()
        walls = []
        for _ in range(3):
            synchronize(check.device)
            start = time.perf_counter()
            probe.step()
            synchronize(check.device)
            walls.append(time.perf_counter() - start)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if check.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            probe.step()
            synchronize(check.device)
        results[name] = {
            "batch": batch,
            "segment": segment,
            **{key: value for key, value in sizes.items()},
            "wall_ms": round(1e3 * statistics.median(walls), 2),
            "flops_per_token": 3 * forward_flops_per_token(config),
            **summarize_profile(profiler.events(), segment, statistics.median(walls)),
        }
        profiler.export_chrome_trace(str(check.out / f"trace_{name}.json"))
    return results


def summarize_profile(events, segment: int, wall_s: float) -> dict:
    """Device operations per token step, the union of their busy intervals against the unprofiled wall time,
    and the top 10 kernels by time; on a CPU, the top 10 operators by self time instead."""
    device_events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    if not device_events:
        by_name: dict[str, list[float]] = {}
        for event in events:
            by_name.setdefault(event.name, []).append(event.self_cpu_time_total)
        top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:10]
        return {"top_cpu_ops": [{"name": n, "calls": len(t), "ms": round(sum(t) / 1e3, 3)} for n, t in top]}
    intervals = sorted((e.time_range.start, e.time_range.end) for e in device_events)
    busy, end = 0.0, float("-inf")
    for start, stop in intervals:  # merge overlapping intervals (µs)
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    kernels: dict[str, list[float]] = {}
    for event in device_events:
        kernels.setdefault(event.name, []).append(event.time_range.end - event.time_range.start)
    top = sorted(kernels.items(), key=lambda item: -sum(item[1]))[:10]
    busy_fraction = busy / 1e6 / wall_s
    return {
        "device_ops": len(device_events),
        "device_ops_per_token_step": round(len(device_events) / segment, 1),
        "device_busy_ms": round(busy / 1e3, 2),
        "busy_fraction": round(busy_fraction, 4),
        "launch_bound_fraction": round(1 - busy_fraction, 4),
        "top_kernels": [
            {"name": n[:120], "calls": len(t), "ms": round(sum(t) / 1e3, 3), "mean_us": round(sum(t) / len(t), 2)}
            for n, t in top
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json, the log and outputs")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script end to end in a minute")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.device, args.quick)
    torch.manual_seed(0)
    check.section("versions", lambda: versions(check))
    check.section("matmul_peaks", lambda: matmul_peaks(check))
    check.section("cuda_tests", lambda: cuda_tests(check))
    check.section("bench", lambda: bench(check))
    check.section("training_pair", lambda: training_pair(check))
    check.section("profile", lambda: profile(check))
    failed = [name for name, value in check.report.items() if isinstance(value, dict) and "error" in value]
    check.log(f"done: {args.out / 'gpu_check.json'}; sections with errors: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
