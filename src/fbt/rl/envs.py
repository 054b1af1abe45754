"""Environments for memory agents: MiniGrid's tasks (and the project's goal maze), vectorised with gymnasium.

Every environment gives MiniGrid observations: an egocentric view "image" (V, V, 3) of (object, colour, state)
codes and a heading "direction" in 0..3. Finished episodes restart in the same step (gymnasium's SAME_STEP
autoreset), so the observation returned after an episode ends is the first of the next one.
"""

from __future__ import annotations

import numpy as np
import torch

from fbt.errors import FbtError

MEMORY_ENVS = (
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-MemoryS9-v0",
    "MiniGrid-MemoryS11-v0",
    "MiniGrid-MemoryS13-v0",
    "MiniGrid-MemoryS13Random-v0",
    "MiniGrid-MemoryS17Random-v0",
)
MAZE_ENVS = {"fbt/GoalMaze-S9-v0": 9, "fbt/GoalMaze-S11-v0": 11}
# The success rate of a policy without memory: in a Memory task the cue is out of view at the fork, so it can
# at best pick one of the two objects at random.
MEMORYLESS_SUCCESS = dict.fromkeys(MEMORY_ENVS, 0.5)


def gym():
    """gymnasium with MiniGrid's and the project's environments registered."""
    try:
        import gymnasium
        import minigrid  # noqa: F401  (importing it registers MiniGrid's environments)
    except ImportError:
        raise FbtError("reinforcement learning needs gymnasium and minigrid: pip install 'fbt[rl]'") from None
    for env_id, size in MAZE_ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point="fbt.rl.maze:GoalMazeEnv", kwargs={"size": size})
    return gymnasium


def check_env_id(env_id: str) -> None:
    gymnasium = gym()
    if env_id not in gymnasium.registry:
        raise FbtError(
            f"unknown environment {env_id!r}; memory tasks: {', '.join(MEMORY_ENVS)}; "
            f"mazes: {', '.join(MAZE_ENVS)} (or any registered MiniGrid id)"
        )


def make_env(env_id: str, render: bool = False):
    check_env_id(env_id)
    env = gym().make(env_id, **({"render_mode": "rgb_array"} if render else {}))
    spaces = getattr(env.observation_space, "spaces", {})
    if "image" not in spaces or "direction" not in spaces:
        raise FbtError(f"{env_id} does not give MiniGrid observations (an 'image' and a 'direction')")
    return env


def make_vector_env(env_id: str, count: int, seed: int):
    """`count` copies of `env_id` stepped together, seeded seed, seed + 1, ..."""
    gymnasium = gym()
    make_env(env_id).close()  # checks the id and the observations with a clear error
    envs = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make(env_id) for _ in range(count)], autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP
    )
    envs.reset(seed=seed)
    return envs


def success_return(env) -> float:
    """The episode return that counts as success: the maze's own, else any reward (MiniGrid pays only on
    success, e.g. touching the matching object in the memory tasks)."""
    return getattr(env.unwrapped, "success_return", 1e-9)


def observation_tensors(obs: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A (batched) MiniGrid observation as uint8 images (B, V, V, 3) and long headings (B,)."""
    image = torch.from_numpy(np.ascontiguousarray(obs["image"], dtype=np.uint8)).to(device)
    direction = torch.as_tensor(np.asarray(obs["direction"]), dtype=torch.long, device=device)
    return image, direction
