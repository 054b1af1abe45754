"""An RL run: its configuration, the training loop around PPO, checkpoints, resume and metrics.

A run directory looks like one of `fbt train` (checkpoint.py): config.json with {"rl": {...}},
metrics.csv with one row per update, checkpoints/ with the policy (safetensors) and the optimiser and RNG state.
Environments hold no saved state: a resumed run starts fresh episodes (seeded from the run's seed and the
update it resumes at) and continues the weights, optimiser, RNG streams, frame count and metrics.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from fbt.checkpoint import find_checkpoint, has_checkpoint, save_checkpoint
from fbt.errors import FbtError
from fbt.progress import progress_display
from fbt.rl.config import RLConfig, core_config
from fbt.rl.envs import check_env_id, make_env, make_vector_env, success_return
from fbt.rl.policies import Policy
from fbt.rl.ppo import Actor, EpisodeTracker, update
from fbt.rundir import (
    CONFIG,
    METRICS,
    RESUME_INFO,
    RESUME_TENSORS,
    finite_weights,
    load_tensors,
    load_weights,
    read_json,
    write_json_atomic,
)
from fbt.training.distributed import Ranks
from fbt.training.interrupt import stop_on_signals
from fbt.training.metrics_log import CsvLog
from fbt.training.state_io import RNG, optimizer_from_flat, optimizer_to_flat

COLUMNS = (
    "update",
    "frames",
    "elapsed_s",
    "frames_per_s",
    "episodes",
    "success_rate",
    "mean_return",
    "mean_length",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "grad_norm",
)


def build_policy(config: RLConfig) -> Policy:
    env = make_env(config.env)
    view = env.observation_space["image"].shape[0]
    actions = env.action_space.n
    env.close()
    if config.actions > actions:
        raise FbtError(f"{config.env} has {actions} actions, fewer than --actions {config.actions} (0 uses all)")
    actions = config.actions or actions
    return Policy(
        config.policy,
        view,
        actions,
        core_config(config.policy, config.dim, config.layers, config.heads, config.ff, config.span, config.head_dim),
    )


def read_rl_config(path: Path) -> RLConfig:
    data = read_json(Path(path) / CONFIG)
    if "rl" not in data:
        raise FbtError(f"{path} is not a reinforcement-learning run (its {CONFIG} has no 'rl' entry)")
    return RLConfig.from_dict(data["rl"])


def load_policy(path: str | Path, device: torch.device) -> tuple[Policy, RLConfig, Path]:
    """The policy of a run's latest checkpoint (or of a checkpoint directory), in eval mode."""
    directory = find_checkpoint(Path(path))
    config = read_rl_config(directory)
    policy = build_policy(config).to(device)
    load_weights(policy, directory)
    return policy.eval(), config, directory


