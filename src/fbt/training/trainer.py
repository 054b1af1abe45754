"""The training loop: truncated BPTT over parallel streams, for any model with the common interface.

The trainer only assumes `logits, state = model(tokens, state)` with `state` a dict of tensors (or None).
Everything a resumed run needs to continue the exact loss curve is checkpointed: weights, optimiser
moments, the RNG, the data position and the carried stream state.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from fbt.data.streams import SegmentStream
from fbt.errors import FbtError
from fbt.tasks import Task
from fbt.training import checkpoint, state_io
from fbt.training.config import TrainConfig
from fbt.training.evaluate import evaluate
from fbt.training.loss import segment_loss
from fbt.training.metrics_log import MetricsLog
from fbt.training.optim import build_optimizer, learning_rate


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        task: Task,
        train_stream: SegmentStream,
        valid_stream: SegmentStream | None,
        run_dir: Path,
        run_config: dict,
        device: torch.device,
    ):
        self.model = model
        self.config = config
        self.task = task
        self.train_stream = train_stream
        self.valid_stream = valid_stream
        self.run_dir = Path(run_dir)
        self.run_config = run_config  # written beside every checkpoint
        self.device = device
        self.optimizer = build_optimizer(model, config)
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.state: dict | None = None  # carried between segments, detached by the model
        self.log = MetricsLog(self.run_dir / "metrics.csv")

    # ---- checkpoints ----

    def save(self) -> Path:
        rng = {state_io.RNG: torch.get_rng_state()}
        optimizer_tensors, optimizer_info = state_io.optimizer_to_flat(self.optimizer)
        info = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed,
            "data": self.train_stream.state_dict(),
            "optimizer": optimizer_info,
        }
        tensors = {**optimizer_tensors, **rng, **state_io.stream_state_to_flat(self.state)}
        return checkpoint.save_checkpoint(
            self.run_dir,
            self.step,
            self.run_config,
            self.model.state_dict(),
            tensors,
            info,
            self.config.keep_checkpoints,
        )

    def resume(self) -> None:
        directory = checkpoint.find_checkpoint(self.run_dir)
        load_weights(self.model, directory)
        tensors = checkpoint.load_tensors(directory / "resume.safetensors")
        info = checkpoint.read_json(directory / "resume.json")
        try:
            state_io.optimizer_from_flat(self.optimizer, tensors, info["optimizer"])
            torch.set_rng_state(tensors[state_io.RNG])
            self.train_stream.load_state_dict(info["data"])
            self.step, self.tokens, self.elapsed = (
                int(info["step"]),
                int(info["tokens"]),
                float(info["elapsed_s"]),
            )
        except KeyError as error:
            raise FbtError(f"{directory} is incomplete: missing {error}") from None
        self.state = state_io.stream_state_from_flat(tensors, self.device)
        self.log.drop_after(self.step)

    # ---- training ----

    def train_step(self) -> tuple[float, int]:
        """One update on the next segment; returns the mean loss over its scored positions and its token count."""
        inputs, targets, new_stream = self.train_stream.next_segment()
        if new_stream:
            self.state = None
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.config)
        logits, self.state = self.model(inputs.to(self.device), self.state)
        loss_sum, scored, _ = segment_loss(logits.float(), targets.to(self.device))
        # A segment may hold no scored position (code-exec): it then contributes no gradient.
        loss = loss_sum / max(scored, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.step += 1
        return (loss.item() if scored else float("nan")), inputs.numel()

    def validate(self) -> dict:
        if self.valid_stream is None:
            return {}
        return evaluate(self.model, self.valid_stream, self.task, self.device, self.config.eval_tokens)

    def fit(self, progress: bool = True) -> dict:
        """Train until `steps` updates or the time budget; returns the final training and validation metrics."""
        cfg = self.config
        self.model.train()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
        )
        window_loss, window_count, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
        session_start = time.perf_counter() - self.elapsed
        valid: dict = {}
        last_loss = float("nan")
        while self.step < cfg.steps:
            if cfg.time_budget and self.elapsed >= cfg.time_budget:
                break
            loss, tokens = self.train_step()
            self.tokens += tokens
            self.elapsed = time.perf_counter() - session_start
            if loss == loss:  # skip segments without scored positions
                window_loss += loss
                window_count += 1
                last_loss = loss
            window_tokens += tokens
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                speed = window_tokens / max(now - window_start, 1e-9)
                mean = window_loss / window_count if window_count else float("nan")
                self.log.write(
                    self.step,
                    self.tokens,
                    self.elapsed,
                    learning_rate(self.step - 1, cfg),
                    train_loss=mean,
                    tokens_per_s=speed,
                )
                bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{speed:,.0f}")
                window_loss, window_count, window_tokens, window_start = 0.0, 0, 0, now
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                valid = self.validate()
                self.log.write(self.step, self.tokens, self.elapsed, None, **prefixed("valid", valid))
                bar.write(f"step {self.step}: " + ", ".join(f"valid {k} {v:.4f}" for k, v in valid.items()))
            if self.step % cfg.save_every == 0:
                self.save()
        bar.close()
        valid = self.validate()
        if valid:
            self.log.write(self.step, self.tokens, self.elapsed, None, **prefixed("valid", valid))
        self.save()
        return {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": round(self.elapsed, 2),
            "train_loss": last_loss,
            **prefixed("valid", valid),
        }


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{name}": value for name, value in metrics.items() if name != "scored_tokens"}


def load_weights(model: nn.Module, directory: Path) -> None:
    weights = checkpoint.load_tensors(Path(directory) / "model.safetensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise FbtError(f"{directory}/model.safetensors does not fit the model config: {first}") from None
