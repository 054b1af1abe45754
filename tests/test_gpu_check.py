"""benchmarks/gpu_check.py, the script a GPU lease runs, end to end on the CPU at toy sizes, so that the first
GPU run cannot fail on a typo; and its profile summary on made-up device events."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_quick_check_runs_every_section_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = ["versions", "matmul_peaks", "cuda_tests", "bench", "training_pair", "profile"]
    assert [name for name in sections if "error" in report[name]] == []
    assert report["versions"]["torch"] == torch.__version__
    assert set(report["matmul_peaks"]["tflops"]) == {"fp32", "bf16"}  # tf32 is CUDA's
    assert report["cuda_tests"]["tests"] > 0 and report["cuda_tests"]["skipped"] == report["cuda_tests"]["tests"]
    assert set(report["bench"]) == {"config-A", "code-exec-paper", "enwik8-width", "seconds"}
    for size in (report["bench"][name] for name in ("config-A", "code-exec-paper", "enwik8-width")):
        precisions = [entry["options"]["precision"] for entry in size["models"]]
        assert precisions.count("fp32") == precisions.count("bf16") >= 2
        assert all(set(entry["decode_tokens_per_s"]) == {"1", "64"} for entry in size["models"])
        assert all(entry["mfu_measured_peak"] > 0 for entry in size["models"])
    pair = report["training_pair"]
    assert len(pair["device"]["first_losses"]) == len(pair["cpu"]["first_losses"]) == pair["steps"]
    assert pair["agree"] and pair["max_relative_difference"] == 0.0  # both on the CPU from one seed
    assert "valid_accuracy" in pair["cpu"]["final_valid"]
    assert set(report["profile"]) == {"config-A", "code-exec-paper", "seconds"}
    assert report["profile"]["config-A"]["top_cpu_ops"]
    assert (tmp_path / "gpu_check.log").read_text().strip().endswith("sections with errors: none")


@pytest.fixture
def gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    yield gpu_check
    sys.path.remove(str(SCRIPT.parent))


def test_profile_summary_merges_overlapping_device_intervals(gpu_check):
    def kernel(name, start, end):
        return SimpleNamespace(
            name=name, device_type=torch.autograd.DeviceType.CUDA, time_range=SimpleNamespace(start=start, end=end)
        )

    cpu_op = SimpleNamespace(name="aten::mm", device_type=torch.autograd.DeviceType.CPU, self_cpu_time_total=5.0)
    # Busy from 0 to 30 µs and from 50 to 60 µs (the second kernel overlaps the first): 40 µs of 100 µs.
    events = [kernel("gemm", 0, 20), kernel("add", 10, 30), kernel("gemm", 50, 60), cpu_op]
    summary = gpu_check.summarize_profile(events, segment=2, wall_s=100e-6)
    assert summary["device_ops"] == 3 and summary["device_ops_per_token_step"] == 1.5
    assert summary["device_busy_ms"] == 0.04
    assert summary["busy_fraction"] == pytest.approx(0.4) and summary["launch_bound_fraction"] == pytest.approx(0.6)
    assert summary["top_kernels"][0] == {"name": "gemm", "calls": 2, "ms": 0.03, "mean_us": 15.0}
