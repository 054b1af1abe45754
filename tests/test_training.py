"""Golden losses of a tiny run, exact resume, and checkpoint robustness."""

import pytest
import torch
from families import LANGUAGE_MODELS
from tiny_runs import TINY_MODEL, tiny_configs

from fbt import api, checkpoint, rundir
from fbt.data.code_exec import TOKEN_TO_ID, generate_dataset
from fbt.errors import FbtError
from fbt.models import ModelConfig
from fbt.tasks.text import TextTask
from fbt.training import trainer as trainer_module
from fbt.training.config import TrainConfig


def losses(trainer, count):
    return [trainer.train_step()[0] for _ in range(count)]


# Recorded with torch 2.13.0 (CPU) from this exact configuration; a change means the numerics changed.
GOLDEN_FEEDBACK = [6.085823, 5.956147, 5.751712, 5.803926, 5.551961, 5.76126]


def test_golden_losses_of_a_tiny_feedback_run(tmp_path, text_file):
    trainer = api.make_trainer(*tiny_configs(text_file), tmp_path / "run", torch.device("cpu"))
    got = losses(trainer, 6)
    assert got == pytest.approx(GOLDEN_FEEDBACK, abs=2e-5)
    assert got[-1] < got[0] - 0.2  # and it learns


@pytest.mark.parametrize("model", LANGUAGE_MODELS)
def test_resume_continues_the_exact_loss_curve(tmp_path, text_file, model):
    cpu = torch.device("cpu")
    # Dropout is on: the RNG, the stream position and the carried state must all resume.
    straight = api.make_trainer(*tiny_configs(text_file, model, steps=8), tmp_path / "straight", cpu)
    expected = losses(straight, 8)

    first = api.make_trainer(*tiny_configs(text_file, model, steps=4), tmp_path / "resumed", cpu)
    got = losses(first, 4)
    first.save()
    second = api.resume_trainer(tmp_path / "resumed", cpu, {"steps": 8})
    assert second.step == 4
    got += losses(second, 4)
    assert got == expected  # bit for bit


def test_fit_writes_metrics_checkpoint_and_resumes_to_more_steps(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=4)
    result = api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    assert result["step"] == 4 and result["valid_bits_per_byte"] > 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("kind,step,tokens") and len(rows) == 1 + 4 + 1  # header, 4 train rows, final eval
    result = api.resume(tmp_path / "run", "cpu", progress=False, steps=6)
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

    monkeypatch.setattr(rundir, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000001"
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".step")]
    api.load_run(tmp_path / "run", "cpu")  # still loads


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, text_file):
    from fbt.training.trainer import NonFiniteError

    model_config, train_config = tiny_configs(text_file, steps=6)
    trainer = api.make_trainer(model_config, train_config, tmp_path / "run", torch.device("cpu"))
    losses(trainer, 2)
    trainer.save()
    good = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    with torch.no_grad():  # a blow-up: the next forward's loss is NaN
        trainer.model.embed.weight[:] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at step 3.*latest checkpoint is step 2.*--lr"):
        trainer.train_step()
    with pytest.raises(NonFiniteError, match="refusing to save"):
        trainer.save()
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000002"
    resumed = api.resume_trainer(tmp_path / "run", torch.device("cpu"))
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, good[name]), name


