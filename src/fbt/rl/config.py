"""An RL run's settings (`RLConfig`) and the sizes of its memory core, checked without torch, so that
`fbt rl --help` and configs read quickly; the policies themselves are in policies.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fbt.configs import config_from_dict
from fbt.errors import FbtError
from fbt.models.config import ModelConfig

if TYPE_CHECKING:
    from fbt.rl.ppo import PPOSettings

POLICY_NAMES = ("feedback", "transformer-xl", "lstm", "mlp")


def core_config(policy: str, dim: int, layers: int, heads: int, ff: int, span: int, head_dim: int = 0) -> ModelConfig:
    """The sizes of a core, checked; the policy, not the config's `model`, picks the core."""
    if policy not in POLICY_NAMES:
        raise FbtError(f"unknown policy {policy!r}; choose one of {', '.join(POLICY_NAMES)}")
    return ModelConfig(vocab_size=1, dim=dim, layers=layers, heads=heads, head_dim=head_dim, ff=ff, span=span)


@dataclass
class RLConfig:
    env: str = "MiniGrid-MemoryS7-v0"  # a gymnasium id with MiniGrid observations (rl/envs.py)
    policy: str = "feedback"  # one of POLICY_NAMES
    frames: int = 1_000_000  # environment steps, summed over environments
    envs: int = 16  # environments stepped together
    seed: int = 0  # weights, action sampling, minibatch order and environments
    # Use only the environment's first `actions` actions (0: all). MiniGrid's first three are turn left, turn
    # right and move forward, all its memory and maze tasks need; the other four do nothing in them.
    actions: int = 3
    lr: float = 1e-3  # Adam, constant
    dim: int = 64  # width of the encoder output and the core
    layers: int = 2
    heads: int = 4
    head_dim: int = 0  # transformer cores: width of a head, 0: dim / heads
    ff: int = 256
    span: int = 32  # transformer cores: how many past steps a step may attend to
    steps: int = 128  # PPO (rl/ppo.py): environment steps per environment per update
    bptt: int = 32
    epochs: int = 4
    minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    save_every: int = 50  # updates between checkpoints (a final one is always written)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise FbtError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICY_NAMES)}")
        if not isinstance(self.actions, int) or self.actions < 0:
            raise FbtError(f"actions must be 0 (all) or a positive integer, got {self.actions!r}")
        for name in (
            "frames",
            "envs",
            "dim",
            "layers",
            "heads",
            "ff",
            "span",
            "steps",
            "bptt",
            "epochs",
            "minibatches",
            "save_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FbtError(f"{name} must be a positive integer, got {value!r}")
        if self.steps % self.bptt:
            raise FbtError(f"bptt {self.bptt} must divide the rollout length {self.steps}")
        if self.minibatches > self.envs * (self.steps // self.bptt):
            raise FbtError(f"{self.minibatches} minibatches of {self.envs * (self.steps // self.bptt)} sequences")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FbtError(f"lr must be a positive number, got {self.lr}")
        core_config(
            self.policy, self.dim, self.layers, self.heads, self.ff, self.span, self.head_dim
        )  # checks the sizes

    @property
    def frames_per_update(self) -> int:
        return self.envs * self.steps

    def ppo(self) -> PPOSettings:
        from fbt.rl.ppo import PPOSettings

        return PPOSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PPOSettings)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RLConfig:
        return config_from_dict(cls, data, "RL")
