"""The flags of every `fbt` command, with their defaults shown in `--help`."""

from __future__ import annotations

import argparse
import dataclasses

import fbt
from fbt.analysis.cli import add_analyze_parser
from fbt.cli_rl import add_rl_parser
from fbt.data.code_exec import OFFICIAL_WEIGHTS
from fbt.data.splits import SPLITS
from fbt.models.config import DECODERS, INITS, KV_CHOICES, MEMORY_SOURCES, ModelConfig
from fbt.models.registry import family_names
from fbt.presets import PRESETS
from fbt.tasks import task_names
from fbt.training.config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig

# Flags that map onto ModelConfig / TrainConfig fields (flag name with dashes -> field name).
MODEL_FLAGS = ("model", "dim", "layers", "heads", "ff", "span", "context", "dropout", "memory", "memory_layer", "init",
               "attend_self", "decoder", "encoder_layers")  # fmt: skip
TRAIN_FLAGS = (
    "task", "data", "batch", "segment", "steps", "time_budget", "optimizer", "lr", "weight_decay", "warmup",
    "schedule", "clip", "seed", "log_every", "eval_every", "eval_tokens", "save_every", "keep_checkpoints",
    "curriculum", "curriculum_steps", "curriculum_accuracy", "tokenizer", "tokenizer_vocab", "source_column",
    "target_column", "target_data", "group_column", "max_length", "batch_tokens", "accumulate", "precision",
    "compile", "checkpoint_activations", "tensorboard",
)  # fmt: skip
DEFAULTS = {f.name: f.default for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
DEFAULTS["vocab_size"] = ModelConfig.vocab_size  # the model's; the tokenizer's is tokenizer_vocab


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


class DefaultsShown(argparse.HelpFormatter):
    """Appends `(default: X)` to every flag that has a default and says nothing of it yet."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def config_help(text: str, name: str) -> str:
    """Help of a flag whose value comes from a preset, else from the config's default."""
    default = DEFAULTS[name]
    shown = "none" if default == "" else default
    return f"{text} (default: the preset's, else {shown})"


def add_compute_flags(
    parser: argparse.ArgumentParser, json_help: str = "print one JSON object as the last line"
) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N; auto is cuda when available")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, all cores)")
    parser.add_argument("--json", action="store_true", help=json_help)


def add_data_parser(commands) -> None:
    data = commands.add_parser("data", help="write a dataset", formatter_class=DefaultsShown)
    data_kinds = data.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    code = data_kinds.add_parser(
        "code-exec", help="the code-execution task, in the official on-disk format", formatter_class=DefaultsShown
    )
    code.add_argument("--variables", type=int, default=3, help="variables per program: 3 or 5 in the paper (1..5)")
    code.add_argument("--statements", type=int, default=100, help="statements per program")
    code.add_argument("--max-value", type=int, default=10, help="values 1..K (official 10)")
    code.add_argument(
        "--weights",
        type=float,
        nargs=5,
        default=list(OFFICIAL_WEIGHTS),
        metavar=("ASSIGN", "INC", "DEC", "IF", "PRINT"),
        help="relative weights of the statement kinds =, ++, --, if, print",
    )
    code.add_argument("--train-size", type=int, default=10000, help="programs in the train split")
    code.add_argument("--valid-size", type=int, default=1000, help="programs in the valid split")
    code.add_argument("--test-size", type=int, default=1000, help="programs in the test split")
    code.add_argument("--seed", type=int, default=0, help="seed of the program generator")
    code.add_argument("--out", required=True, help="dataset directory to write")
    code.add_argument("--force", action="store_true", help="replace the dataset files already in --out")