def test_non_finite_gradient_is_caught_before_the_update(tmp_path, text_file):
    from fbt.training.trainer import NonFiniteError

    trainer = api.make_trainer(*tiny_configs(text_file), tmp_path / "run", torch.device("cpu"))
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.model.head.weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite gradient norm"):
        trainer.train_step()
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_metrics_log_gradient_norm_and_feedback_memory(tmp_path, text_file):
    import csv

    api.train(*tiny_configs(text_file, steps=3), tmp_path / "run", "cpu", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    train_rows = [row for row in rows if row["train_loss"]]
    assert all(float(row["grad_norm"]) > 0 and float(row["memory_rms"]) > 0 for row in train_rows)
    weights = [float(w) for w in train_rows[-1]["memory_weights"].split()]
    assert len(weights) == TINY_MODEL["layers"] + 1 and sum(weights) == pytest.approx(1, abs=1e-3)


def test_resave_of_the_same_step_never_touches_the_checkpoint_latest_names(tmp_path, text_file, monkeypatch):
    trainer = api.make_trainer(*tiny_configs(text_file), tmp_path / "run", torch.device("cpu"))
    losses(trainer, 1)
    saved = trainer.save()

    written = (saved / "model.safetensors").stat().st_mtime_ns

    def deleting(*args, **kwargs):
        raise AssertionError("a second save of the same step deleted something")

    monkeypatch.setattr(checkpoint.shutil, "rmtree", deleting)
    assert trainer.save() == saved
    monkeypatch.undo()
    assert (saved / "model.safetensors").stat().st_mtime_ns == written  # kept as it was
    api.load_run(tmp_path / "run", "cpu")


def test_latest_naming_an_incomplete_checkpoint_falls_back_to_the_newest_complete_one(tmp_path, text_file):
    trainer = api.make_trainer(*tiny_configs(text_file, keep_checkpoints=3), tmp_path / "run", torch.device("cpu"))
    for _ in range(2):
        losses(trainer, 1)
        trainer.save()
    (checkpoint.find_checkpoint(tmp_path / "run") / "resume.json").unlink()
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000001"


def test_final_validation_is_a_full_pass_timed_apart_from_training(tmp_path, text_file, capsys):
    result = api.train(*tiny_configs(text_file, steps=2), tmp_path / "run", "cpu", progress=True)
    full = api.evaluate_run(tmp_path / "run", "valid", device="cpu")
    assert result["valid_loss"] == pytest.approx(full["loss"], rel=1e-6)
    assert result["final_valid_s"] > 0  # its own time: elapsed_s counts training only
    assert "step 2: final validation, a full pass over the valid split" in capsys.readouterr().err


def test_extending_a_cosine_run_does_not_jump_the_learning_rate(tmp_path, text_file):
    model_config, train_config = tiny_configs(text_file, steps=6, schedule="cosine")
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    trainer = api.resume_trainer(tmp_path / "run", torch.device("cpu"), {"steps": 12})
    from fbt.training.optim import learning_rate

    last_used = learning_rate(5, train_config)  # the original run's last update, under its own end (6 steps)
    new = [trainer.lr(step) for step in range(6, 12)]
    assert 0 < new[0] <= last_used  # goes on decaying from where it was: no jump back up
    assert all(a >= b for a, b in zip(new, new[1:])) and trainer.lr(12) == pytest.approx(0, abs=1e-12)


def test_wsd_holds_the_rate_then_decays_to_zero_and_extends_without_a_jump(tmp_path, text_file):
    from fbt.training.optim import learning_rate

    config = TrainConfig(steps=10, warmup=2, lr=1e-3, schedule="wsd", decay_steps=4)
    rates = [learning_rate(step, config) for step in range(11)]
    assert rates[:2] == pytest.approx([5e-4, 1e-3]) and rates[2:7] == pytest.approx([1e-3] * 5)
    assert all(a > b for a, b in zip(rates[6:], rates[7:])) and rates[10] == pytest.approx(0, abs=1e-12)
    constant = TrainConfig(steps=10, warmup=2, lr=1e-3)
    assert [learning_rate(step, constant) for step in range(7)] == rates[:7]  # stable: the constant schedule
    for bad in (dict(schedule="wsd"), dict(decay_steps=3), dict(schedule="wsd", decay_steps=11)):
        with pytest.raises(FbtError, match="decay_steps"):
            TrainConfig(steps=10, **bad)
    # Extended while stable (anchored at its last step at full rate): the decay moves to the new end.
    longer = TrainConfig(steps=12, warmup=2, lr=1e-3, schedule="wsd", decay_steps=4)
    assert [learning_rate(step, longer, (5, 1.0)) for step in range(5, 9)] == pytest.approx([1e-3] * 4)
    assert learning_rate(12, longer, (5, 1.0)) == pytest.approx(0, abs=1e-12)
    # Extended while decaying: it goes on from the rate it had reached, no jump back up.
    model_config, train_config = tiny_configs(text_file, steps=6, schedule="wsd", decay_steps=2)
    api.train(model_config, train_config, tmp_path / "run", "cpu", progress=False)
    trainer = api.resume_trainer(tmp_path / "run", torch.device("cpu"), {"steps": 12})
    last_used = learning_rate(5, train_config)
    new = [trainer.lr(step) for step in range(6, 13)]
    assert 0 < new[0] <= last_used and all(a >= b for a, b in zip(new, new[1:])) and new[-1] == pytest.approx(0)


def test_curriculum_advances_by_steps_logs_its_stage_and_resumes(tmp_path, text_file):
    import csv

    other = tmp_path / "other.txt"
    other.write_text("abc " * 2000)
    model_config, train_config = tiny_configs(text_file, steps=4, curriculum=str(other), curriculum_steps=2)
    trainer = api.make_trainer(model_config, train_config, tmp_path / "run", torch.device("cpu"))
    losses(trainer, 1)
    assert trainer.maybe_advance({}) is None and trainer.stage == 0
    losses(trainer, 1)
    assert trainer.maybe_advance({}) and trainer.stage == 1 and trainer.state is None
    trainer.save()
    resumed = api.resume_trainer(tmp_path / "run", torch.device("cpu"))
    assert resumed.stage == 1 and resumed.train_stream is resumed.stages[1][0]
    assert resumed.fit(progress=False)["step"] == 4

    api.train(model_config, train_config, tmp_path / "straight", "cpu", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "straight" / "metrics.csv")))
    assert [row["stage"] for row in rows if row["train_loss"]] == ["0", "0", "1", "1"]


