"""`fbt bench`: training and decoding throughput, peak memory and MFU of several models, side by side.

Models are measured interleaved (repetition r of every model before repetition r + 1 of any), so a change in
machine load hits all of them alike; each figure is the median over repetitions. Peak memory is measured in
a fresh process per model: the growth of its peak resident set over a process that only imported torch.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from fbt.errors import FbtError
from fbt.models import ModelConfig, build_model, model_class, state_nbytes
from fbt.models.config import shared_kv_of
from fbt.models.layers import set_activation_checkpointing
from fbt.training.config import PRECISIONS


@dataclass(frozen=True)
class StepOptions:
    """How a training step runs, as `fbt train` flags: activation checkpointing, bf16 autocast, model.compile()."""

    checkpoint: bool = False
    precision: str = "fp32"
    compile: bool = False

    def label(self) -> str:
        parts = ["checkpointed"] * self.checkpoint + ["bf16"] * (self.precision == "bf16") + ["compiled"] * self.compile
        return "".join(f" {part}" for part in parts)


def parse_model_spec(spec: str, base: dict) -> tuple[str, ModelConfig, StepOptions]:
    """'transformer-xl:layers=8,dim=256' -> (label, config, options): the shared sizes with per-model overrides;
    `checkpoint=1`, `precision=bf16` and `compile=1` set how its steps run."""
    name, _, overrides = spec.partition(":")
    values = {**base, "model": name}
    options: dict = {}
    for item in filter(None, overrides.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise FbtError(f"bad model override {item!r} in {spec!r}; expected key=value")
        key = key.replace("-", "_")
        if key == "kv":
            values["shared_kv"] = shared_kv_of(raw)
            continue
        if key in ("checkpoint", "compile"):
            options[key] = raw in ("1", "true", "True")
            continue
        if key == "precision":
            if raw not in PRECISIONS:
                raise FbtError(f"unknown precision {raw!r} in {spec!r}; choose one of {', '.join(PRECISIONS)}")
            options[key] = raw
            continue
        if key not in ModelConfig.__dataclass_fields__:
            raise FbtError(f"unknown model setting {key!r} in {spec!r}")
        default = ModelConfig.__dataclass_fields__[key].default
        values[key] = type(default)(raw) if not isinstance(default, bool) else raw in ("1", "true", "True")
    config = ModelConfig.from_dict(values)
    label = model_class(config.model).label(config)
    step_options = StepOptions(**options)
    return label + step_options.label(), config, step_options


def forward_flops_per_token(config: ModelConfig) -> int:
    """Matmul FLOPs of one token's forward at steady state (every attention sees its whole span)."""
    return model_class(config.model).forward_flops_per_token(config)


def state_tokens(config: ModelConfig) -> int:
    """Tokens a stream reads before its carried state stops growing."""
    return model_class(config.model).state_tokens(config)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: torch.device, seconds: float = 1.0) -> float:
    """Best FLOP/s of fp32 matmuls of the shapes these models use, at the current thread count."""
    best = 0.0
    for m, k, n in ((32, 256, 1024), (512, 256, 1024), (1024, 1024, 1024)):
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        out = torch.empty(m, n, device=device)
        for _ in range(3):
            torch.mm(a, b, out=out)
        synchronize(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b, out=out)
            count += 1
        synchronize(device)
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


class TrainProbe:
    """Random-token training segments with the state carried, as `fbt train` runs them."""

    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        segment: int,
        seed: int = 0,
        device: str = "cpu",
        options: StepOptions = StepOptions(),
    ):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model = build_model(config).to(self.device).train()
        set_activation_checkpointing(self.model, options.checkpoint)
        if options.compile:
            self.model.compile()
        self.options = options
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.tokens = torch.randint(0, config.vocab_size, (batch, segment + 1), device=self.device)
        self.state = None

    def step(self) -> None:
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.options.precision == "bf16"):
            logits, self.state = self.model(self.tokens[:, :-1], self.state)
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self.tokens[:, 1:].flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


@torch.no_grad()
def decode_rate(model: torch.nn.Module, batch: int, tokens: int, prefill: int, vocab: int) -> tuple[float, int]:
    """Tokens/s of one-token-at-a-time decoding after a `prefill`-token prompt; also the state's bytes."""
    model.eval()
    device = next(model.parameters()).device
    _, state = model(torch.randint(0, vocab, (batch, prefill), device=device))
    feed = torch.randint(0, vocab, (batch, tokens, 1), device=device)
    synchronize(device)
    start = time.perf_counter()
    for t in range(tokens):
        _, state = model(feed[:, t], state)
    synchronize(device)
    return batch * tokens / (time.perf_counter() - start), state_nbytes(state)


