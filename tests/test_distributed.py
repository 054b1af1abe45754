"""Data parallelism with 2 gloo processes on CPU: the same gradients and losses as one process on the whole
batch, micro-batches that change nothing, and resume across rank counts."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from families import LANGUAGE_MODELS
from safetensors.torch import load_file, save_file

from fbt import api
from fbt.models import ModelConfig
from fbt.presets import SHAKESPEARE
from fbt.training.config import TrainConfig
from fbt.training.distributed import Ranks, share

CORPUS = SHAKESPEARE
SIZES = [
    "--dim",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--ff",
    "64",
    "--span",
    "8",
    "--batch",
    "4",
    "--segment",
    "16",
    "--warmup",
    "0",
    "--log-every",
    "1",
    "--eval-every",
    "3",
    "--eval-tokens",
    "512",
    "--save-every",
    "3",
    "--data",
    str(CORPUS),
    "--threads",
    "1",
    "--no-progress",
]


def tiny_configs(family: str, **train) -> tuple[ModelConfig, TrainConfig]:
    # GPT context 24 > segment 16: its second step reads 8 tokens of the carried cache.
    model = ModelConfig(model=family, dim=32, layers=2, heads=2, ff=64, span=8, context=24, vocab_size=256)
    run = TrainConfig(
        data=str(CORPUS),
        batch=4,
        segment=16,
        steps=3,
        warmup=0,
        clip=0.0,
        eval_every=0,
        eval_tokens=256,
        log_every=1,
        save_every=100,
        **train,
    )
    return model, run


def gradients_after_steps(family: str, out: Path, steps: int, **train) -> dict[str, torch.Tensor]:
    """The gradient of the last of `steps` updates (clipping off), per parameter name."""
    model_config, train_config = tiny_configs(family, **train)
    trainer = api.make_trainer(model_config, train_config, out, torch.device("cpu"))
    for _ in range(steps):
        trainer.train_step()
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def ddp_worker(rank: int, world: int, init_file: str, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for family in LANGUAGE_MODELS:
            grads = gradients_after_steps(family, Path(root) / family, steps=2, accumulate=2)
            if rank == 0:
                save_file(grads, str(Path(root) / f"{family}.safetensors"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    # Two updates, so the second one starts from carried state sliced by rank; 2 ranks x 2 micro-batches each.
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    for family in LANGUAGE_MODELS:
        expected = gradients_after_steps(family, tmp_path / "single" / family, steps=2)
        got = load_file(str(tmp_path / "ddp" / f"{family}.safetensors"))
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=f"{family} {name}")


@pytest.mark.parametrize("family", LANGUAGE_MODELS)
def test_micro_batches_give_the_same_gradient(tmp_path, family):
    whole = gradients_after_steps(family, tmp_path / "whole", steps=2)
    parts = gradients_after_steps(family, tmp_path / "parts", steps=2, accumulate=4)
    for name, grad in whole.items():
        torch.testing.assert_close(parts[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def torchrun(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def fbt(args: list[str], ranks: int, cwd: Path) -> None:
    """`fbt ARGS`, or `torchrun --standalone --nproc-per-node RANKS -m fbt.cli ARGS`."""
    launch = [*torchrun(ranks), "-m", "fbt.cli"] if ranks > 1 else [sys.executable, "-m", "fbt.cli"]
    done = subprocess.run([*launch, *args], cwd=cwd, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def train_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row["kind"] == "train"]


def valid_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as handle:
        return [float(row["valid_loss"]) for row in csv.DictReader(handle) if row["kind"] == "valid"]


def test_torchrun_matches_one_process_and_resumes_under_any_rank_count(tmp_path):
    fbt(["train", *SIZES, "--steps", "6", "--out", "one"], 1, tmp_path)
    fbt(["train", *SIZES, "--steps", "6", "--out", "two"], 2, tmp_path)
    # Interrupted at step 3 under 2 ranks, resumed by 1 process; and the other way round, with micro-batches.
    fbt(["train", *SIZES, "--steps", "3", "--out", "two-then-one"], 2, tmp_path)
    fbt(["train", "--resume", "--steps", "6", "--out", "two-then-one", "--no-progress"], 1, tmp_path)
    fbt(["train", *SIZES, "--steps", "3", "--out", "one-then-two"], 1, tmp_path)
    fbt(
        ["train", "--resume", "--steps", "6", "--accumulate", "2", "--out", "one-then-two", "--no-progress"],
        2,
        tmp_path,
    )
    reference = train_losses(tmp_path / "one")
    assert len(reference) == 6
    for run in ("two", "two-then-one", "one-then-two"):
        assert train_losses(tmp_path / run) == pytest.approx(reference, rel=1e-4), run
        # Validation sums losses and counts over the ranks' rows: the same final pass as one process.
        assert valid_losses(tmp_path / run)[-1] == pytest.approx(valid_losses(tmp_path / "one")[-1], rel=1e-5), run


def test_rank_slices():
    assert [Ranks(r, 2).rows(8) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    assert [share(5, 2, i) for i in range(2)] == [slice(0, 3), slice(3, 5)]
    with pytest.raises(Exception, match="cannot be split evenly over 3 ranks"):
        Ranks(0, 3).rows(8)


# Each rank of `torchrun --nproc-per-node 2 SCRIPT OUT` trains, then writes its own weights and result.
RL_RANKS = """
import faulthandler
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from fbt.rl.config import RLConfig
from fbt.rl.train import RLTrainer
from fbt.training import distributed

