"""Training speed and peak memory of our exact Feedback Transformer against the PyPI package
`feedback-transformer-pytorch` in its exact mode (seq_len=1), measured side by side in one run.

Needs the peer installed beside fbt:  .venv/bin/pip install --no-deps feedback-transformer-pytorch einops
Run:  .venv/bin/python benchmarks/compare_lucidrains.py --threads 1

Config A: 32 streams x 64 tokens, d256, 4 layers, 4 heads, FF1024, span 100, fwd+bwd+Adam.
The peer's feed-forward is a GEGLU (its hidden projection is twice as wide), so per token it does more
arithmetic than our ReLU FFN of the same width; its speed is reported as measured, not normalised.
Memory: peak resident memory of two training steps in a fresh process, B=16, T=128, span 512.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from fbt.bench import TrainProbe, forward_flops_per_token, measure_matmul_peak
from fbt.models import ModelConfig


class PeerProbe:
    """The peer's exact mode, trained like ours: memory carried (detached) between segments."""

    def __init__(self, batch: int, segment: int, dim: int, layers: int, heads: int, span: int, vocab: int = 256):
        from feedback_transformer_pytorch import FeedbackTransformer

        torch.manual_seed(0)
        self.model = FeedbackTransformer(
            num_tokens=vocab,
            dim=dim,
            depth=layers,
            heads=heads,
            dim_head=dim // heads,
            mem_len=span,
            seq_len=1,
        ).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.tokens = torch.randint(0, vocab, (batch, segment + 1))
        self.memory = None

    def step(self) -> None:
        logits, memory = self.model(self.tokens[:, :-1], memory=self.memory, return_memory=True)
        self.memory = type(memory)(*(m.detach() for m in memory))  # the peer returns it undetached
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self.tokens[:, 1:].flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def make_probe(kind: str, batch: int, segment: int, span: int, threads: int):
    torch.set_num_threads(threads)
    if kind == "peer":
        return PeerProbe(batch, segment, 256, 4, 4, span)
    layers = 8 if kind == "transformer-xl" else 4
    config = ModelConfig(model=kind, dim=256, layers=layers, heads=4, ff=1024, span=span)
    return TrainProbe(config, batch, segment)


def peak_memory_mb(kind: str, threads: int) -> float:
    code = (
        "import sys\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "from compare_lucidrains import make_probe\n"
        "from fbt.bench import resident_mb\n"
        "base, _ = resident_mb()\n"
        f"probe = make_probe({kind!r}, 16, 128, 512, {threads})\n"
        "probe.step(); probe.step()\n"
        "print(resident_mb()[1] - base)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed repetition")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    kinds = ("peer", "feedback", "transformer-xl")
    probes = {kind: make_probe(kind, 32, 64, 100, args.threads) for kind in kinds}
    for probe in probes.values():  # warm-up until the carried memory is full (span 100 > one segment)
        for _ in range(3):
            probe.step()
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):  # interleaved, so load changes hit every model alike
        for kind, probe in probes.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                probe.step()
            seconds[kind].append((time.perf_counter() - start) / args.steps)
    peak = measure_matmul_peak(torch.device("cpu"))
    report = {"threads": args.threads, "matmul_peak_gflops": round(peak / 1e9, 1), "models": {}}
    for kind in kinds:
        tokens_per_s = 32 * 64 / statistics.median(seconds[kind])
        entry = {
            "train_tokens_per_s": round(tokens_per_s, 1),
            "peak_memory_mb_B16_T128_S512": peak_memory_mb(kind, args.threads),
        }
        if kind != "peer":
            config = probes[kind].model.config
            entry["mfu"] = round(3 * forward_flops_per_token(config) * tokens_per_s / peak, 4)
        report["models"][kind] = entry
    peer, fb, xl = (report["models"][k]["train_tokens_per_s"] for k in kinds)
    report["feedback_over_peer"] = round(fb / peer, 2)
    report["feedback_L4_over_transformer_xl_L8"] = round(fb / xl, 2)
    if args.json:
        print(json.dumps(report))
        return
    print(f"threads {args.threads}, matmul peak {report['matmul_peak_gflops']} GFLOP/s, config A (B32 T64 d256 S100)")
    print(f"{'model':34} {'train tok/s':>12} {'MFU':>7} {'peak MB (B16 T128 S512)':>24}")
    names = {
        "peer": "feedback-transformer-pytorch L4",
        "feedback": "fbt feedback L4",
        "transformer-xl": "fbt transformer-xl L8",
    }
    for kind in kinds:
        entry = report["models"][kind]
        mfu = f"{entry['mfu']:7.1%}" if "mfu" in entry else f"{'-':>7}"
        print(
            f"{names[kind]:34} {entry['train_tokens_per_s']:12,.0f} {mfu}"
            f" {entry['peak_memory_mb_B16_T128_S512']:24,.0f}"
        )
    print(
        f"feedback / peer: {report['feedback_over_peer']}x; "
        f"feedback L4 / transformer-xl L8: {report['feedback_L4_over_transformer_xl_L8']}x"
    )


if __name__ == "__main__":
    main()
