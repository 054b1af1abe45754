"""A small corpus, tiny configs and a signal at a chosen step, shared by the training tests."""

import os
import random
import signal

from fbt.models import ModelConfig
from fbt.training.config import TrainConfig
from fbt.training.trainer import Trainer

TINY_MODEL = dict(dim=16, layers=2, heads=2, ff=32, span=6, context=16, dropout=0.1)


def write_corpus(path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def tiny_configs(text_file, model="feedback", steps=6, **train):
    model_config = ModelConfig(model=model, **TINY_MODEL)
    settings = dict(
        task="text",
        data=str(text_file),
        batch=4,
        segment=8,
        steps=steps,
        lr=3e-3,
        warmup=2,
        eval_every=0,
        eval_tokens=256,
        save_every=100,
        log_every=1,
        seed=7,
    )
    train_config = TrainConfig(**{**settings, **train})
    return model_config, train_config


def signal_after(monkeypatch, step, signum=signal.SIGINT):
    """Every trainer sends `signum` to this process right after finishing update `step`."""
    original = Trainer.train_step

    def step_then_signal(self):
        result = original(self)
        if self.step == step:
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