def add_train_parser(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train a model (a preset or explicit sizes), or resume a run",
        description="Defaults come from the preset when one is given, else from the library's defaults; explicit "
        "flags override both. With --resume the run keeps its own settings: only --steps (to extend), "
        "--time-budget, --data (an equal-sized copy) and the flags of how steps run may be given. Under "
        "`torchrun --nproc-per-node N -m fbt.cli train ...` the run is data-parallel (DDP): --batch stays the "
        "global number of streams, each rank takes B / N of them.",
        formatter_class=DefaultsShown,
    )
    p.add_argument("--preset", help=f"named settings: {', '.join(PRESETS)} (see `fbt presets`)")
    p.add_argument("--out", required=True, help="run directory (config, metrics.csv, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no header, progress bar or closing hints")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=family_names(), help=config_help("model family", "model"))
    model.add_argument("--dim", type=int, help=config_help("residual width", "dim"))
    model.add_argument("--layers", type=int, help=config_help("blocks", "layers"))
    model.add_argument("--heads", type=int, help=config_help("attention heads", "heads"))
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
    model.add_argument("--decoder", choices=DECODERS, help=config_help("seq2seq: the decoder", "decoder"))
    model.add_argument(
        "--encoder-layers",
        type=int,
        help=config_help("seq2seq: blocks of the encoder (--layers: decoder)", "encoder_layers"),
    )
    run = p.add_argument_group("data and optimisation")
    run.add_argument(
        "--task",
        choices=task_names(),
        help="text (bytes of a file), lm (BPE subwords of a file), code-exec (a dataset directory) or translation "
        "(sentence pairs) (default: code-exec for a code-exec directory, else text)",
    )
    run.add_argument(
        "--data",
        help=config_help("a text file (text, lm), a dataset directory (code-exec), a TSV[.gz] or source file "
                         "(translation)", "data"),
    )  # fmt: skip
    add_subword_flags(run)
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
    run.add_argument("--schedule", choices=SCHEDULES, help=config_help("after warm-up", "schedule"))
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
    compute = p.add_argument_group("how steps run (a resumed run may change these)")
    compute.add_argument(
        "--accumulate", type=int, metavar="K",
        help="split each rank's streams into K micro-batches, one backward each (same update, less memory; "
        "default: 1)",
    )  # fmt: skip
    compute.add_argument(
        "--precision", choices=PRECISIONS, help="bf16: bfloat16 autocast, fp32 weights (default: fp32)"
    )
    compute.add_argument("--compile", action="store_true", default=None, help="model.compile() (torch.compile)")
    compute.add_argument(
        "--checkpoint-activations", action="store_true", default=None,
        help="recompute activations in backward instead of storing them (less memory, more compute)",
    )  # fmt: skip
    compute.add_argument(
        "--tensorboard", action="store_true", default=None, help="also log to TensorBoard event files in --out"
    )
    add_compute_flags(p, "print the final metrics as one JSON object as the last line")


def add_subword_flags(run: argparse._ArgumentGroup) -> None:
    run.add_argument(
        "--tokenizer", help="lm, translation: a tokenizer directory (default: train one on the train split)"
    )
    run.add_argument(
        "--vocab-size", dest="tokenizer_vocab", type=int,
        help=config_help("lm, translation: ids of the tokenizer trained for the run", "tokenizer_vocab"),
    )  # fmt: skip
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


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, default=1, help="translation: beam size, 1 is greedy search")
    parser.add_argument(
        "--length-penalty", type=float, default=1.0, help="translation: GNMT length penalty alpha, 0 none"
    )


def add_use_parsers(commands) -> None:
    ev = commands.add_parser("eval", help="a full pass over a split with state carried", formatter_class=DefaultsShown)
    ev.add_argument("run", help="run directory (its latest checkpoint) or a checkpoint directory")
    ev.add_argument("--split", default="test", choices=SPLITS, help="which split")
    ev.add_argument("--data", help="evaluate on other data than the run's (default: the run's)")
    ev.add_argument("--batch", type=int, help="parallel streams (default: the run's)")
    ev.add_argument("--segment", type=int, help="tokens per segment (default: the run's)")
    add_search_flags(ev)
    add_compute_flags(ev)

    tr = commands.add_parser(
        "translate", help="translate text with a translation run, one line in, one line out",
        formatter_class=DefaultsShown,
    )  # fmt: skip
    tr.add_argument("run", help="run directory or checkpoint directory")
    tr.add_argument("--input", required=True, help="a text file with one sentence per line, or - for stdin")
    tr.add_argument("--output", help="write the translations here (default: stdout)")
    tr.add_argument("--batch", type=int, default=64, help="sentences translated at once")
    add_search_flags(tr)
    add_compute_flags(tr, "print one JSON list of {source, translation} objects")

    tok = commands.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tok_kinds = tok.add_subparsers(dest="kind", required=True, parser_class=OneLineParser)
    train = tok_kinds.add_parser("train", help="learn a BPE from text files", formatter_class=DefaultsShown)
    train.add_argument("--data", nargs="+", required=True, help="text files to learn from")
    train.add_argument("--vocab-size", type=int, default=8000, help="ids, the 3 specials and 256 bytes included")
    train.add_argument("--out", required=True, help="directory to write tokenizer.json into")

    gen = commands.add_parser(
        "generate",
        help="sample a continuation (text) or answer a program (code-exec)",
        formatter_class=DefaultsShown,
    )
    gen.add_argument("run", help="run directory or checkpoint directory")
    gen.add_argument(
        "--prompt", default="", help="text to continue; empty samples unconditionally (code-exec: a program)"
    )
    gen.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (bytes for text)")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold in (0, 1]")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_compute_flags(gen)


