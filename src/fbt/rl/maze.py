"""A goal maze for memory: find the goal in a random maze, get teleported, and find it again.

Closer to the paper's maze task than MiniGrid's corridors: a new perfect maze (depth-first carving) and a new
goal every episode, seen through MiniGrid's partial egocentric view (walls block sight). Reaching the goal
gives reward 1 and moves the agent to a random free cell with a random heading; the episode lasts a fixed
number of steps. An agent that remembers where the goal was walks back to it; one that does not must search
again. Success is reaching the goal twice (found, then returned to), `success_return` below.
"""

from __future__ import annotations

from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Goal, Wall
from minigrid.minigrid_env import MiniGridEnv


class GoalMazeEnv(MiniGridEnv):
    success_return = 2.0  # the return (goals reached) that counts as an episode's success

    def __init__(self, size: int = 9, max_steps: int | None = None, **kwargs):
        if size % 2 == 0 or size < 5:
            raise ValueError(f"maze size must be odd and >= 5, got {size}")
        super().__init__(
            mission_space=MissionSpace(mission_func=lambda: "find the goal, then return to it"),
            grid_size=size,
            max_steps=max_steps or 2 * size * size,
            see_through_walls=False,
            **kwargs,
        )

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        for x in range(width):
            for y in range(height):
                self.grid.set(x, y, Wall())
        # Rooms sit at odd coordinates; carving a wall between two rooms joins them (a spanning tree: one path
        # between any two cells).
        start = (2 * self._rand_int(0, width // 2) + 1, 2 * self._rand_int(0, height // 2) + 1)
        self.grid.set(*start, None)
        stack, seen = [start], {start}
        while stack:
            x, y = stack[-1]
            steps = ((x + dx, y + dy) for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2)))
            nexts = [(a, b) for a, b in steps if 0 < a < width - 1 and 0 < b < height - 1 and (a, b) not in seen]
            if not nexts:
                stack.pop()
                continue
            nx, ny = nexts[self._rand_int(0, len(nexts))]
            self.grid.set((x + nx) // 2, (y + ny) // 2, None)
            self.grid.set(nx, ny, None)
            seen.add((nx, ny))
            stack.append((nx, ny))
        self.place_obj(Goal())
        self.place_agent()
        self.mission = "find the goal, then return to it"

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated:  # MiniGrid ends the episode on the goal; here the agent is moved away instead
            reward, terminated = 1.0, False
            self.place_agent()
            obs = self.gen_obs()
        return obs, reward, terminated, truncated, info