def test_curriculum_advances_on_validation_accuracy(tmp_path, text_file):
    other = tmp_path / "other.txt"
    other.write_text("abc " * 2000)
    model_config, train_config = tiny_configs(
        text_file, steps=2, curriculum=str(other), curriculum_accuracy=0.5, eval_every=1
    )
    trainer = api.make_trainer(model_config, train_config, tmp_path / "run", torch.device("cpu"))
    assert trainer.maybe_advance({"accuracy": 0.4}) is None
    assert trainer.maybe_advance({"accuracy": 0.6}) and trainer.stage == 1


def test_a_periodic_validation_spans_several_programs_of_a_long_program_task(tmp_path):
    """Programs of 100 statements (about 430 tokens) would mostly be cut at the start of 512-token rows, and
    their prints scored without their assignments: rows hold PERIODIC_DOCUMENTS programs instead."""
    data = generate_dataset(tmp_path / "data", sizes=(20, 40, 2), seed=3)  # the paper's task, 3 x 100
    model_config = ModelConfig(dim=16, layers=1, heads=2, ff=32, span=8)
    train_config = TrainConfig(task="code-exec", data=str(data), batch=128, segment=32, steps=1, eval_tokens=16384)
    trainer = api.make_trainer(model_config, train_config, tmp_path / "run", torch.device("cpu"))
    inputs = trainer.valid_stream.inputs.reshape(-1)
    program = trainer.task.document_tokens(inputs)
    ends = int((inputs == TOKEN_TO_ID["END"]).sum())
    starts = trainer.task.document_starts(inputs)  # the stream's rows end inside a program: one start more
    assert starts.numel() == ends + 1 and bool((inputs[starts[1:] - 1] == TOKEN_TO_ID["END"]).all())
    assert 380 < program < 480 and ends >= 38 and program == inputs.numel() // (ends + 1)
    periodic = trainer.periodic_stream(trainer.valid_stream, 16384)
    assert periodic.batch == 16384 // (trainer_module.PERIODIC_DOCUMENTS * program) == 4
    assert TextTask().document_tokens(inputs) == 0  # running text has no documents


@pytest.mark.parametrize("batch, rows", [(128, 32), (32, 32), (8, 8)])
def test_a_periodic_validation_reads_rows_of_at_least_sixteen_segments(tmp_path, text_file, batch, rows):
    """Every row starts with no state: at 128 rows the first 16,384 tokens would give each only 4 segments of 32
    (a code-exec row would start inside most programs), so the periodic pass reads 32 rows of 16 instead, the
    same tokens in order. At 32 rows or fewer it reads the run's own stream."""
    model_config, train_config = tiny_configs(text_file, steps=1, batch=batch, segment=32, eval_tokens=16384)
    trainer = api.make_trainer(model_config, train_config, tmp_path / "run", torch.device("cpu"))
    periodic = trainer.periodic_stream(trainer.valid_stream, 16384)
    assert periodic.batch == rows and periodic.segment == 32
    if rows == batch:
        assert periodic is trainer.valid_stream
    else:
        flat = trainer.valid_stream.inputs.reshape(-1)
        assert torch.equal(periodic.inputs.reshape(-1), flat[: periodic.inputs.numel()])
