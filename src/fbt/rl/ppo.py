"""Proximal Policy Optimization for memory policies (Schulman et al., arXiv 1707.06347), in one file.

One update: collect `steps` environment steps from each of `envs` environments with the policy's memory
carried from step to step (cleared where an episode starts), estimate advantages with generalised advantage
estimation (Schulman et al., arXiv 1506.02438), then run `epochs` passes of minibatch gradient steps on the
clipped surrogate objective, a value loss and an entropy bonus.

Recurrent policies are trained by truncated backpropagation through time: the rollout is cut into sequences
of `bptt` steps, the policy state at the start of each is stored during the rollout, and the update re-runs
the policy over each sequence from its stored state, with the same episode starts. At the weights of the
rollout the re-run reproduces the rollout's outputs exactly (tests/test_rl.py checks it), so the ratio
pi_new / pi_old starts at 1 as PPO requires. Episodes cut by a time limit are treated as ended (no bootstrap
from the final observation), as in most PPO references.

Shapes: T rollout steps, N environments, C = T / bptt sequences per environment, A actions, V view size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fbt.errors import FbtError
from fbt.rl.envs import observation_tensors


@dataclass
class PPOSettings:
    steps: int = 128  # environment steps per environment between updates (T)
    bptt: int = 32  # length of the re-run sequences; divides steps
    epochs: int = 4  # passes over the rollout per update
    minibatches: int = 4  # gradient steps per epoch
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE's bias/variance trade-off
    clip: float = 0.2  # PPO's ratio clip
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5


@dataclass
class Rollout:
    images: torch.Tensor  # (T, N, V, V, 3) uint8
    directions: torch.Tensor  # (T, N)
    starts: torch.Tensor  # (T, N) bool: observation t begins an episode
    actions: torch.Tensor  # (T, N)
    logprobs: torch.Tensor  # (T, N) under the rollout policy
    values: torch.Tensor  # (T, N)
    rewards: torch.Tensor  # (T, N)
    states: list[dict]  # C policy states, at steps 0, bptt, 2 bptt, ...
    next_value: torch.Tensor  # (N,) value of the observation after the last step
    next_start: torch.Tensor  # (N,) whether that observation begins an episode


@dataclass
class EpisodeTracker:
    """Returns and lengths of the episodes in flight, and those that finished since the last `drain`."""

    envs: int
    success_return: float
    running_return: np.ndarray = field(init=False)
    running_length: np.ndarray = field(init=False)
    finished: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.running_return = np.zeros(self.envs)
        self.running_length = np.zeros(self.envs, dtype=np.int64)

    def step(self, rewards: np.ndarray, done: np.ndarray) -> None:
        self.running_return += rewards
        self.running_length += 1
        for index in np.flatnonzero(done):
            self.finished.append((float(self.running_return[index]), int(self.running_length[index])))
        self.running_return[done] = 0.0
        self.running_length[done] = 0

    def drain(self) -> dict:
        episodes, self.finished = self.finished, []
        if not episodes:
            return {"episodes": 0}
        returns = np.array([r for r, _ in episodes])
        return {
            "episodes": len(episodes),
            "success_rate": float(np.mean(returns >= self.success_return)),
            "mean_return": float(returns.mean()),
            "mean_length": float(np.mean([n for _, n in episodes])),
        }


class Actor:
    """The policy acting in vectorised environments, carrying its memory and the current observation."""

    def __init__(self, policy, envs, device: torch.device, tracker: EpisodeTracker):
        self.policy, self.envs, self.device, self.tracker = policy, envs, device, tracker
        count = envs.num_envs
        obs, _ = envs.reset()
        self.image, self.direction = observation_tensors(obs, device)
        self.start = torch.ones(count, dtype=torch.bool, device=device)
        self.state = policy.initial_state(count, device)

    @torch.no_grad()
    def collect(self, settings: PPOSettings) -> Rollout:
        T, N = settings.steps, self.envs.num_envs
        columns: dict[str, list] = {
            name: [] for name in ("images", "directions", "starts", "actions", "logprobs", "values", "rewards")
        }
        states = []
        for t in range(T):
            if t % settings.bptt == 0:
                states.append({name: value.clone() for name, value in self.state.items()})
            logits, value, self.state = self.policy(
                self.image[None], self.direction[None], self.state, self.start[None]
            )
            dist = torch.distributions.Categorical(logits=logits[0])
            action = dist.sample()
            obs, reward, terminated, truncated, _ = self.envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            self.tracker.step(reward, done)
            rewards = torch.as_tensor(reward, dtype=torch.float32, device=self.device)
            for name, item in (
                ("images", self.image),
                ("directions", self.direction),
                ("starts", self.start),
                ("actions", action),
                ("logprobs", dist.log_prob(action)),
                ("values", value[0]),
                ("rewards", rewards),
            ):
                columns[name].append(item)
            self.image, self.direction = observation_tensors(obs, self.device)
            self.start = torch.as_tensor(done, device=self.device)
        # The value of the next observation; the state this computes is dropped (the next rollout recomputes it).
        _, next_value, _ = self.policy(self.image[None], self.direction[None], self.state, self.start[None])
        stacked = {name: torch.stack(items) for name, items in columns.items()}
        assert stacked["images"].shape[:2] == (T, N)
        return Rollout(**stacked, states=states, next_value=next_value[0], next_start=self.start.clone())


def compute_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    starts: torch.Tensor,
    next_value: torch.Tensor,
    next_start: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and value targets (T, N). starts[t] marks observation t as an episode's first, so the
    step from t to t + 1 continues an episode only if starts[t + 1] is false."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        following_value = next_value if t == T - 1 else values[t + 1]
        following_start = next_start if t == T - 1 else starts[t + 1]
        carries = 1.0 - following_start.float()
        delta = rewards[t] + gamma * following_value * carries - values[t]
        running = delta + gamma * gae_lambda * carries * running
        advantages[t] = running
    return advantages, advantages + values


def sequences(tensor: torch.Tensor, bptt: int) -> torch.Tensor:
    """(T, N, ...) -> (bptt, C * N, ...): sequence c * N + n is steps c * bptt .. of environment n."""
    T, N = tensor.shape[:2]
    return tensor.reshape(T // bptt, bptt, N, *tensor.shape[2:]).transpose(0, 1).flatten(1, 2)


def rollout_sequences(rollout: Rollout, bptt: int, **extra: torch.Tensor) -> tuple[dict, dict]:
    """The rollout's columns (and `extra` (T, N) ones) as (bptt, C * N, ...) sequences, and the policy states
    stored at their starts, (C * N, ...) in the same order."""
    columns = {
        "images": rollout.images,
        "directions": rollout.directions,
        "starts": rollout.starts,
        "actions": rollout.actions,
        "logprobs": rollout.logprobs,
        "values": rollout.values,
        **extra,
    }
    data = {name: sequences(tensor, bptt) for name, tensor in columns.items()}
    states = {name: torch.cat([s[name] for s in rollout.states]) for name in rollout.states[0]}
    return data, states


def replay(policy, data: dict, states: dict, chosen: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Re-run the policy over the chosen sequences from their stored states: the minibatch, log pi (bptt, b, A)
    and values (bptt, b)."""
    batch = {name: tensor[:, chosen] for name, tensor in data.items()}
    state = {name: tensor[chosen] for name, tensor in states.items()}
    logits, values, _ = policy(batch["images"], batch["directions"], state, batch["starts"])
    return batch, torch.log_softmax(logits, dim=-1), values