class RLTrainer:
    def __init__(self, config: RLConfig, out: str | Path, device: torch.device, resume: bool = False):
        self.config, self.out, self.device = config, Path(out), device
        check_env_id(config.env)
        # Under torchrun each rank steps envs / N of the environments and DDP averages the PPO gradients.
        self.ranks = Ranks.current()
        mine = self.ranks.rows(config.envs)  # this rank's environments, numbered as in the global run
        local_envs = mine.stop - mine.start
        if config.minibatches > local_envs * (config.steps // config.bptt):
            raise FbtError(
                f"each of {self.ranks.world} ranks holds {local_envs * (config.steps // config.bptt)} "
                f"sequences per update, too few for {config.minibatches} minibatches"
            )
        torch.manual_seed(config.seed)
        self.policy = build_policy(config).to(device)
        self.learner = (
            self.policy
            if self.ranks.world == 1
            else DistributedDataParallel(self.policy, device_ids=[device] if device.type == "cuda" else None)
        )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(config.seed)  # minibatch order
        self.update_index, self.elapsed = 0, 0.0
        self.metrics = CsvLog(self.out / METRICS, COLUMNS, active=self.ranks.main)
        if resume:
            self.load(find_checkpoint(self.out))
        if self.ranks.rank:  # other ranks sample other actions
            torch.manual_seed(config.seed * 1_000_003 + self.update_index + 7_919 * self.ranks.rank)
        self.tracker = EpisodeTracker(local_envs, success_return(make_env(config.env)))
        # A resumed run starts new episodes, seeded apart from those of the first start; rank r's environments
        # are those the global run numbers r·envs/N onwards.
        env_seed = config.seed * 1_000_003 + self.update_index + mine.start
        self.envs = make_vector_env(config.env, local_envs, env_seed)

    @classmethod
    def start(cls, config: RLConfig, out: str | Path, device: torch.device) -> RLTrainer:
        out = Path(out)
        if has_checkpoint(out):
            raise FbtError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        trainer = cls(config, out, device)
        trainer.metrics.reset()  # left by a start that stopped before its first save
        if trainer.ranks.main:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / CONFIG, {"rl": config.to_dict()})
        trainer.ranks.barrier()
        return trainer

    @classmethod
    def resume(cls, out: str | Path, device: torch.device, frames: int | None = None) -> RLTrainer:
        out = Path(out)
        if not has_checkpoint(out):
            raise FbtError(f"{out} holds no RL run to resume (no checkpoint); start it without --resume")
        config = read_rl_config(out)
        if frames is not None and frames != config.frames:
            config = dataclasses.replace(config, frames=frames)
            if Ranks.current().main:
                write_json_atomic(out / CONFIG, {"rl": config.to_dict()})
        return cls(config, out, device, resume=True)

    @property
    def frames(self) -> int:
        return self.update_index * self.config.frames_per_update

    def save(self) -> Path | None:
        if not self.ranks.main:
            return None
        weights = finite_weights(self.policy, f"update {self.update_index}")
        tensors, optimizer_info = optimizer_to_flat(self.optimizer)
        tensors = {**tensors, RNG: torch.get_rng_state(), "rng.minibatch": self.generator.get_state()}
        info = {
            "update": self.update_index,
            "frames": self.frames,
            "elapsed_s": self.elapsed,
            "optimizer": optimizer_info,
        }
        return save_checkpoint(self.out, self.update_index, {"rl": self.config.to_dict()}, weights, tensors, info)

    def load(self, directory: Path) -> None:
        load_weights(self.policy, directory)
        tensors = load_tensors(directory / RESUME_TENSORS)
        info = read_json(directory / RESUME_INFO)
        optimizer_from_flat(self.optimizer, tensors, info["optimizer"])
        torch.set_rng_state(tensors[RNG])
        self.generator.set_state(tensors["rng.minibatch"])
        self.update_index, self.elapsed = int(info["update"]), float(info["elapsed_s"])

    def log(self, row: dict) -> None:
        self.metrics.append({name: (f"{v:.6g}" if isinstance(v, float) else v) for name, v in row.items()})

    def fit(self, progress: bool = True) -> dict:
        cfg = self.config
        total = math.ceil(cfg.frames / cfg.frames_per_update)
        actor = Actor(self.policy, self.envs, self.device, self.tracker)
        recent: deque = deque(maxlen=200)  # the last episodes, for the progress bar and the result
        bar = progress_display(
            total=total * cfg.frames_per_update,
            initial=self.frames,
            desc="train",
            unit="frame",
            unit_scale=True,
            shown=progress and self.ranks.main,
        )
        settings = cfg.ppo()
        with stop_on_signals(announce=self.ranks.main) as stop:
            while self.update_index < total and not self.ranks.any(stop.requested):
                began = time.perf_counter()
                self.policy.eval()  # the cores have no dropout; eval marks acting
                rollout = actor.collect(settings)
                self.policy.train()
                stats = update(self.learner, self.optimizer, rollout, settings, self.generator)
                stats = dict(
                    zip(stats, (v / self.ranks.world for v in self.ranks.sum(list(stats.values()))), strict=True)
                )
                seconds = time.perf_counter() - began
                self.elapsed += seconds
                self.update_index += 1
                finished = list(self.tracker.finished)
                episodes = self.episodes_of_all_ranks(self.tracker.drain())
                recent.extend(finished)
                self.log(
                    {
                        "update": self.update_index,
                        "frames": self.frames,
                        "elapsed_s": self.elapsed,
                        "frames_per_s": cfg.frames_per_update / seconds,
                        **episodes,
                        **stats,
                    }
                )
                bar.update(cfg.frames_per_update)
                bar.set_postfix_str(self.summary(recent), refresh=False)
                if self.update_index % cfg.save_every == 0:
                    self.save()
        bar.close()
        self.save()
        self.envs.close()
        result = {"frames": self.frames, "updates": self.update_index, "elapsed_s": round(self.elapsed, 1)}
        result.update(self.recent_stats(recent))
        if stop.requested:
            result["stopped"] = "by signal; continue with --resume"
        return result

    def episodes_of_all_ranks(self, episodes: dict) -> dict:
        """The episode means of an update over every rank's environments (weighted by episodes)."""
        if self.ranks.world == 1:
            return episodes
        count = episodes["episodes"]
        names = ("success_rate", "mean_return", "mean_length")
        sums = self.ranks.sum([count, *(count * episodes.get(name, 0.0) for name in names)])
        if not sums[0]:
            return {"episodes": 0}
        return {
            "episodes": int(sums[0]),
            **{name: total / sums[0] for name, total in zip(names, sums[1:], strict=True)},
        }

    def recent_stats(self, recent: deque) -> dict:
        if not recent:
            return {}
        threshold = self.tracker.success_return
        return {
            "recent_episodes": len(recent),
            "recent_success_rate": round(sum(r >= threshold for r, _ in recent) / len(recent), 4),
            "recent_mean_return": round(sum(r for r, _ in recent) / len(recent), 4),
        }

    def summary(self, recent: deque) -> str:
        """The progress bar's note (tqdm shows frames/s): success and return of the last episodes."""
        stats = self.recent_stats(recent)
        if not stats:
            return "no episode finished yet"
        return f"success {stats['recent_success_rate']:.1%} return {stats['recent_mean_return']:.3f}"
