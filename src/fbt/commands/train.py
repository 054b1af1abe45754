"""`fbt train`: train a model from a preset or explicit sizes, or resume a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fbt.commands.common import DefaultsShown, add_compute_flags, print_result
from fbt.commands.train_settings import config_help, configs_from_args, explicit_settings
from fbt.errors import FbtError, warn
from fbt.models.config import DECODERS, INITS, KV_CHOICES, MEMORY_SOURCES
from fbt.models.registry import family_names
from fbt.presets import PRESETS
from fbt.tasks import task_class, task_names
from fbt.training.config import OPTIMIZERS, PRECISIONS, SCHEDULES

NAME = "train"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        NAME,
        help="train a model (a preset or explicit sizes), or resume a run",
        description="Defaults come from the preset when one is given, else from the library's defaults; explicit "
        "flags override both. With --resume the run keeps its own settings: only --steps (a new last step), "
        "--time-budget, --data (an equal-sized copy) and the flags of how steps run may be given. Under "
        "`torchrun --nproc-per-node N -m fbt.cli train ...` the run is data-parallel (DDP): --batch stays the "
        "global number of streams, each rank takes B / N of them.",
        formatter_class=DefaultsShown,
    )
    p.add_argument("--preset", help=f"named settings: {', '.join(PRESETS)} (see `fbt presets`)")
    p.add_argument("--out", required=True, help="run directory (config, metrics.csv, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no header, progress bar or closing hints")
    add_model_flags(p.add_argument_group("model"))
    run = p.add_argument_group("data and optimisation")
    run.add_argument(
        "--task",
        choices=task_names(),
        help="text (bytes of a file), lm (BPE subwords of a file), code-exec (a dataset directory) or translation "
        "(sentence pairs) (default: code-exec for a code-exec directory, else text)",
    )
    run.add_argument(
        "--data",
        help=config_help(
            "a text file (text, lm), a dataset directory (code-exec), a TSV[.gz] or source file (translation)", "data"
        ),
    )
    add_subword_flags(run)
    add_optimisation_flags(run)
    add_step_flags(p.add_argument_group("how steps run (a resumed run may change these)"))
    add_compute_flags(p, "print the final metrics as one JSON object as the last line")


def add_model_flags(model: argparse._ArgumentGroup) -> None:
    model.add_argument("--model", choices=family_names(), help=config_help("model family", "model"))
    model.add_argument("--dim", type=int, help=config_help("residual width", "dim"))
    model.add_argument("--layers", type=int, help=config_help("blocks", "layers"))
    model.add_argument("--heads", type=int, help=config_help("attention heads", "heads"))
    model.add_argument(
        "--head-dim", type=int, help=config_help("width of each head's queries/keys/values, 0: dim / heads", "head_dim")
    )
    model.add_argument("--ff", type=int, help=config_help("feed-forward hidden width", "ff"))
    model.add_argument("--span", type=int, help=config_help("past positions attention sees (feedback, xl)", "span"))
    model.add_argument("--context", type=int, help=config_help("gpt context window", "context"))
    model.add_argument("--dropout", type=float, help=config_help("dropout on attention and FF", "dropout"))
    model.add_argument("--kv", choices=KV_CHOICES, help="feedback: K/V projections of the memory (default: shared)")
    model.add_argument(
        "--memory", choices=MEMORY_SOURCES, help=config_help("feedback: memory from all layers, the top, one", "memory")
    )
    model.add_argument(
        "--memory-layer",
        type=int,
        help=config_help("feedback with --memory layer: 0 embedding .. L top", "memory_layer"),
    )
    model.add_argument("--init", choices=INITS, help=config_help("paper: the authors' init; gpt2: N(0, 0.02)", "init"))
    model.add_argument(
        "--attend-self",
        action=argparse.BooleanOptionalAction,
        help="transformer-xl: a query also sees its own position (Transformer-XL proper; not the paper's baseline; "
        "default: no)",
    )
    model.add_argument(
        "--adaptive-span",
        action=argparse.BooleanOptionalAction,
        help="feedback, transformer-xl: every head learns its span, up to --span (default: no)",
    )
    model.add_argument(
        "--adaptive-span-ramp",
        type=int,
        help=config_help("adaptive span: ramp of the mask, in tokens", "adaptive_span_ramp"),
    )
    model.add_argument(
        "--adaptive-span-init",
        type=float,
        help=config_help("adaptive span: initial span, a ratio of --span", "adaptive_span_init"),
    )
    model.add_argument(
        "--adaptive-span-loss",
        type=float,
        help=config_help("adaptive span: loss per token of mean span, per layer", "adaptive_span_loss"),
    )
    model.add_argument("--decoder", choices=DECODERS, help=config_help("seq2seq: the decoder", "decoder"))
    model.add_argument(
        "--encoder-layers",
        type=int,
        help=config_help("seq2seq: blocks of the encoder (--layers: decoder)", "encoder_layers"),
    )


def add_subword_flags(run: argparse._ArgumentGroup) -> None:
    run.add_argument(
        "--tokenizer", help="lm, translation: a tokenizer directory (default: train one on the train split)"
    )
    run.add_argument(
        "--vocab-size",
        dest="tokenizer_vocab",
        type=int,
        help=config_help("lm, translation: ids of the tokenizer trained for the run", "tokenizer_vocab"),
    )
    run.add_argument("--source-column", help="translation: the TSV column to translate from")
    run.add_argument("--target-column", help="translation: the TSV column to translate into; lm: the column to model")
    run.add_argument("--target-data", help="translation: a target file aligned line by line with --data")
    run.add_argument("--group-column", help="translation: hold out whole groups of this column (e.g. book) for test")
    run.add_argument(
        "--max-length", type=int, help=config_help("translation: longest side trained on, in tokens", "max_length")
    )
    run.add_argument(
        "--batch-tokens", type=int, help=config_help("translation: padded tokens per batch", "batch_tokens")
    )


def add_optimisation_flags(run: argparse._ArgumentGroup) -> None:
    run.add_argument("--batch", type=int, help=config_help("parallel streams B", "batch"))
    run.add_argument("--segment", type=int, help=config_help("tokens per segment T", "segment"))
    run.add_argument("--steps", type=int, help=config_help("optimiser updates", "steps"))
    run.add_argument(
        "--time-budget", type=float, help="stop after this many seconds of training in this call (default: none)"
    )
    run.add_argument("--optimizer", choices=OPTIMIZERS, help=config_help("optimiser", "optimizer"))
    run.add_argument("--lr", type=float, help=config_help("peak learning rate", "lr"))
    run.add_argument("--weight-decay", type=float, help=config_help("decoupled weight decay (adamw)", "weight_decay"))
    run.add_argument(
        "--warmup",
        type=int,
        help="linear warm-up steps (default: the preset's, else 100; a preset's warm-up is scaled down when "
        "--steps makes it as long as the run)",
    )
    run.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help=config_help(
            "after warm-up: constant, cosine to zero, or wsd (constant, then --decay-steps of cosine)", "schedule"
        ),
    )
    run.add_argument(
        "--decay-steps", type=int, help=config_help("wsd: the last updates, decaying to zero", "decay_steps")
    )
    run.add_argument("--clip", type=float, help=config_help("gradient norm clipping, 0 off", "clip"))
    run.add_argument("--seed", type=int, help=config_help("init, dropout and data seed", "seed"))
    run.add_argument("--log-every", type=int, help=config_help("steps between metrics.csv rows", "log_every"))
    run.add_argument(
        "--eval-every", type=int, help=config_help("steps between validation passes, 0 only at the end", "eval_every")
    )
    run.add_argument(
        "--eval-tokens", type=int, help=config_help("valid tokens per periodic validation, 0 all", "eval_tokens")
    )
    run.add_argument("--save-every", type=int, help=config_help("steps between checkpoints", "save_every"))
    run.add_argument("--keep-checkpoints", type=int, help=config_help("newest checkpoints kept", "keep_checkpoints"))
    run.add_argument(
        "--curriculum", help="datasets trained on before --data, comma-separated, in order (default: none)"
    )
    run.add_argument("--curriculum-steps", type=int, help="updates per curriculum stage (default: 0, no limit)")
    run.add_argument(
        "--curriculum-accuracy",
        type=float,
        help="advance once a periodic validation reaches this accuracy (default: 0, off)",
    )


def add_step_flags(compute: argparse._ArgumentGroup) -> None:
    compute.add_argument(
        "--accumulate",
        type=int,
        metavar="K",
        help="split each rank's streams into K micro-batches, one backward each (same update, less memory; default: 1)",
    )
    compute.add_argument(
        "--precision", choices=PRECISIONS, help="bf16: bfloat16 autocast, fp32 weights (default: fp32)"
    )
    compute.add_argument("--compile", action="store_true", default=None, help="model.compile() (torch.compile)")
    compute.add_argument(
        "--checkpoint-activations",
        action="store_true",
        default=None,
        help="recompute activations in backward instead of storing them (less memory, more compute)",
    )
    compute.add_argument(
        "--tensorboard", action="store_true", default=None, help="also log to TensorBoard event files in --out"
    )


def run(args: argparse.Namespace) -> None:
    from fbt import api, runlock
    from fbt.device import resolve_device
    from fbt.training import distributed

    progress = not args.no_progress
    # Under torchrun: join the process group; every rank trains its slice of the streams, rank 0 reports.
    device = distributed.start(args.device) if distributed.launched_by_torchrun() else resolve_device(args.device)
    main_rank = distributed.Ranks.current().main
    if args.resume:
        if args.preset:
            raise FbtError("--resume continues the run with its own saved settings: drop --preset")
        with runlock.hold(args.out, main_rank):
            result = api.fit(api.resume_trainer(args.out, device, explicit_settings(args)), progress)
    else:
        model_config, train_config, notes = configs_from_args(args)
        with runlock.hold(args.out, main_rank):
            trainer = api.make_trainer(model_config, train_config, args.out, device)
            for note in notes if main_rank else ():
                warn(note)
            result = api.fit(trainer, progress)
    if not main_rank:
        return
    print_result({"run": args.out, **result}, args.json)
    if progress:
        print(next_commands(args.out, api.read_run_config(Path(args.out))[1].task), file=sys.stderr)


def next_commands(run: str, task: str) -> str:
    use = task_class(task).next_command(run)
    return "\n".join(
        ["next:", f"  fbt eval {run} --split test", use, f"  fbt plot {run} --out {Path(run) / 'curves.png'}"]
    )