def update(policy, optimizer, rollout: Rollout, settings: PPOSettings, generator: torch.Generator) -> dict:
    """PPO's epochs of minibatch steps on one rollout; returns the means of the losses and diagnostics."""
    advantages, returns = compute_advantages(
        rollout.rewards,
        rollout.values,
        rollout.starts,
        rollout.next_value,
        rollout.next_start,
        settings.gamma,
        settings.gae_lambda,
    )
    data, states = rollout_sequences(rollout, settings.bptt, advantages=advantages, returns=returns)
    count = data["starts"].shape[1]
    sums: dict[str, float] = {}
    for _ in range(settings.epochs):
        order = torch.randperm(count, generator=generator)
        for chosen in order.chunk(settings.minibatches):
            batch, logprobs, values = replay(policy, data, states, chosen)
            new_logprob = logprobs.gather(-1, batch["actions"][..., None])[..., 0]
            entropy = -(logprobs.exp() * logprobs).sum(-1).mean()
            advantage = batch["advantages"]
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            log_ratio = new_logprob - batch["logprobs"]
            ratio = log_ratio.exp()
            policy_loss = -torch.min(ratio * advantage, ratio.clamp(1 - settings.clip, 1 + settings.clip) * advantage)
            value_loss = 0.5 * F.mse_loss(values, batch["returns"])
            loss = policy_loss.mean() + settings.value_coef * value_loss - settings.entropy_coef * entropy
            if not torch.isfinite(loss):
                raise FbtError(f"non-finite PPO loss ({loss.item()}): stopping before the weights are spoiled")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats = {
                    "policy_loss": policy_loss.mean().item(),
                    "value_loss": value_loss.item(),
                    "entropy": entropy.item(),
                    "approx_kl": ((ratio - 1) - log_ratio).mean().item(),  # Schulman's low-variance estimator
                    "clip_fraction": ((ratio - 1).abs() > settings.clip).float().mean().item(),
                    "grad_norm": grad_norm.item(),
                }
            for name, value in stats.items():
                sums[name] = sums.get(name, 0.0) + value
    steps = settings.epochs * settings.minibatches
    return {name: total / steps for name, total in sums.items()}
