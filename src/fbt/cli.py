"""`fbt`: the command line. Parses flags, builds configs, calls the library; errors are one line on stderr."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from fbt import api, runlock
from fbt.cli_parser import DEFAULTS, MODEL_FLAGS, TRAIN_FLAGS, build_parser
from fbt.data.code_exec import ProgramSpec, generate_dataset
from fbt.device import resolve_device
from fbt.errors import FbtError, warn
from fbt.models.config import ModelConfig, shared_kv_of
from fbt.presets import PRESETS, get_preset, preset_summary
from fbt.tasks import task_class, task_of_data
from fbt.training import distributed
from fbt.training.config import TrainConfig
from fbt.training.trainer import TrainingInterrupted


def explicit_settings(args: argparse.Namespace) -> dict:
    """Config fields set by flags on the command line (not by a preset or a default)."""
    values = {name: getattr(args, name) for name in (*MODEL_FLAGS, *TRAIN_FLAGS) if getattr(args, name) is not None}
    if args.kv is not None:
        values["shared_kv"] = shared_kv_of(args.kv)
    return values


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, list[str]]:
    """Defaults, then the preset, then explicit flags; and warnings about what was adjusted."""
    model_fields = set(ModelConfig.__dataclass_fields__)
    values: dict = {}
    if args.preset:
        preset = get_preset(args.preset)
        values.update({**preset["model"], **preset["train"]})
    explicit = explicit_settings(args)
    values.update(explicit)
    notes = []
    implied = task_of_data(values["data"]) if "task" not in values and values.get("data") else None
    if implied:
        values["task"] = implied  # the data's form names its task (a code-exec dataset directory)
    steps = values.get("steps", DEFAULTS["steps"])
    warmup = values.get("warmup", DEFAULTS["warmup"])
    if warmup >= steps and "warmup" not in explicit:
        scaled = steps // 10
        notes.append(f"warm-up of {warmup} steps is not shorter than --steps {steps}: using {scaled} (10%); pass "
                     "--warmup to choose")  # fmt: skip
        values["warmup"] = scaled
    model_values = {k: v for k, v in values.items() if k in model_fields}
    train_values = {k: v for k, v in values.items() if k not in model_fields}
    return ModelConfig.from_dict(model_values), TrainConfig.from_dict(train_values), notes


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
        return
    for name, value in result.items():
        print(f"{name:>22}: {value:.4f}" if isinstance(value, float) else f"{name:>22}: {value}")


def next_commands(run: str, task: str) -> str:
    use = task_class(task).next_command(run)
    return "\n".join(
        ["next:", f"  fbt eval {run} --split test", use, f"  fbt plot {run} --out {Path(run) / 'curves.png'}"]
    )


def run_train_command(args: argparse.Namespace) -> None:
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


def run_data_command(args: argparse.Namespace) -> None:
    sizes = (args.train_size, args.valid_size, args.test_size)
    spec = ProgramSpec(args.variables, args.statements, args.max_value, tuple(args.weights))
    generate_dataset(args.out, spec, sizes, args.seed, overwrite=args.force)
    print(f"wrote {args.out}: {sizes[0]} train, {sizes[1]} valid, {sizes[2]} test programs")


def run_eval_command(args: argparse.Namespace) -> None:
    result = api.evaluate_run(args.run, args.split, args.data, args.batch, args.segment, args.device, not args.json,
                              args.beam, args.length_penalty)  # fmt: skip
    print_result({"split": args.split, **result}, args.json)


def run_translate_command(args: argparse.Namespace) -> None:
    if args.input == "-":
        texts = sys.stdin.read().splitlines()
    else:
        try:
            texts = Path(args.input).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise FbtError(f"cannot read {args.input}: {error}") from None
    translations = api.translate_run(args.run, texts, args.beam, args.length_penalty, args.batch, args.device,
                                     progress=not args.json)  # fmt: skip
    if args.json:
        text = json.dumps([{"source": s, "translation": t} for s, t in zip(texts, translations, strict=True)])
    else:
        text = "".join(line + "\n" for line in translations)
    if args.output:
        Path(args.output).write_text(text if not args.json else text + "\n", encoding="utf-8")
    else:
        print(text, end="" if not args.json else "\n")


def run_tokenizer_command(args: argparse.Namespace) -> None:
    from fbt.data.tokenizer import train_tokenizer_on_files

    tokenizer = train_tokenizer_on_files(args.data, args.vocab_size)
    print(f"wrote {tokenizer.save(args.out)} ({tokenizer.vocab_size:,} ids)")


def run_generate_command(args: argparse.Namespace) -> None:
    text = api.generate_from_run(
        args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed, args.device
    )
    print(json.dumps({"prompt": args.prompt, "output": text}) if args.json else text)


def run_presets_command(args: argparse.Namespace) -> None:
    listing = {name: preset_summary(name) for name in PRESETS}
    if args.json:
        print(json.dumps(listing))
        return
    for name, entry in listing.items():
        print(f"{name}: {entry['description']}")
        print(f"    {entry['steps']:,} steps of {entry['tokens_per_step']:,} tokens, data {entry['data']}, "
              f"about {entry['expected_time']} on 2 CPU cores")  # fmt: skip
        print(f"    {entry['command']}")


def run_runs_command(args: argparse.Namespace) -> None:
    from fbt.runs import find_runs, format_runs_table

    runs = find_runs(args.dir)
    if args.json:
        print(json.dumps([run.to_json() for run in runs]))
    elif runs:
        print(format_runs_table(runs))
    else:
        print(f"no runs under {args.dir} (a run is a directory written by `fbt train --out DIR`)")


def run_show_command(args: argparse.Namespace) -> None:
    from fbt.runs import show_run

    shown = show_run(args.run)
    print(json.dumps(shown) if args.json else json.dumps(shown, indent=2))


def run_plot_command(args: argparse.Namespace) -> None:
    try:
        from fbt.plots import plot_runs
    except ImportError:
        raise FbtError("fbt plot needs matplotlib: pip install 'fbt[plot]'") from None
    print(f"wrote {plot_runs(args.runs, args.out, x=args.x)}")


def run_experiment_command(args: argparse.Namespace) -> None:
    from fbt.experiments.grid import grid_names, load_grid
    from fbt.experiments.report import build_report
    from fbt.experiments.runner import run_grid

    if args.grid == "report":
        if not args.dir:
            raise FbtError("fbt experiment report DIR: name the experiment directory")
        print(f"wrote {build_report(args.dir)}")
        return
    if args.grid == "list":
        for name in grid_names():
            grid = load_grid(name, Path("runs") / "experiments" / name)
            print(f"{name} ({len(grid.cells)} cells{', one fbt bench' if grid.command == 'bench' else ''}): "
                  f"{grid.description}")  # fmt: skip
        return
    out = Path(args.out or Path("runs") / "experiments" / Path(args.grid).stem)
    grid = load_grid(args.grid, out, args.seeds, args.budget)
    print(f"{len(grid.cells)} cells of {grid.path.name} in {out}: {grid.description}", file=sys.stderr)
    if grid.command == "bench" and args.jobs > 1:
        print("a bench grid measures its cells in one process, one after another (--jobs does not apply)",
              file=sys.stderr)  # fmt: skip
    results = run_grid(grid, out, args.jobs, args.threads, not args.no_progress)
    print(f"wrote {out / 'results.csv'} ({len(results)} cells); report it with: fbt experiment report {out}")


COMMANDS = {
    "data": run_data_command,
    "train": run_train_command,
    "eval": run_eval_command,
    "translate": run_translate_command,
    "tokenizer": run_tokenizer_command,
    "generate": run_generate_command,
    "presets": run_presets_command,
    "runs": run_runs_command,
    "show": run_show_command,
    "plot": run_plot_command,
    "experiment": run_experiment_command,
}


def run_command(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise FbtError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.command == "bench":
        run_bench_command(args)
    elif args.command == "analyze":
        from fbt.analysis.cli import run_analyze_command

        run_analyze_command(args)
    elif args.command == "rl":
        from fbt.cli_rl import run_rl_command

        run_rl_command(args, print_result)
    else:
        COMMANDS[args.command](args)


def run_bench_command(args: argparse.Namespace) -> None:
    from fbt.bench import format_table, run_bench

    for name in ("repeats", "steps", "decode_tokens", "batch", "segment"):
        if getattr(args, name) < 1:
            raise FbtError(f"--{name.replace('_', '-')} must be >= 1")
    base = {name: getattr(args, name) for name in ("dim", "layers", "heads", "ff", "span", "context", "vocab_size")}
    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    device = str(resolve_device(args.device))
    report = run_bench(
        args.models, base, args.batch, args.segment, args.threads, args.repeats, args.steps,
        tuple(args.decode_batches), args.decode_tokens, not args.no_memory, log, device,
    )  # fmt: skip
    print(json.dumps(report) if args.json else format_table(report))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_command(args)
    except TrainingInterrupted as stopped:
        if distributed.Ranks.current().main:  # under torchrun every rank stopped; rank 0 says so
            print(f"fbt: {stopped}", file=sys.stderr)
        return 130
    except api.NothingToDo as nothing:
        print(f"fbt: nothing to do: {nothing}", file=sys.stderr)
        return 0
    except FbtError as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fbt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fbt show RUN | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0
    except (OSError, MemoryError) as error:
        print(f"fbt: error: {error}", file=sys.stderr)
        return 1
    finally:
        distributed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
