"""Learning curves of RL runs: success rate against frames, one line per policy (mean over seeds, min-max band)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from fbt.errors import FbtError
from fbt.rl.envs import MEMORYLESS_SUCCESS
from fbt.rl.train import read_rl_config
from fbt.rundir import METRICS


def read_curve(run: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames and `column` of a run's metrics.csv (updates that finished no episode are skipped)."""
    try:
        with open(run / METRICS, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get(column)]
    except FileNotFoundError:
        raise FbtError(f"{run} has no {METRICS}") from None
    return np.array([float(r["frames"]) for r in rows]), np.array([float(r[column]) for r in rows])


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` updates (shorter at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot_rl_runs(runs: list[str], out: str | Path, column: str = "success_rate", window: int = 10) -> Path:
    """One line per environment and policy: runs that share both are seeds."""
    configs = {Path(run): read_rl_config(Path(run)) for run in runs}
    several_envs = len({config.env for config in configs.values()}) > 1
    groups: dict[str, list[Path]] = defaultdict(list)
    for run, config in sorted(configs.items(), key=lambda item: (item[1].env, item[1].policy)):
        groups[f"{config.env} {config.policy}" if several_envs else config.policy].append(run)
    return plot_rl_groups(groups, out, column, window)


def plot_rl_groups(
    groups: dict[str, list[Path]], out: str | Path, column: str = "success_rate", window: int = 10
) -> Path:
    """One line per labelled group of runs (its seeds): the mean of their smoothed curves, the min-max band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        raise FbtError("plots need matplotlib: pip install 'fbt[plot]'") from None
    envs = {read_rl_config(run).env for runs in groups.values() for run in runs}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for name, runs in groups.items():
        curves = [curve for curve in (read_curve(run, column) for run in runs) if len(curve[0])]
        if not curves:  # no run of the group has finished an episode yet
            continue
        # Seeds are compared on the frames all of them reached, on a common grid.
        end = min(frames[-1] for frames, _ in curves)
        grid = np.linspace(0, end, 200)
        values = np.stack([np.interp(grid, frames, smooth(v, window)) for frames, v in curves])
        label = f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        line = ax.plot(grid, values.mean(0), label=label)[0]
        drawn = True
        if len(curves) > 1:
            ax.fill_between(grid, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    if column == "success_rate":
        ax.set_ylim(-0.02, 1.02)  # the whole range: a band of 0.46-0.65 looked like a gap
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        floors = {MEMORYLESS_SUCCESS.get(env) for env in envs}
        if len(floors) == 1 and None not in floors:
            (floor,) = floors
            ax.axhline(floor, color="gray", linestyle=":", linewidth=1, label=f"memoryless policy ({floor:.0%})")
    ax.set_xlabel("frames")
    ax.set_ylabel(column.replace("_", " ") + f" (mean of {window} updates)")
    ax.set_title(", ".join(sorted(envs)))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    if not drawn:
        ax.text(0.5, 0.5, "no episode finished yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
