"""Evaluating a trained policy over episodes, and rendering one episode as an animated GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fbt.errors import FbtError
from fbt.progress import progress_display
from fbt.rl.envs import make_env, make_vector_env, observation_tensors, success_return
from fbt.rl.train import load_policy

EVAL_SEED = 10_000  # evaluation environments are seeded apart from training ones (seed * 1_000_003 + update)


def act(policy, image, direction, state, start, greedy: bool) -> tuple[torch.Tensor, dict]:
    logits, _, state = policy(image[None], direction[None], state, start[None])
    if greedy:
        return logits[0].argmax(-1), state
    return torch.distributions.Categorical(logits=logits[0]).sample(), state


@torch.no_grad()
def evaluate_policy(
    run: str | Path,
    episodes: int,
    env_id: str | None = None,
    envs: int = 16,
    seed: int = EVAL_SEED,
    greedy: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """Success rate, mean return and mean length over exactly `episodes` episodes. Each environment plays a
    fixed share of them, so short episodes are not over-counted."""
    if episodes < 1:
        raise FbtError(f"--episodes must be >= 1, got {episodes}")
    device = torch.device(device)
    policy, config, directory = load_policy(run, device)
    env_id = env_id or config.env
    count = min(envs, episodes)
    vector = make_vector_env(env_id, count, seed)
    _check_compatible(policy, vector, env_id)
    threshold = success_return(make_env(env_id))
    quota = np.array([episodes // count + (i < episodes % count) for i in range(count)])
    torch.manual_seed(seed)
    obs, _ = vector.reset(seed=seed)
    image, direction = observation_tensors(obs, device)
    start = torch.ones(count, dtype=torch.bool, device=device)
    state = policy.initial_state(count, device)
    returns, lengths = np.zeros(count), np.zeros(count, dtype=np.int64)
    results: list[tuple[float, int]] = []
    with progress_display(total=episodes, desc="eval", unit="episode", shown=progress) as bar:
        while quota.sum() > 0:
            action, state = act(policy, image, direction, state, start, greedy)
            obs, reward, terminated, truncated, _ = vector.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            returns += reward
            lengths += 1
            for index in np.flatnonzero(done):
                if quota[index] > 0:
                    results.append((float(returns[index]), int(lengths[index])))
                    quota[index] -= 1
                    bar.update(1)
            returns[done], lengths[done] = 0.0, 0
            image, direction = observation_tensors(obs, device)
            start = torch.as_tensor(done, device=device)
    vector.close()
    episode_returns = np.array([r for r, _ in results])
    return {
        "env": env_id,
        "policy": config.policy,
        "checkpoint": str(directory),
        "episodes": episodes,
        "greedy": greedy,
        "success_rate": float(np.mean(episode_returns >= threshold)),
        "mean_return": float(episode_returns.mean()),
        "mean_length": float(np.mean([n for _, n in results])),
    }


def _check_compatible(policy, vector, env_id: str) -> None:
    view = vector.single_observation_space["image"].shape[0]
    if policy.encoder.project.in_features != view * view * policy.encoder.cells.embedding_dim:
        raise FbtError(f"{env_id} gives a {view}x{view} view, which this policy was not trained on")
    if vector.single_action_space.n < policy.actor.out_features:
        raise FbtError(f"{env_id} has {vector.single_action_space.n} actions, the policy {policy.actor.out_features}")


@torch.no_grad()
def render_episode(
    run: str | Path,
    out: str | Path,
    env_id: str | None = None,
    seed: int = EVAL_SEED,
    greedy: bool = False,
    fps: int = 4,
    max_frames: int = 1000,
) -> dict:
    """Play one episode and write it as an animated GIF (the full map, the agent's view highlighted)."""
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise FbtError(f"--out must name a .gif file, got {out}")
    policy, config, _ = load_policy(run, torch.device("cpu"))
    env_id = env_id or config.env
    env = make_env(env_id, render=True)
    torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    state = policy.initial_state(1, torch.device("cpu"))
    start = torch.ones(1, dtype=torch.bool)
    frames, total, steps = [env.render()], 0.0, 0
    while steps < max_frames:
        image, direction = observation_tensors({k: np.asarray(obs[k])[None] for k in ("image", "direction")}, "cpu")
        action, state = act(policy, image, direction, state, start, greedy)
        obs, reward, terminated, truncated, _ = env.step(int(action))
        start = torch.zeros(1, dtype=torch.bool)
        total += float(reward)
        steps += 1
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    images = [Image.fromarray(frame) for frame in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    # Hold the last frame for a second so the outcome can be seen before the loop restarts.
    durations = [1000 // fps] * (len(images) - 1) + [1000]
    images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return {
        "out": str(out),
        "env": env_id,
        "steps": steps,
        "return": round(total, 4),
        "success": total >= success_return(env),
    }
