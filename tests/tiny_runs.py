"""A small corpus and tiny configs shared by the training tests."""

import random

from fbt.models import ModelConfig
from fbt.training.config import TrainConfig

TINY_MODEL = dict(dim=16, layers=2, heads=2, ff=32, span=6, context=16, dropout=0.1)


def write_corpus(path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def tiny_configs(text_file, model="feedback", steps=6, **train):
    model_config = ModelConfig(model=model, **TINY_MODEL)
    settings = dict(
        task="text", data=str(text_file), batch=4, segment=8, steps=steps, lr=3e-3, warmup=2,
        eval_every=0, eval_tokens=256, save_every=100, log_every=1, seed=7,
    )  # fmt: skip
    train_config = TrainConfig(**{**settings, **train})
    return model_config, train_config
