"""Golden losses of a tiny run, exact resume, and checkpoint robustness."""

import random

import pytest
import torch

from fbt import api
from fbt.errors import FbtError
from fbt.models import ModelConfig
from fbt.training import checkpoint
from fbt.training.config import TrainConfig

TINY_MODEL = dict(dim=16, layers=2, heads=2, ff=32, span=6, context=16, dropout=0.1)


@pytest.fixture
def text_file(tmp_path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def tiny_configs(text_file, model="feedback", steps=6, **train):
    model_config = ModelConfig(model=model, **TINY_MODEL)
    train_config = TrainConfig(
        task="text", data=str(text_file), batch=4, segment=8, steps=steps, lr=3e-3, warmup=2,
        eval_every=0, eval_tokens=256, save_every=100, log_every=1, seed=7, **train,
    )  # fmt: skip
    return model_config, train_config


def losses(trainer, count):
    return [trainer.train_step()[0] for _ in range(count)]


# Recorded with torch 2.13.0 (CPU) from this exact configuration; a change means the numerics changed.
GOLDEN_FEEDBACK = [6.085823, 5.956147, 5.751712, 5.803926, 5.551961, 5.76126]


def test_golden_losses_of_a_tiny_feedback_run(tmp_path, text_file):
    trainer = api.make_trainer(*tiny_configs(text_file), tmp_path / "run", torch.device("cpu"))
    got = losses(trainer, 6)
    assert got == pytest.approx(GOLDEN_FEEDBACK, abs=2e-5)
    assert got[-1] < got[0] - 0.2  # and it learns


@pytest.mark.parametrize("model", ["feedback", "transformer-xl", "gpt", "lstm"])
def test_resume_continues_the_exact_loss_curve(tmp_path, text_file, model):
    cpu = torch.device("cpu")
    # Dropout is on: the RNG, the stream position and the carried state must all resume.
    straight = api.make_trainer(*tiny_configs(text_file, model, steps=8), tmp_path / "straight", cpu)
    expected = losses(straight, 8)

    first = api.make_trainer(*tiny_configs(text_file, model, steps=4), tmp_path / "resumed", cpu)
    got = losses(first, 4)
    first.save()
    second = api.make_trainer(*tiny_configs(text_file, model, steps=8), tmp_path / "resumed", cpu, resume=True)
    assert second.step == 4
    got += losses(second, 4)
    assert got == expected  # bit for bit


def test_fit_writes_metrics_checkpoint_and_resumes_to_more_steps(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=4)
    result = api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    assert result["step"] == 4 and result["valid_bits_per_byte"] > 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,tokens") and len(rows) == 1 + 4 + 1  # header, 4 train rows, final eval
    _, longer = tiny_configs(text_file, steps=6)
    result = api.train(model_config, longer, tmp_path / "run", "cpu", resume=True, progress=False)
    assert result["step"] == 6
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000006"


def test_new_run_refuses_to_overwrite_an_existing_run(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=1)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    with pytest.raises(FbtError, match="already holds a run"):
        api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=1)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    weights = checkpoint.find_checkpoint(tmp_path / "run") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FbtError, match="corrupt or truncated"):
        api.load_run(tmp_path / "run", "cpu")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, text_file, monkeypatch):
    trainer = api.make_trainer(*tiny_configs(text_file, steps=4), tmp_path / "run", torch.device("cpu"))
    losses(trainer, 1)
    trainer.save()
    losses(trainer, 1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000001"
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".step")]
    api.load_run(tmp_path / "run", "cpu")  # still loads