def resident_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB.

    Read from /proc where it exists: getrusage's ru_maxrss survives fork and exec on Linux, so a child of a
    large process would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def peak_memory_mb(
    config: ModelConfig,
    batch: int,
    segment: int,
    threads: int,
    device: torch.device,
    options: StepOptions = StepOptions(),
) -> float:
    """Peak memory of training once the carried state is full (weights included): resident memory of a fresh
    process on CPU, allocated GPU memory on CUDA."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        probe = TrainProbe(config, batch, segment, device=str(device), options=options)
        for _ in range(max(2, -(-state_tokens(config) // segment) + 1)):
            probe.step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    code = (
        "import json, sys, torch\n"
        "from fbt.bench import StepOptions, TrainProbe, resident_mb\n"
        "from fbt.models import ModelConfig\n"
        f"torch.set_num_threads({threads})\n"
        "base, _ = resident_mb()\n"
        f"probe = TrainProbe(ModelConfig.from_dict(json.loads(sys.argv[1])), {batch}, {segment},\n"
        f"                   options=StepOptions(**json.loads(sys.argv[2])))\n"
        f"steps = {max(2, -(-state_tokens(config) // segment) + 1)}  # until the carried state is full\n"
        "for _ in range(steps): probe.step()\n"
        "print(resident_mb()[1] - base)\n"
    )
    arguments = [json.dumps(config.to_dict()), json.dumps(dataclasses.asdict(options))]
    done = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise FbtError(
            f"memory probe failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
        )
    return float(done.stdout.strip().splitlines()[-1])


def run_bench(
    specs: list[str],
    base: dict,
    batch: int,
    segment: int,
    threads: int,
    repeats: int = 5,
    steps: int = 3,
    decode_batches: tuple[int, ...] = (1, 32),
    decode_tokens: int = 64,
    memory: bool = True,
    progress=print,
    device: str = "cpu",
) -> dict:
    torch.set_num_threads(threads)
    target = torch.device(device)
    labelled = [parse_model_spec(spec, base) for spec in specs]
    peak = measure_matmul_peak(target)
    probes = [TrainProbe(config, batch, segment, device=device, options=options) for _, config, options in labelled]
    for (_, config, _), probe in zip(labelled, probes, strict=True):
        # warm-up: first-touch allocations and the carried state reach steady size
        for _ in range(max(2, -(-state_tokens(config) // segment))):
            probe.step()
    times: list[list[float]] = [[] for _ in probes]
    for repeat in range(repeats):
        for index, probe in enumerate(probes):
            synchronize(target)
            start = time.perf_counter()
            for _ in range(steps):
                probe.step()
            synchronize(target)
            times[index].append((time.perf_counter() - start) / steps)
        progress(f"training repetition {repeat + 1}/{repeats} done")
    results = []
    for (label, config, options), probe, seconds in zip(labelled, probes, times, strict=True):
        tokens_per_s = batch * segment / statistics.median(seconds)
        flops = 3 * forward_flops_per_token(config)  # forward + backward (twice the forward)
        entry = {
            "name": label,
            "config": config.to_dict(),
            "options": dataclasses.asdict(options),
            "train_tokens_per_s": round(tokens_per_s, 1),
            "train_flops_per_token": flops,
            "mfu": round(flops * tokens_per_s / peak, 4),
            "decode_tokens_per_s": {},
        }
        for decode_batch in decode_batches:
            rates = []
            for _ in range(max(1, repeats // 2)):
                rate, nbytes = decode_rate(
                    probe.model, decode_batch, decode_tokens, state_tokens(config), config.vocab_size
                )
                rates.append(rate)
            entry["decode_tokens_per_s"][str(decode_batch)] = round(statistics.median(rates), 1)
            entry["state_bytes_per_token"] = nbytes // (decode_batch * max(1, state_tokens(config)))
        if memory:
            entry["peak_memory_mb"] = round(peak_memory_mb(config, batch, segment, threads, target, options), 1)
        progress(f"{label}: measured")
        results.append(entry)
    return {
        "device": str(target),
        "threads": threads,
        "batch": batch,
        "segment": segment,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "models": results,
    }


def format_table(report: dict) -> str:
    lines = [
        f"{report['device']}, threads {report['threads']}, batch {report['batch']}, segment {report['segment']}, "
        f"matmul peak {report['matmul_peak_gflops']} GFLOP/s",
        f"{'model':24} {'train tok/s':>12} {'MFU':>6} {'decode tok/s (batch)':>28} {'peak MB':>8} {'state B/tok':>11}",
    ]
    for entry in report["models"]:
        decode = ", ".join(f"{rate:,.0f} ({b})" for b, rate in entry["decode_tokens_per_s"].items())
        memory = f"{entry['peak_memory_mb']:8.0f}" if "peak_memory_mb" in entry else f"{'-':>8}"
        lines.append(
            f"{entry['name']:24} {entry['train_tokens_per_s']:12,.0f} {entry['mfu']:6.1%} {decode:>28} {memory}"
            f" {entry['state_bytes_per_token']:11,}"
        )
    return "\n".join(lines)
