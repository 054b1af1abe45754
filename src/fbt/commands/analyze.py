"""`fbt analyze gradcheck|jacobian|hessian|memory`: the flags and what each prints (the analyses: fbt.analysis)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fbt.commands.common import DefaultsShown, OneLineParser
from fbt.errors import FbtError
from fbt.models.config import ModelConfig
from fbt.models.registry import family_names

if TYPE_CHECKING:
    import torch

NAME = "analyze"

# Per subcommand: the batch (streams) and segment (tokens) of data it differentiates by default.
DATA_DEFAULTS = {"gradcheck": (2, 32), "jacobian": (1, 16), "hessian": (4, 32), "memory": (4, 64)}


def add_parser(subparsers) -> None:
    analyze = subparsers.add_parser(
        NAME,
        help="automatic differentiation tools: gradient checks, Jacobian modes, Hessian spectra, memory reach",
        formatter_class=DefaultsShown,
    )
    kinds = analyze.add_subparsers(dest="analysis", required=True, parser_class=OneLineParser)
    helps = {
        "gradcheck": "autograd gradients against central finite differences in float64, per parameter tensor",
        "jacobian": "forward (jacfwd) against reverse (jacrev) mode on model functions of three shapes",
        "hessian": "Hessian-vector products, Hutchinson's trace and the top eigenvalues (Lanczos)",
        "memory": "how far back each step's loss depends on the past (feedback: also on its memory)",
    }
    for name, text in helps.items():
        sub = kinds.add_parser(name, help=text, description=text, formatter_class=DefaultsShown)
        batch, segment = DATA_DEFAULTS[name]
        sub.add_argument(
            "runs",
            nargs="*" if name == "memory" else "?",
            metavar="RUN_DIR",
            help="run or checkpoint directory (or --model)",
        )
        default = f" (default without a run: {ModelConfig.model})" if name == "jacobian" else ""
        sub.add_argument(
            "--model",
            choices=family_names(),
            help=f"a freshly initialised language model of the size flags instead of a run{default}",
        )
        sizes = sub.add_argument_group("sizes with --model")
        for flag, default in (
            ("dim", 32),
            ("layers", 2),
            ("heads", 2),
            ("ff", 64),
            ("span", 8),
            ("context", 32),
            ("vocab-size", 64),
        ):
            sizes.add_argument(f"--{flag}", type=int, default=default, help=flag.replace("-", " "))
        sub.add_argument("--batch", type=int, default=batch, help="streams of data")
        sub.add_argument("--segment", type=int, default=segment, help="tokens per stream")
        sub.add_argument("--seed", type=int, default=0, help="seed of directions, probes and --model's init")
        sub.add_argument("--plot", help="write the figure to this PNG")
        sub.add_argument("--threads", type=int, help="CPU threads for torch")
        sub.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        if name == "gradcheck":
            sub.add_argument("--step", type=float, default=1e-6, help="finite-difference step h")
        if name == "jacobian":
            sub.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
        if name == "hessian":
            sub.add_argument("--samples", type=int, default=32, help="Hutchinson samples")
            sub.add_argument("--lanczos-steps", type=int, default=30, help="Lanczos iterations")
            sub.add_argument("--top", type=int, default=3, help="eigenvalues reported")
            sub.add_argument(
                "--over-checkpoints",
                nargs="*",
                metavar="RUN_DIR",
                help="also the top eigenvalue at every saved checkpoint of these runs (train them "
                "with --keep-checkpoints N), drawn by --plot",
            )


def model_config(args: argparse.Namespace) -> ModelConfig | None:
    if args.model is None:
        return None
    return ModelConfig(
        model=args.model,
        dim=args.dim,
        layers=args.layers,
        heads=args.heads,
        ff=args.ff,
        span=args.span,
        context=args.context,
        vocab_size=args.vocab_size,
    )


def subjects(args: argparse.Namespace, dtype: torch.dtype | None = None) -> list:
    """The runs or fresh model to analyse, in `dtype` (default float32)."""
    import torch

    from fbt.analysis.common import load_subject, require_scored

    dtype = dtype or torch.float32

    runs = args.runs if isinstance(args.runs, list) else [args.runs] if args.runs else []
    if args.analysis == "jacobian" and not runs and not args.model:
        args.model = ModelConfig.model  # a Jacobian needs no data: a fresh model shows the modes' costs
    if bool(runs) == bool(args.model):
        raise FbtError("give a run directory or --model NAME (not both)")
    config = model_config(args)
    loaded = [load_subject(run, config, args.batch, args.segment, args.seed, dtype) for run in runs or [None]]
    if args.analysis != "jacobian":  # the others differentiate a loss
        for subject in loaded:
            require_scored(subject)
    return loaded


def run(args: argparse.Namespace) -> None:
    from fbt.analysis.common import forward_mode_kernels

    with forward_mode_kernels():
        report, module = analysis_report(args)
    if args.json:
        print(json.dumps(report))
    elif args.analysis == "memory":
        print("\n".join(module.format_report(r) for r in report["models"]))
    else:
        print(module.format_report(report))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)


def analysis_report(args: argparse.Namespace):
    """(the report, its module): the analysis run and its figure written."""
    if args.analysis == "gradcheck":
        import torch

        from fbt.analysis import gradcheck as module

        (subject,) = subjects(args, torch.float64)
        if not args.step > 0:
            raise FbtError(f"--step must be positive, got {args.step}")
        report = module.gradcheck(subject, args.step, args.seed)
        if args.plot:
            module.plot_step_sweep(report, args.plot)
    elif args.analysis == "jacobian":
        from fbt.analysis import jacobian as module

        (subject,) = subjects(args)
        report = module.jacobian_report(subject, repeats=max(1, args.repeats))
        if args.plot:
            module.plot_report(report, args.plot)
    elif args.analysis == "hessian":
        report, module = hessian_command(args)
    else:
        from fbt.analysis import memory as module

        reports = [module.dependence(subject, args.seed) for subject in subjects(args)]
        if args.plot:
            module.plot_dependence(reports, args.plot)
        report = {"models": reports}
    return report, module


def hessian_command(args: argparse.Namespace):
    import torch

    from fbt.analysis import hessian as module
    from fbt.analysis.common import run_subject
    from fbt.checkpoint import complete_checkpoints

    if args.samples < 2 or args.lanczos_steps < 1 or args.top < 1:
        raise FbtError("--samples must be >= 2 (for a standard error), --lanczos-steps and --top >= 1")
    (subject,) = subjects(args)
    report = module.hessian_report(subject, args.samples, args.lanczos_steps, args.top, args.seed)
    if args.over_checkpoints:
        series = {}
        for run in args.over_checkpoints:
            found = complete_checkpoints(Path(run))
            if not found:
                raise FbtError(f"{run} holds no complete checkpoint")
            series[run] = []
            for directory in found:
                at = run_subject(directory, args.batch, args.segment, torch.float32, str(directory))
                step = int(directory.name.split("-")[-1])
                series[run].append((step, module.top_eigenvalue(at, args.lanczos_steps, args.seed)))
        report["over_checkpoints"] = series
        if args.plot:
            module.plot_over_training(series, args.plot)
    elif args.plot:
        raise FbtError("--plot draws the top eigenvalue over checkpoints: add --over-checkpoints RUN_DIR ...")
    return report, module
