"""`fbt rl train|eval|render|plot`: memory agents in partially observed gridworlds (fbt.rl)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from fbt.commands.common import DefaultsShown, OneLineParser, print_result
from fbt.errors import FbtError
from fbt.rl.config import RLConfig

NAME = "rl"

# RLConfig field -> help; every one is a flag (underscores as dashes) whose default is the config's.
RL_FLAGS = {
    "env": "gymnasium id with MiniGrid observations, e.g. MiniGrid-MemoryS7-v0 or fbt/GoalMaze-S9-v0",
    "policy": "feedback, transformer-xl, lstm or mlp (memoryless)",
    "frames": "environment steps to train for, summed over environments",
    "envs": "environments stepped together",
    "seed": "weights, action sampling, minibatch order and environments",
    "actions": "use only the first N actions, 0 all (MiniGrid: 3 are turn left, turn right, forward)",
    "lr": "Adam learning rate (constant)",
    "dim": "width of the observation encoding and the core",
    "layers": "blocks of the core (LSTM layers; MLP hidden layers)",
    "heads": "attention heads (transformer cores)",
    "head_dim": "width of each head's queries/keys/values, 0: dim / heads (transformer cores)",
    "ff": "feed-forward hidden width (transformer cores)",
    "span": "past steps a step may attend to (transformer cores)",
    "steps": "environment steps per environment per PPO update",
    "bptt": "length of the sequences the update re-runs the policy over (divides --steps)",
    "epochs": "PPO passes over each rollout",
    "minibatches": "gradient steps per epoch",
    "gamma": "discount",
    "gae_lambda": "GAE lambda",
    "clip": "PPO ratio clip",
    "value_coef": "weight of the value loss",
    "entropy_coef": "weight of the entropy bonus",
    "max_grad_norm": "gradient norm clipping",
    "save_every": "updates between checkpoints",
}


def add_parser(subparsers) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(RLConfig)}
    rl = subparsers.add_parser(NAME, help="reinforcement learning with memory policies in MiniGrid (PPO)")
    kinds = rl.add_subparsers(dest="rl_command", required=True, parser_class=OneLineParser)

    train = kinds.add_parser("train", help="train a policy with PPO", formatter_class=DefaultsShown)
    for name, text in RL_FLAGS.items():
        kind = type(defaults[name])
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{text} (default: {defaults[name]})")
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument("--resume", action="store_true", help="continue the run in --out (--frames may extend it)")
    add_run_flags(train)

    ev = kinds.add_parser("eval", help="success rate, return and length over episodes", formatter_class=DefaultsShown)
    ev.add_argument("run", help="run directory (its latest checkpoint) or a checkpoint directory")
    ev.add_argument("--episodes", type=int, default=200, help="episodes to play")
    ev.add_argument("--env", help="another environment with the same view and actions (default: the run's)")
    ev.add_argument("--envs", type=int, default=16, help="environments stepped together")
    ev.add_argument("--seed", type=int, default=10_000, help="seed of the evaluation environments")
    ev.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    add_run_flags(ev)

    render = kinds.add_parser("render", help="write one episode as an animated GIF", formatter_class=DefaultsShown)
    render.add_argument("run", help="run directory or checkpoint directory")
    render.add_argument("--out", required=True, help="GIF file to write")
    render.add_argument("--env", help="environment (default: the run's)")
    render.add_argument("--seed", type=int, default=10_000, help="seed of the episode")
    render.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    render.add_argument("--fps", type=int, default=4, help="frames per second of the animation")
    render.add_argument("--json", action="store_true", help="print one JSON object")

    plot = kinds.add_parser(
        "plot", help="learning curves of runs (mean and spread over seeds) as a PNG", formatter_class=DefaultsShown
    )
    plot.add_argument("runs", nargs="+", help="RL run directories; runs of one env and policy are seeds")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument(
        "--metric",
        default="success_rate",
        choices=("success_rate", "mean_return", "mean_length"),
        help="the curve to draw",
    )
    plot.add_argument("--window", type=int, default=10, help="updates averaged per point")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (small policies run fastest on CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def train(args: argparse.Namespace) -> None:
    from fbt import runlock
    from fbt.device import resolve_device
    from fbt.rl.train import RLTrainer
    from fbt.training import distributed
    from fbt.training.trainer import TrainingInterrupted

    settings = {name: getattr(args, name) for name in RL_FLAGS if getattr(args, name) is not None}
    # Under torchrun: data-parallel PPO, each rank with envs / N environments; rank 0 reports.
    device = distributed.start(args.device) if distributed.launched_by_torchrun() else resolve_device(args.device)
    main_rank = distributed.Ranks.current().main
    progress = not args.no_progress and main_rank
    with runlock.hold(args.out, main_rank):
        if args.resume:
            changed = sorted(set(settings) - {"frames"})
            if changed:
                raise FbtError(
                    f"--resume continues the run with its own settings; only --frames may change, "
                    f"not {', '.join('--' + n.replace('_', '-') for n in changed)}"
                )
            trainer = RLTrainer.resume(args.out, device, settings.get("frames"))
        else:
            trainer = RLTrainer.start(RLConfig(**settings), args.out, device)
        if progress:
            cfg = trainer.config
            print(
                f"fbt rl: {cfg.policy} policy ({sum(p.numel() for p in trainer.policy.parameters()):,} "
                f"parameters) on {cfg.env}, {cfg.envs} environments, {cfg.frames:,} frames, PPO updates of "
                f"{cfg.frames_per_update:,} frames -> {args.out}",
                file=sys.stderr,
            )
        result = trainer.fit(progress=progress)
    if main_rank:
        print_result({"run": args.out, **result}, args.json)
    if "stopped" in result:
        raise TrainingInterrupted(args.out, result["updates"], command="fbt rl train", unit="update")
    if not main_rank:
        return
    if progress:
        print(
            f"next:\n  fbt rl eval {args.out} --episodes 200\n  fbt rl render {args.out} --out {args.out}/episode.gif",
            file=sys.stderr,
        )


def evaluate(args: argparse.Namespace) -> None:
    from fbt.checkpoint import find_checkpoint
    from fbt.device import resolve_device
    from fbt.rl.evaluate import evaluate_policy
    from fbt.rundir import record_evaluation

    result = evaluate_policy(
        args.run,
        args.episodes,
        args.env,
        args.envs,
        args.seed,
        args.greedy,
        resolve_device(args.device),
        progress=not (args.no_progress or args.json),
    )
    if args.env is None:  # the run's own environment: `fbt runs` shows it as the run's test figure
        record_evaluation(find_checkpoint(args.run), "test", result)
    print_result(result, args.json)


def render(args: argparse.Namespace) -> None:
    from fbt.rl.evaluate import render_episode

    print_result(render_episode(args.run, args.out, args.env, args.seed, args.greedy, args.fps), args.json)


def plot(args: argparse.Namespace) -> None:
    from fbt.rl.plots import plot_rl_runs

    print(f"wrote {plot_rl_runs(args.runs, args.out, args.metric, args.window)}")


KINDS = {"train": train, "eval": evaluate, "render": render, "plot": plot}


def run(args: argparse.Namespace) -> None:
    KINDS[args.rl_command](args)