def add_inspect_parsers(commands) -> None:
    presets = commands.add_parser("presets", help="the named presets: what, steps, data, time, command")
    presets.add_argument("--json", action="store_true", help="print them as one JSON object")

    runs = commands.add_parser("runs", help="a table of the runs under a directory")
    runs.add_argument("dir", nargs="?", default="runs", help="directory to search (default: runs)")
    runs.add_argument("--json", action="store_true", help="print one JSON list")

    show = commands.add_parser("show", help="a run's configuration and final summary")
    show.add_argument("run", help="run directory")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    plot = commands.add_parser(
        "plot", help="training loss and valid metric of runs, overlaid, as a PNG", formatter_class=DefaultsShown
    )
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument("--x", choices=("tokens", "elapsed_s"), default="tokens", help="horizontal axis")


def add_experiment_parser(commands) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="run a grid of cells (`fbt experiment NAME|FILE`), report one (`fbt experiment report DIR`), or list "
        "the shipped grids (`fbt experiment list`)",
        formatter_class=DefaultsShown,
    )
    experiment.add_argument("grid", help="a shipped grid's name, a grid file (TOML), `report` or `list`")
    experiment.add_argument("dir", nargs="?", help="with `report`: the experiment directory")
    experiment.add_argument("--out", help="experiment directory (default: runs/experiments/GRID)")
    experiment.add_argument("--jobs", type=int, default=2, help="cells trained at once")
    experiment.add_argument("--threads", type=int, default=1, help="CPU threads per cell")
    experiment.add_argument("--seeds", type=int, help="seeds per cell (default: the grid's)")
    experiment.add_argument("--budget", type=int, help="training steps of every cell (default: the grid's)")
    experiment.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="training/decoding speed, memory and MFU of models side by side",
        formatter_class=DefaultsShown,
    )
    bench.add_argument(
        "--models", nargs="+", default=["feedback", "transformer-xl:layers=8"],
        help="NAME[:key=value,...] per model, e.g. feedback transformer-xl:layers=8 feedback:kv=per-layer; "
        "checkpoint=1, precision=bf16 and compile=1 run its steps as the fbt train flags do",
    )  # fmt: skip
    bench.add_argument("--dim", type=int, default=256, help="residual width")
    bench.add_argument("--layers", type=int, default=4, help="blocks")
    bench.add_argument("--heads", type=int, default=4, help="attention heads")
    bench.add_argument("--ff", type=int, default=1024, help="feed-forward hidden width")
    bench.add_argument("--span", type=int, default=100, help="attention span (feedback, transformer-xl)")
    bench.add_argument("--context", type=int, default=256, help="gpt context window")
    bench.add_argument("--vocab-size", type=int, default=256, help="vocabulary size")
    bench.add_argument("--batch", type=int, default=32, help="parallel streams")
    bench.add_argument("--segment", type=int, default=64, help="tokens per segment")
    bench.add_argument("--repeats", type=int, default=5, help="timed repetitions per model (median reported)")
    bench.add_argument("--steps", type=int, default=3, help="training steps per repetition")
    bench.add_argument("--decode-batches", type=int, nargs="+", default=[1, 32], help="decoding batch sizes")
    bench.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per measurement")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fbt", description="Feedback Transformers and their baselines.")
    parser.add_argument("--version", action="version", version=f"fbt {fbt.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_data_parser(commands)
    add_train_parser(commands)
    add_use_parsers(commands)
    add_inspect_parsers(commands)
    add_experiment_parser(commands)
    add_bench_parser(commands)
    add_rl_parser(commands, OneLineParser, DefaultsShown)
    add_analyze_parser(commands, OneLineParser, DefaultsShown)
    return parser