faulthandler.dump_traceback_later(240, exit=True)  # a rank that hangs shows where, inside the test's limit
torch.set_num_threads(1)
root = Path(sys.argv[1])
distributed.start("cpu")
rank = distributed.Ranks.current().rank
try:
    config = RLConfig(
        env="MiniGrid-MemoryS7-v0", policy="feedback", frames=256, envs=4, dim=16, layers=1, heads=2, ff=32,
        span=8, steps=32, bptt=16, epochs=1, minibatches=2,
    )
    trainer = RLTrainer.start(config, root / "run", torch.device("cpu"))
    result = trainer.fit(progress=False)
    save_file(dict(trainer.policy.state_dict()), str(root / f"rank{rank}.safetensors"))
    (root / f"result{rank}").write_text(str(result["frames"]))
finally:
    distributed.stop()
faulthandler.cancel_dump_traceback_later()
"""


def test_rl_ranks_act_in_their_own_environments_and_stay_in_step(tmp_path):
    script = tmp_path / "rl_ranks.py"
    script.write_text(RL_RANKS)
    launch = [*torchrun(2), str(script), str(tmp_path)]
    done = subprocess.run(launch, env=ONE_THREAD, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-8000:]
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    for name, tensor in weights[0].items():  # DDP averaged the gradients: both ranks made the same updates
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0, msg=name)
    assert (tmp_path / "result0").read_text() == "256"  # frames count both ranks' environments
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["frames"]) for row in rows] == [128, 256]  # one log, written by rank 0


def test_ctrl_c_under_torchrun_saves_once_and_one_process_resumes(tmp_path):
    import signal
    import time

    launch = [*torchrun(2), "-m", "fbt.cli", "train", *SIZES, "--steps", "100000", "--out", "run"]
    process = subprocess.Popen(launch, cwd=tmp_path, env=ONE_THREAD, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "metrics.csv").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # torchrun passes it on to both ranks
    _, err = process.communicate(timeout=120)
    assert err.count("saving a checkpoint after this step") == 1  # rank 0 speaks for both
    assert err.count("interrupted at step") == 1
    step = len(train_losses(tmp_path / "run"))
    assert step >= 1 and (tmp_path / "run" / "checkpoints" / f"step-{step:08d}").is_dir()
    fbt(["train", "--resume", "--steps", str(step + 2), "--out", "run", "--no-progress"], 1, tmp_path)
    assert len(train_losses(tmp_path / "run")) == step + 2
