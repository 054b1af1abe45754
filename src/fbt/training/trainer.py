"""The training loop: truncated BPTT over parallel streams, for any model with the common interface.

The trainer only assumes `logits, state = model(inputs, state)` with `state` a dict of tensors (or None) whose
batch dimensions `model.state_batch_dims` gives (models/family.py), and, optionally, `model.diagnostics(state)`
returning extra values to log, `model.auxiliary_loss()` (a scalar tensor or None) added to the training loss,
and `model.after_update()` run after every optimiser step (both for adaptive spans, models/adaptive_span.py).
Everything a resumed run needs to continue the exact loss curve is checkpointed: weights, optimiser moments,
the RNGs, the data position, the curriculum stage and the carried stream state.

A non-finite loss or gradient stops training with `NonFiniteError` before the optimiser step: the weights are
never updated with it, and no checkpoint is written after it, so the last checkpoint stays the latest one.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fbt.checkpoint import find_checkpoint, save_checkpoint
from fbt.data.streams import SegmentStream
from fbt.data.targets import IGNORE_INDEX
from fbt.data.tokenizer import TOKENIZER_FILE
from fbt.errors import FbtError
from fbt.formatting import format_duration
from fbt.models.layers import set_activation_checkpointing
from fbt.progress import PlainProgress, progress_display
from fbt.rundir import (
    METRICS,
    RESUME_INFO,
    RESUME_TENSORS,
    SUMMARY,
    NonFiniteError,
    finite_weights,
    load_tensors,
    load_weights,
    read_json,
    write_json_atomic,
)
from fbt.tasks import Task
from fbt.training import state_io
from fbt.training.config import TrainConfig
from fbt.training.distributed import Ranks, cat_states, gather_state, rows_of, share, state_rows
from fbt.training.evaluate import evaluate
from fbt.training.interrupt import stop_on_signals
from fbt.training.loss import segment_loss
from fbt.training.metrics_log import MetricsLog
from fbt.training.optim import build_optimizer, learning_rate

# A periodic validation reads rows of at least this many segments, and of this many of the task's documents
# (see Trainer.periodic_stream).
PERIODIC_SEGMENTS = 16
PERIODIC_DOCUMENTS = 8
Stage = tuple[SegmentStream, SegmentStream | None]  # (train, valid) streams of one dataset (or TranslationStreams)
RECENT_STEPS = 100  # the training loss reported at the end is the mean over this many last updates
ETA_AFTER_S = 10.0  # the speed behind the estimate of the time left is measured over this first stretch


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        task: Task,
        stages: list[Stage],
        run_dir: Path,
        run_config: dict,
        device: torch.device,
    ):
        self.model = model
        self.config = config
        self.task = task
        self.stages = stages  # curriculum datasets, then the run's own data
        self.stage = 0
        self.stage_start = 0  # step at which the current stage began
        self.run_dir = Path(run_dir)
        self.run_config = run_config  # written beside every checkpoint
        self.device = device
        self.optimizer = build_optimizer(model, config)
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.anchor = (config.warmup, 1.0)  # cosine start (see learning_rate)
        self.saved_step = -1  # step of the newest checkpoint written or loaded
        self.state: dict | None = None  # this rank's rows of the streams' state, detached by the model
        self.ranks = Ranks.current()
        self.log = MetricsLog(self.run_dir / METRICS, config.tensorboard, active=self.ranks.main)
        set_activation_checkpointing(model, config.checkpoint_activations)
        if config.compile:
            model.compile()  # in place: the state_dict keys stay those of the plain model
        self.net = model  # what runs the forward: the model, or its DDP wrapper under torchrun
        if self.ranks.world > 1:
            if task.even_split:  # streams must split evenly over ranks, then micro-batches
                share = self.ranks.rows(config.batch)
                if (share.stop - share.start) % config.accumulate:
                    raise FbtError(
                        f"each of {self.ranks.world} ranks holds {share.stop - share.start} streams, "
                        f"which --accumulate {config.accumulate} cannot split evenly"
                    )
            self.net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    @property
    def train_stream(self) -> SegmentStream:
        return self.stages[self.stage][0]

    @property
    def valid_stream(self) -> SegmentStream | None:
        return self.stages[self.stage][1]

    def lr(self, step: int) -> float:
        return learning_rate(step, self.config, self.anchor)

    # ---- checkpoints ----

    def save(self) -> Path:
        weights = finite_weights(self.model, f"step {self.step}")  # on every rank, so that all stop together
        # Collectives first: every rank takes part, then only rank 0 writes.
        global_state = gather_state(self.ranks, self.model.state_batch_dims, self.state)
        rng = self.gather_rng()
        if not self.ranks.main:
            self.saved_step = self.step
            return self.run_dir
        optimizer_tensors, optimizer_info = state_io.optimizer_to_flat(self.optimizer)
        info = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed,
            "data": self.train_stream.state_dict(),
            "stage": [self.stage, self.stage_start],
            "schedule_anchor": list(self.anchor),
            "steps": self.config.steps,
            "optimizer": optimizer_info,
        }
        tensors = {**optimizer_tensors, **rng, **state_io.stream_state_to_flat(global_state)}
        directory = save_checkpoint(
            self.run_dir,
            self.step,
            self.run_config,
            weights,
            tensors,
            info,
            self.config.keep_checkpoints,
            {TOKENIZER_FILE: self.task.tokenizer.to_str()} if self.task.tokenizer else None,
        )
        self.saved_step = self.step
        return directory

    def restore_checkpoint(self) -> None:
        """Weights, optimiser, RNGs, data position, curriculum stage and stream state of the run's latest
        checkpoint."""
        directory = find_checkpoint(self.run_dir)
        load_weights(self.model, directory)
        tensors = load_tensors(directory / RESUME_TENSORS)
        info = read_json(directory / RESUME_INFO)
        try:
            state_io.optimizer_from_flat(self.optimizer, tensors, info["optimizer"])
            self.restore_rng(tensors)
            self.stage, self.stage_start = (int(v) for v in info["stage"])
            if not 0 <= self.stage < len(self.stages):
                raise FbtError(f"{directory} is at curriculum stage {self.stage}, but the run has {len(self.stages)}")
            self.train_stream.load_state_dict(info["data"])
            self.step, self.tokens, self.elapsed = (
                int(info["step"]),
                int(info["tokens"]),
                float(info["elapsed_s"]),
            )
            saved_steps = int(info["steps"])
            self.anchor = tuple(info["schedule_anchor"])
        except KeyError as error:
            raise FbtError(f"{directory} is incomplete: missing {error}") from None
        if saved_steps != self.config.steps and self.step > self.config.warmup:
            # A new end: decay from the learning rate of the last update (under the old end) to zero at the new.
            old = TrainConfig.from_dict({**self.config.to_dict(), "steps": saved_steps})
            last = self.step - 1
            self.anchor = (last, learning_rate(last, old, self.anchor) / self.config.lr)
        global_state = state_io.stream_state_from_flat(tensors, self.device)
        if global_state is not None:  # translation carries none
            self.state = state_rows(self.model.state_batch_dims, global_state, self.ranks.rows(self.config.batch))
        self.saved_step = self.step
        if self.ranks.main:
            self.log.drop_after(self.step)

    def gather_rng(self) -> dict[str, torch.Tensor]:
        """Every rank's RNG states (ranks draw different dropout masks): rank 0's under the plain names."""
        rng = {state_io.RNG: torch.get_rng_state()}
        if self.device.type == "cuda":
            rng[state_io.CUDA_RNG] = torch.cuda.get_rng_state(self.device)
        gathered = {}
        for name, tensor in rng.items():
            states = self.ranks.gather_rows(tensor.to(self.device)[None], 0).cpu()  # (N, bytes)
            gathered[name] = states[0]
            gathered.update({f"{name}.rank{r}": states[r] for r in range(1, self.ranks.world)})
        return gathered

    def restore_rng(self, tensors: dict[str, torch.Tensor]) -> None:
        """This rank's saved RNG; a rank the saved run did not have derives one from rank 0's."""
        suffix = f".rank{self.ranks.rank}" if self.ranks.rank else ""
        cpu = tensors.get(state_io.RNG + suffix)
        torch.set_rng_state(tensors[state_io.RNG] if cpu is None else cpu)
        if cpu is None:
            torch.manual_seed(int(torch.randint(2**62, ())) + self.ranks.rank)
        cuda = tensors.get(state_io.CUDA_RNG + suffix, tensors.get(state_io.CUDA_RNG))
        if self.device.type == "cuda" and cuda is not None:
            torch.cuda.set_rng_state(cuda.cpu(), self.device)

    # ---- training ----

    def train_step(self) -> tuple[float, int, float]:
        """One update on the next segment; returns the mean loss over its scored positions (nan if none), its
        token count and the gradient norm before clipping.

        Every rank reads the global segment and runs its rows, in `accumulate` micro-batches. Each micro-batch's
        summed loss is divided by the global count of scored positions (times the ranks, as DDP averages), so
        the gradient is that of the global mean loss whatever the ranks and micro-batches."""
        inputs, targets, new_stream = self.train_stream.next_segment()
        if new_stream:
            self.state = None
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        scored = int((targets != IGNORE_INDEX).sum())  # global: every rank holds the whole segment
        mine = self.ranks.rows(targets.shape[0], even=self.task.even_split)
        micro = micro_batches(rows_of(inputs, mine), rows_of(targets, mine), self.config.accumulate)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, states = 0.0, []
        for index, (micro_inputs, micro_targets, rows) in enumerate(micro):
            last = index == len(micro) - 1
            with nullcontext() if last or self.net is self.model else self.net.no_sync():
                with self.autocast():
                    carried = state_rows(self.model.state_batch_dims, self.state, rows)
                    logits, state = self.net(micro_inputs.to(self.device), carried)
                part, _, _ = segment_loss(logits.float(), micro_targets.to(self.device))
                objective = part / (max(scored, 1) / self.ranks.world)
                if last and (extra := self.auxiliary_loss()) is not None:  # once per update, on every rank
                    objective = objective + extra
                objective.backward()
            loss_sum += part.item()
            states.append(state)
        self.state = cat_states(self.model.state_batch_dims, states)
        (loss_sum,) = self.ranks.sum([loss_sum])
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = nn.utils.clip_grad_norm_(parameters, self.config.clip or math.inf).item()
        loss = loss_sum / max(scored, 1)
        for name, value in (("loss", loss), ("gradient norm", grad_norm)):
            if not math.isfinite(value):
                raise NonFiniteError(
                    f"non-finite {name} ({value}) at step {self.step + 1}; nothing was updated or saved "
                    f"(the latest checkpoint is step {max(self.saved_step, 0)}). Try a lower --lr "
                    f"(now {self.config.lr:g}) or a tighter --clip"
                )
        self.optimizer.step()
        if (after_update := getattr(self.model, "after_update", None)) is not None:
            after_update()
        self.step += 1
        return (loss if scored else float("nan")), inputs.numel(), grad_norm

    def autocast(self):
        """bfloat16 autocast of the forward when asked for (weights, gradients and optimiser stay fp32)."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.precision == "bf16")

    def validate(self, final: bool = False, progress: bool = False) -> dict:
        """Periodic: the first eval_tokens tokens of the current stage's valid split. Final: all of the run's
        own valid split (its `data`, after any curriculum), with a progress bar when asked (on a terminal)."""
        stream = self.stages[-1][1] if final else self.valid_stream
        if stream is None:
            return {}
        tokens = 0 if final else self.config.eval_tokens
        if tokens and isinstance(stream, SegmentStream):
            stream = self.periodic_stream(stream, tokens)
        shown = progress and self.ranks.main
        return evaluate(
            self.model, stream, self.task, self.device, tokens, shown, ranks=self.ranks, autocast=self.autocast
        )

    def periodic_stream(self, stream: SegmentStream, tokens: int) -> SegmentStream:
        """The valid split cut into fewer, longer rows when the first `tokens` would give each of the run's B
        rows only a few segments: every row starts with no state, so the answers that need earlier context
        (a code-exec print whose assignment came before the row began) would be scored without it. Rows of at
        least PERIODIC_SEGMENTS segments and PERIODIC_DOCUMENTS of the task's documents keep that share small
        at any batch size and document length (a row of 512 tokens cut most 430-token programs at their start)."""
        documents = self.task.document_tokens(stream.inputs.reshape(-1))
        row_tokens = max(PERIODIC_SEGMENTS * stream.segment, PERIODIC_DOCUMENTS * documents)
        rows = min(stream.batch, max(1, tokens // row_tokens))
        rows = max(self.ranks.world, rows - rows % self.ranks.world)  # every rank takes its share
        if rows >= stream.batch:
            return stream
        return SegmentStream(stream.inputs.reshape(-1), stream.targets.reshape(-1), rows, stream.segment)

    def auxiliary_loss(self) -> torch.Tensor | None:
        loss = getattr(self.model, "auxiliary_loss", None)
        return loss() if loss else None

    def diagnostics(self) -> dict:
        report = getattr(self.model, "diagnostics", None)
        return report(self.state) if report else {}

    def maybe_advance(self, valid: dict) -> str | None:
        """Moves to the next curriculum stage when the current one is done; returns a message if it did."""
        cfg = self.config
        if self.stage + 1 >= len(self.stages):
            return None
        by_steps = cfg.curriculum_steps and self.step - self.stage_start >= cfg.curriculum_steps
        by_accuracy = cfg.curriculum_accuracy and valid.get("accuracy", 0.0) >= cfg.curriculum_accuracy
        if not (by_steps or by_accuracy):
            return None
        self.stage += 1
        self.stage_start = self.step
        self.state = None  # a new dataset starts new streams
        return f"step {self.step}: curriculum stage {self.stage} ({cfg.stages[self.stage]})"

    def fit(self, progress: bool = True) -> dict:
        """Train until `steps` updates, the time budget of this call, or a SIGINT/SIGTERM; returns the final
        metrics (mean training loss of the last updates and a full validation pass over the run's own valid
        split) and writes them to summary.json. On a signal it saves a checkpoint at the current step and
        raises TrainingInterrupted."""
        self.model.train()
        session_start = time.perf_counter()
        run_start = session_start - self.elapsed  # elapsed counts every session of the run
        window = LogWindow(session_start)
        recent: deque[float] = deque(maxlen=RECENT_STEPS)  # losses of the last scored updates
        status = "complete"
        first_step, eta_due = self.step, progress and self.ranks.main
        with stop_on_signals(announce=self.ranks.main) as stop:
            with self.progress_bar(progress) as bar:
                while self.step < self.config.steps:
                    status = self.stop_reason(stop.requested, session_start) or status
                    if status != "complete":
                        break
                    loss, tokens, grad_norm = self.train_step()
                    self.tokens += tokens
                    self.elapsed = time.perf_counter() - run_start
                    window.add(loss, tokens, grad_norm)
                    if loss == loss:  # segments without scored positions have no loss
                        recent.append(loss)
                    if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                        self.log_train(window, bar)
                    bar.update(1)  # after the log, so that a plain progress line shows this step's loss
                    if eta_due and time.perf_counter() - session_start >= ETA_AFTER_S:
                        eta_due = False
                        self.say(self.time_left(self.step - first_step, time.perf_counter() - session_start))
                    valid = self.periodic_validation()
                    advanced = self.maybe_advance(valid)
                    if advanced:
                        self.say(advanced)
                    if self.step % self.config.save_every == 0:
                        self.save()
            mean = sum(recent) / len(recent) if recent else float("nan")
            train = {"train_loss": mean, "train_loss_steps": len(recent)}
            if status == "interrupted":
                self.save_unless_saved()
                self.write_summary(status, train)
                raise TrainingInterrupted(self.run_dir, self.step, stop.signal)
            if progress and self.ranks.main:  # on stderr, with the progress bars: stdout is the results
                print(f"step {self.step}: final validation, a full pass over the valid split", file=sys.stderr)
            started = time.perf_counter()
            valid = self.validate(final=True, progress=progress)
            final_valid_s = round(time.perf_counter() - started, 2)  # not in elapsed_s, which times training
            if valid:
                self.log.write(
                    "valid", self.step, self.tokens, self.elapsed, None, stage=self.stage, **prefixed("valid", valid)
                )
            self.save_unless_saved()
            return self.write_summary(status, {**train, **prefixed("valid", valid), "final_valid_s": final_valid_s})

    def progress_bar(self, progress: bool) -> tqdm | PlainProgress:
        """The steps of the run, shown by rank 0 when asked: a bar on a terminal, plain lines in a log."""
        return progress_display(
            total=self.config.steps, initial=self.step, desc="train", unit="step", shown=progress and self.ranks.main
        )

    def time_left(self, steps_run: int, seconds: float) -> str:
        """The estimate of the time to the last step, from the speed of this call's first steps."""
        rate = steps_run / seconds
        left = (self.config.steps - self.step) / rate
        return (
            f"step {self.step}: {rate:,.3g} steps/s over the first {seconds:.0f} s; about {format_duration(left)} "
            f"to step {self.config.steps:,}, then a full validation pass"
        )

    def stop_reason(self, signalled: bool, session_start: float) -> str | None:
        """Why every rank stops before the next step: "interrupted" when a signal reached any rank, "stopped"
        when this call's time budget is spent on any, else None."""
        budget = self.config.time_budget
        spent = budget and time.perf_counter() - session_start >= budget
        any_signalled, any_spent = self.ranks.sum([float(signalled), float(bool(spent))])
        return "interrupted" if any_signalled else "stopped" if any_spent else None

    def log_train(self, window: LogWindow, bar: tqdm | PlainProgress) -> None:
        """A metrics row of the steps since the last one (their mean loss, speed and largest gradient norm)."""
        mean, speed, grad_norm = window.flush()
        self.log.write(
            "train",
            self.step,
            self.tokens,
            self.elapsed,
            self.lr(self.step - 1),
            stage=self.stage,
            train_loss=mean,
            tokens_per_s=speed,
            grad_norm=grad_norm,
            **self.diagnostics(),
        )
        bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{speed:,.0f}")

    def periodic_validation(self) -> dict:
        """Every eval_every steps (not at the last, which gets the full pass): a validation row and line."""
        cfg = self.config
        if not cfg.eval_every or self.step % cfg.eval_every or self.step >= cfg.steps:
            return {}
        valid = self.validate()
        self.log.write(
            "valid", self.step, self.tokens, self.elapsed, None, stage=self.stage, **prefixed("valid", valid)
        )
        partial = f" (first {cfg.eval_tokens} tokens)" if cfg.eval_tokens else ""
        shown = ", ".join(f"{k} {v:.4f}" for k, v in valid.items() if k != "scored_tokens")
        self.say(f"step {self.step}: valid{partial} {shown}")
        return valid

    def save_unless_saved(self) -> None:
        if self.step != self.saved_step:
            self.save()

    def say(self, message: str) -> None:
        """A line under the progress bar, from rank 0 only."""
        if self.ranks.main:
            tqdm.write(message, file=sys.stderr)  # stdout holds the results alone

    def write_summary(self, status: str, metrics: dict) -> dict:
        """The end of a training call, as returned and as run_dir/summary.json (NaN written as null)."""
        summary = {
            "status": status,
            "step": self.step,
            "steps": self.config.steps,
            "tokens": self.tokens,
            "elapsed_s": round(self.elapsed, 2),
            # what the call ran on: the thread count changes the last digits of the losses and, through
            # accuracy-gated curriculum stages, a run's whole path
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            **metrics,
        }
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in summary.items()}
        if self.ranks.main:
            write_json_atomic(self.run_dir / SUMMARY, finite)
        return summary


class LogWindow:
    """The updates since the last metrics row: their summed loss (scored segments only), tokens, largest
    gradient norm, and when the window began."""

    def __init__(self, now: float):
        self.reset(now)

    def reset(self, now: float) -> None:
        self.start = now
        self.loss, self.scored, self.tokens, self.grad_norm = 0.0, 0, 0, 0.0

    def add(self, loss: float, tokens: int, grad_norm: float) -> None:
        if loss == loss:
            self.loss += loss
            self.scored += 1
        self.tokens += tokens
        self.grad_norm = max(self.grad_norm, grad_norm)

    def flush(self) -> tuple[float, float, float]:
        """(mean loss, tokens/s, largest gradient norm) of the window, which then starts again."""
        now = time.perf_counter()
        result = (
            self.loss / self.scored if self.scored else float("nan"),
            self.tokens / max(now - self.start, 1e-9),
            self.grad_norm,
        )
        self.reset(now)
        return result


class TrainingInterrupted(FbtError):
    """A signal stopped training; a checkpoint of the current step was saved. The command exits 130, so that a
    caller (an experiment grid) resumes the run instead of taking it for finished."""

    def __init__(
        self, run_dir: Path, step: int, signum: int | None = None, command: str = "fbt train", unit: str = "step"
    ):
        self.run_dir, self.step = Path(run_dir), step
        self.signal = signum
        super().__init__(
            f"interrupted at {unit} {step}; saved a checkpoint. Resume with: {command} --resume --out {run_dir}"
        )


def micro_batches(inputs, targets: torch.Tensor, count: int) -> list[tuple]:
    """(inputs, targets, rows) of `count` consecutive row blocks (fewer if there are fewer rows)."""
    blocks = [share(targets.shape[0], count, index) for index in range(count)]
    return [(rows_of(inputs, rows), targets[rows], rows) for rows in blocks if rows.stop > rows.start]


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{name}": value for name, value in metrics.items() if name != "scored_tokens"}
