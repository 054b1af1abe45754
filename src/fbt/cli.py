"""`fbt`: the command line. Parses flags, builds configs, calls the library; errors are one line on stderr."""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from fbt import api
from fbt.data.code_exec import OFFICIAL_WEIGHTS, Generator, generate_dataset
from fbt.data.splits import SPLITS
from fbt.errors import FbtError
from fbt.models.config import INITS, MEMORY_SOURCES, MODEL_NAMES, ModelConfig
from fbt.presets import PRESETS, get_preset, preset_flags
from fbt.tasks import TASK_NAMES
from fbt.training.config import OPTIMIZERS, SCHEDULES, TrainConfig

# Flags that map onto ModelConfig / TrainConfig fields (flag name with dashes -> field name).
MODEL_FLAGS = (
    "model",
    "dim",
    "layers",
    "heads",
    "ff",
    "span",
    "context",
    "dropout",
    "memory",
    "memory_layer",
    "init",
    "attend_self",
)
TRAIN_FLAGS = (
    "task", "data", "batch", "segment", "steps", "time_budget", "optimizer", "lr", "weight_decay", "warmup",
    "schedule", "clip", "seed", "log_every", "eval_every", "eval_tokens", "save_every", "keep_checkpoints",
    "curriculum", "curriculum_steps", "curriculum_accuracy",
)  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_compute_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def add_train_parser(commands) -> None:
    p = commands.add_parser("train", help="train a model (a preset or explicit sizes)")
    p.add_argument("--preset", help=f"named settings: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="run directory (config, metrics.csv, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=MODEL_NAMES)
    model.add_argument("--dim", type=int, help="residual width")
    model.add_argument("--layers", type=int)
    model.add_argument("--heads", type=int)
    model.add_argument("--ff", type=int, help="feed-forward hidden width")
    model.add_argument("--span", type=int, help="past positions visible to attention (feedback, transformer-xl)")
    model.add_argument("--context", type=int, help="gpt context window")
    model.add_argument("--dropout", type=float)
    model.add_argument("--kv", choices=("shared", "per-layer"), help="feedback: K/V projections of the memory")
    model.add_argument("--memory", choices=MEMORY_SOURCES, help="feedback: memory from all layers, the top, one layer")
    model.add_argument("--memory-layer", type=int, help="feedback with --memory layer: 0 embedding .. L top")
    model.add_argument("--init", choices=INITS, help="paper: the authors' init (default); gpt2: N(0, 0.02)")
    model.add_argument(
        "--attend-self",
        action=argparse.BooleanOptionalAction,
        help="transformer-xl: a query also sees its own position (Transformer-XL proper; not the paper's baseline)",
    )
    run = p.add_argument_group("data and optimisation")
    run.add_argument("--task", choices=TASK_NAMES)
    run.add_argument("--data", help="a text file (task text) or a dataset directory (task code-exec)")
    run.add_argument("--batch", type=int, help="parallel streams B")
    run.add_argument("--segment", type=int, help="tokens per segment T")
    run.add_argument("--steps", type=int, help="optimiser updates")
    run.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    run.add_argument("--optimizer", choices=OPTIMIZERS)
    run.add_argument("--lr", type=float)
    run.add_argument("--weight-decay", type=float)
    run.add_argument("--warmup", type=int, help="linear warm-up steps")
    run.add_argument("--schedule", choices=SCHEDULES)
    run.add_argument("--clip", type=float, help="gradient norm clipping (0: off)")
    run.add_argument("--seed", type=int)
    run.add_argument("--log-every", type=int)
    run.add_argument("--eval-every", type=int, help="steps between validation passes (0: only at the end)")
    run.add_argument("--eval-tokens", type=int, help="valid tokens per periodic evaluation (0: all)")
    run.add_argument("--save-every", type=int)
    run.add_argument("--keep-checkpoints", type=int)
    run.add_argument("--curriculum", help="datasets trained on before --data, comma-separated, in order")
    run.add_argument("--curriculum-steps", type=int, help="updates per curriculum stage")
    run.add_argument(
        "--curriculum-accuracy", type=float, help="advance once a periodic validation reaches this accuracy"
    )
    add_compute_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fbt", description="Feedback Transformers and their baselines.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    data = commands.add_parser("data", help="write a dataset")
    data_kinds = data.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    code = data_kinds.add_parser("code-exec", help="the code-execution task, in the official on-disk format")
    code.add_argument("--variables", type=int, default=3, help="3 or 5 in the paper (1..5)")
    code.add_argument("--statements", type=int, default=100, help="statements per program")
    code.add_argument("--max-value", type=int, default=10, help="values 1..K (official 10)")
    code.add_argument(
        "--weights",
        type=float,
        nargs=5,
        default=list(OFFICIAL_WEIGHTS),
        metavar=("ASSIGN", "INC", "DEC", "IF", "PRINT"),
        help="relative weights of the statement kinds =, ++, --, if, print (official 1 1 1 1 1)",
    )
    code.add_argument("--train-size", type=int, default=10000)
    code.add_argument("--valid-size", type=int, default=1000)
    code.add_argument("--test-size", type=int, default=1000)
    code.add_argument("--seed", type=int, default=0)
    code.add_argument("--out", required=True)

    add_train_parser(commands)

    ev = commands.add_parser("eval", help="a full pass over a split with state carried")
    ev.add_argument("run", help="run directory (its latest checkpoint) or a checkpoint directory")
    ev.add_argument("--split", default="test", choices=SPLITS)
    ev.add_argument("--data", help="evaluate on other data than the run's")
    ev.add_argument("--batch", type=int, help="parallel streams (default: the run's)")
    ev.add_argument("--segment", type=int, help="tokens per segment (default: the run's)")
    add_compute_flags(ev)

    gen = commands.add_parser("generate", help="sample a continuation (text) or answer a program (code-exec)")
    gen.add_argument("run", help="run directory or checkpoint directory")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    gen.add_argument("--seed", type=int, default=0)
    add_compute_flags(gen)

    commands.add_parser("presets", help="list the named presets and the command that runs each")

    bench = commands.add_parser("bench", help="training/decoding speed, memory and MFU of models side by side")
    bench.add_argument(
        "--models", nargs="+", default=["feedback", "transformer-xl:layers=8"],
        help="NAME[:key=value,...] per model, e.g. feedback transformer-xl:layers=8 feedback:kv=per-layer",
    )  # fmt: skip
    bench.add_argument("--dim", type=int, default=256)
    bench.add_argument("--layers", type=int, default=4)
    bench.add_argument("--heads", type=int, default=4)
    bench.add_argument("--ff", type=int, default=1024)
    bench.add_argument("--span", type=int, default=100)
    bench.add_argument("--context", type=int, default=256)
    bench.add_argument("--vocab-size", type=int, default=256)
    bench.add_argument("--batch", type=int, default=32)
    bench.add_argument("--segment", type=int, default=64)
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions per model (median reported)")
    bench.add_argument("--steps", type=int, default=3, help="training steps per repetition")
    bench.add_argument("--decode-batches", type=int, nargs="+", default=[1, 32])
    bench.add_argument("--decode-tokens", type=int, default=64)
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    return parser


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """Defaults, then the preset, then explicit flags."""
    model_values: dict = {}
    train_values: dict = {}
    if args.preset:
        preset = get_preset(args.preset)
        model_values.update(preset["model"])
        train_values.update(preset["train"])
    for name in MODEL_FLAGS:
        if getattr(args, name) is not None:
            model_values[name] = getattr(args, name)
    if args.kv is not None:
        model_values["shared_kv"] = args.kv == "shared"
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            train_values[name] = getattr(args, name)
    return ModelConfig.from_dict(model_values), TrainConfig.from_dict(train_values)


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
        return
    for name, value in result.items():
        print(f"{name:>22}: {value:.4f}" if isinstance(value, float) else f"{name:>22}: {value}")


def run_command(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise FbtError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.command == "data":
        sizes = (args.train_size, args.valid_size, args.test_size)
        generator = Generator(args.variables, args.statements, args.max_value, tuple(args.weights))
        generate_dataset(args.out, generator, sizes, args.seed)
        print(f"wrote {args.out}: {sizes[0]} train, {sizes[1]} valid, {sizes[2]} test programs")
    elif args.command == "train":
        model_config, train_config = configs_from_args(args)
        result = api.train(model_config, train_config, args.out, args.device, args.resume, not args.no_progress)
        print_result({"run": args.out, **result}, args.json)
    elif args.command == "eval":
        result = api.evaluate_run(args.run, args.split, args.data, args.batch, args.segment, args.device, not args.json)
        print_result({"split": args.split, **result}, args.json)
    elif args.command == "generate":
        text = api.generate_from_run(
            args.run,
            args.prompt,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            args.top_p,
            args.seed,
            args.device,
        )
        if args.json:
            print(json.dumps({"prompt": args.prompt, "output": text}))
        else:
            print(text)
    elif args.command == "bench":
        run_bench_command(args)
    elif args.command == "presets":
        for name, preset in PRESETS.items():
            print(f"{name:28} {preset['description']}\n{'':28} {preset_flags(name)}")


def run_bench_command(args: argparse.Namespace) -> None:
    from fbt.bench import format_table, run_bench

    for name in ("repeats", "steps", "decode_tokens", "batch", "segment"):
        if getattr(args, name) < 1:
            raise FbtError(f"--{name.replace('_', '-')} must be >= 1")
    base = {name: getattr(args, name) for name in ("dim", "layers", "heads", "ff", "span", "context", "vocab_size")}
    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    report = run_bench(
        args.models, base, args.batch, args.segment, args.threads, args.repeats, args.steps,
        tuple(args.decode_batches), args.decode_tokens, not args.no_memory, log,
    )  # fmt: skip
    print(json.dumps(report) if args.json else format_table(report))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_command(args)
    except FbtError as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fbt: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
