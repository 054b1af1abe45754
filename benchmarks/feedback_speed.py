"""Training speed and peak memory of the exact Feedback Transformer: the fused segment path against the plain
autograd loop (`model.fast = False`).

For each thread count: the single-thread-style matmul peak, (32 x 256) @ (256 x 1024) in a loop, then tokens/s
of forward + backward + Adam on carried-state segments for each path, the paths taking turns segment by
segment (so a noisy machine slows both alike), and the model FLOP utilisation (MFU) against the measured peak.
Peak memory (peak resident set of a fresh process) is measured at a second configuration.

    python benchmarks/feedback_speed.py                      # config A, 1 and 2 threads, plus memory
    python benchmarks/feedback_speed.py --threads 1 --paths fast --timed 10
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from fbt.models import ModelConfig, build_model


def matmul_peak(seconds: float = 1.0) -> float:
    """GFLOP/s of (32 x 256) @ (256 x 1024), the shape of the FFN matmuls inside the recurrence."""
    a, b = torch.randn(32, 256), torch.randn(256, 1024)
    out = torch.empty(32, 1024)
    for _ in range(50):
        torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            torch.mm(a, b, out=out)
            count += 1
        best = max(best, 2 * 32 * 256 * 1024 * count / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(cfg: ModelConfig, visible: float) -> float:
    """Forward + backward (3x forward) matmul FLOPs per trained token; `visible` memories per step."""
    D, F_, L = cfg.dim, cfg.ff, cfg.layers
    per_layer = 2 * 2 * D * D + 2 * 2 * D * F_ + 3 * 2 * D * visible  # q, o; FFN; scores, positions, values
    kv = 2 * 2 * D * D * (1 if cfg.shared_kv else L)
    return 3 * (L * per_layer + kv + 2 * D * cfg.vocab_size)


def model_config(args) -> ModelConfig:
    return ModelConfig(
        model="feedback",
        vocab_size=args.vocab,
        dim=args.dim,
        layers=args.layers,
        heads=args.heads,
        ff=args.ff,
        span=args.span,
        shared_kv=not args.per_layer_kv,
        dropout=args.dropout,
    )


class Trainer:
    """One model, its optimizer and carried state: `step()` trains on the next segment."""

    def __init__(self, cfg: ModelConfig, fast: bool, batch: int, seq: int):
        torch.manual_seed(0)
        self.model = build_model(cfg).train()
        self.model.fast = fast
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.tokens = torch.randint(0, cfg.vocab_size, (batch, seq * 64))
        self.seq, self.index, self.state = seq, 0, None

    def step(self) -> float:
        window = slice(self.index * self.seq, (self.index + 1) * self.seq)
        self.index = (self.index + 1) % 64
        x = self.tokens[:, window]
        start = time.perf_counter()
        logits, self.state = self.model(x, self.state)
        loss = F.cross_entropy(logits.flatten(0, 1), x.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def speed(args) -> None:
    cfg = model_config(args)
    tokens = args.batch * args.seq
    # The timed segments carry a full memory once the warm-up has run span / seq segments.
    visible = min(args.span, args.seq * args.warmup)
    flops = flops_per_token(cfg, visible)
    print(
        f"config: B={args.batch} T={args.seq} D={cfg.dim} L={cfg.layers} H={cfg.heads} FF={cfg.ff} "
        f"S={cfg.span} V={cfg.vocab_size} shared_kv={cfg.shared_kv} dropout={cfg.dropout}; "
        f"{flops / 1e6:.1f} MFLOP per trained token"
    )
    print(
        f"{'threads':>7} {'path':>9} {'tokens/s':>9} {'ms/segment':>10} {'peak GFLOP/s':>12} {'MFU':>6} {'speed-up':>8}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        before = matmul_peak()
        trainers = {path: Trainer(cfg, path == "fast", args.batch, args.seq) for path in args.paths}
        times = {path: [] for path in args.paths}
        for segment in range(args.warmup + args.timed):
            for path, trainer in trainers.items():  # the paths take turns
                elapsed = trainer.step()
                if segment >= args.warmup:
                    times[path].append(elapsed)
        rates = {path: tokens / statistics.median(t) for path, t in times.items()}
        peak = max(before, matmul_peak())  # measured on both sides of the runs: a busy machine lowers it
        for path in args.paths:
            rate = rates[path]
            gain = f"{rate / rates['reference']:.2f}x" if "reference" in rates else ""
            print(
                f"{threads:>7} {path:>9} {rate:>9.0f} {1e3 * tokens / rate:>10.0f} {peak:>12.1f} "
                f"{rate * flops / (peak * 1e9):>6.1%} {gain:>8}"
            )


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM). Unlike ru_maxrss it starts afresh at exec, so a child
    of a large parent reports its own peak."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def memory_probe(args) -> None:
    """Runs in a fresh process: trains until the memory is full and one segment more, prints the peak
    resident set size in MiB."""
    torch.set_num_threads(1)
    trainer = Trainer(model_config(args), args.memory_probe == "fast", args.batch, args.seq)
    for _ in range(-(-args.span // args.seq) + 1):
        trainer.step()
    print(peak_rss_mib())


def memory(args) -> None:
    shape = {
        "--batch": args.memory_batch,
        "--seq": args.memory_seq,
        "--span": args.memory_span,
        "--dim": args.dim,
        "--layers": args.layers,
        "--heads": args.heads,
        "--ff": args.ff,
        "--vocab": args.vocab,
    }
    flags = [str(x) for item in shape.items() for x in item] + (["--per-layer-kv"] if args.per_layer_kv else [])
    print(
        "\npeak memory (peak resident set of a fresh process training until the memory is full, 1 thread): "
        f"B={args.memory_batch} T={args.memory_seq} S={args.memory_span} D={args.dim} L={args.layers}"
    )
    for path in args.paths:
        command = [sys.executable, __file__, "--memory-probe", path, *flags]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(f"{path:>9} {float(out.split()[-1]) / 1024:6.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paths", nargs="+", choices=["reference", "fast"], default=["reference", "fast"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ff", type=int, default=1024)
    parser.add_argument("--span", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--per-layer-kv", action="store_true", help="one K/V projection per layer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed segments per path (they fill the memory)")
    parser.add_argument("--timed", type=int, default=6, help="timed segments per path; the median counts")
    parser.add_argument("--memory-batch", type=int, default=16)
    parser.add_argument("--memory-seq", type=int, default=128)
    parser.add_argument("--memory-span", type=int, default=512)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--memory-probe", choices=["reference", "fast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args)
        return
    speed(args)
    if not args.no_memory:
        memory(args)


if __name__ == "__main__":
    main()
