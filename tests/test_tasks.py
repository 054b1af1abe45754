"""The task contract, for every registered task (the shipped ones and the toy `recall` of tests/toy_task.py), and
a task registered from outside the package trained, evaluated and described end to end."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
from tiny_runs import TINY_MODEL, write_corpus
from toy_task import RecallTask, write_recall_data

from fbt import api, runs
from fbt.cli import main
from fbt.data.code_exec import ProgramSpec, generate_dataset
from fbt.data.splits import SPLITS
from fbt.data.targets import IGNORE_INDEX
from fbt.errors import FbtError
from fbt.models import ModelConfig
from fbt.tasks import Task, register_task, task_class, task_names, task_of_data
from fbt.training.config import TrainConfig


def write_pairs(path):
    """Sentence pairs whose targets rename the source words, in 4 groups."""
    rng = random.Random(0)
    lexicon = {"uno": "one", "dos": "two", "tres": "three", "luz": "light"}
    lines = ["book\tspanish\tenglish"]
    for group in range(4):
        for _ in range(30):
            words = [rng.choice(list(lexicon)) for _ in range(rng.randint(2, 5))]
            lines.append(f"B{group}\t{' '.join(words)}\t{' '.join(lexicon[w] for w in words)}")
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


# Per task: its data written under a directory, and the run settings that read it.
SAMPLES = {
    "text": lambda root: (write_corpus(root / "c.txt"), {}),
    "lm": lambda root: (write_corpus(root / "c.txt"), {"tokenizer_vocab": 300}),
    "code-exec": lambda root: (generate_dataset(root / "d", ProgramSpec(statements=5), sizes=(20, 4, 4)), {}),
    "translation": lambda root: (
        write_pairs(root / "p.tsv.gz"),
        {
            "source_column": "spanish",
            "target_column": "english",
            "group_column": "book",
            "batch_tokens": 128,
            "max_length": 30,
        },
    ),
    "recall": lambda root: (write_recall_data(root / "r"), {}),
}


def sample_task(name, root) -> tuple[Task, TrainConfig]:
    data, settings = SAMPLES[name](root)
    config = TrainConfig(task=name, data=str(data), batch=2, segment=8, **settings)
    return api.run_task(config, root / "run"), config


def test_every_registered_task_has_a_sample_for_the_contract():
    assert set(task_names()) == set(SAMPLES)


@pytest.mark.parametrize("name", task_names())
def test_a_task_streams_every_split_as_ids_of_its_vocabulary(tmp_path, name):
    task, config = sample_task(name, tmp_path)
    assert task.name == name and isinstance(task, task_class(name)) and task.vocab_size > 0
    assert (task.tokenizer is not None) == task.needs_tokenizer
    for stream in task.streams(config, config.data, SPLITS):
        assert stream.tokens > 0 and stream.segments_per_pass() >= 1
        scored_positions = 0
        for inputs, targets in stream.iterate_once():
            for ids in [inputs] if isinstance(inputs, torch.Tensor) else list(inputs):  # a TranslationBatch: 2
                assert 0 <= ids.min() and ids.max() < task.vocab_size
            scored = targets[targets != IGNORE_INDEX]
            assert scored.numel() == 0 or (0 <= scored.min() and scored.max() < task.vocab_size)
            scored_positions += scored.numel()
        assert scored_positions > 0


@pytest.mark.parametrize("name", task_names())
def test_a_prompt_round_trips_through_encode_and_decode(tmp_path, name):
    task, _ = sample_task(name, tmp_path)
    ids = task.encode(task.example_prompt)
    assert ids and all(0 <= i < task.vocab_size for i in ids)
    assert task.decode(ids) == task.example_prompt


@pytest.mark.parametrize("name", task_names())
def test_the_metrics_of_a_pass_hold_the_metric_that_judges_a_run(tmp_path, name):
    task, config = sample_task(name, tmp_path)
    targets = torch.cat([t.flatten() for _, t in task.streams(config, config.data, ("valid",))[0].iterate_once()])
    scored, scored_bytes = int((targets != IGNORE_INDEX).sum()), task.target_bytes(targets)
    metrics = task.metrics(2.0 * scored, scored // 2, scored, scored_bytes)
    assert metrics["loss"] == 2.0 and metrics["accuracy"] == (scored // 2) / scored
    assert metrics["scored_tokens"] == scored
    assert ("perplexity" in metrics) == task.needs_tokenizer
    assert ("bits_per_byte" in metrics) == (scored_bytes > 0)
    assert task.valid_metric.removeprefix("valid_") in metrics
    with pytest.raises(FbtError, match="no scored positions"):
        task.metrics(0.0, 0, 0)


@pytest.mark.parametrize("name", task_names())
def test_a_task_answers_before_its_run_is_built(tmp_path, name):
    task = task_class(name)
    data, settings = SAMPLES[name](tmp_path)
    config = TrainConfig(task=name, data=str(data), **settings)
    assert task.tokens_per_step(config) > 0
    assert f" {tmp_path / 'run'} " in task.next_command(str(tmp_path / "run"))
    assert task_of_data(data) in (name, None)
    if task.even_split:
        with pytest.raises(FbtError, match="--batch 3 streams cannot be split into --accumulate 2 equal micro-batches"):
            TrainConfig(task=name, batch=3, accumulate=2)
    else:
        TrainConfig(task=name, batch=3, accumulate=2)  # batches of sentences split into shares that differ by one
    if not task.takes_curriculum:
        with pytest.raises(FbtError, match=f"curricula are for token streams; {name} trains on one corpus"):
            TrainConfig(task=name, curriculum=str(data), curriculum_steps=1)


def test_the_registry_names_its_tasks_and_refuses_what_is_not_one():
    with pytest.raises(FbtError, match="unknown task 'nope'; choose one of text, code-exec, lm, translation"):
        task_class("nope")
    with pytest.raises(FbtError, match="subclass of fbt.tasks.Task"):
        register_task("nope", object)
    with pytest.raises(FbtError, match="'text' is already registered, as TextTask"):
        register_task("text", RecallTask)
    assert register_task("recall", RecallTask) is RecallTask  # registering the same class again changes nothing


def test_a_task_registered_outside_the_package_trains_evaluates_and_shows_in_the_header(tmp_path, capsys):
    data = write_recall_data(tmp_path / "data")
    model_config = ModelConfig(model="feedback", **TINY_MODEL)
    settings = dict(batch=4, segment=8, steps=30, lr=1e-2, warmup=5, eval_every=0, eval_tokens=0, log_every=10)
    result = api.train(model_config, TrainConfig(task="recall", data=str(data), **settings), tmp_path / "run", "cpu")
    header = capsys.readouterr().err
    assert f"{data} (recall)" in header and "4 streams x 8 = 32 per step" in header
    assert result["valid_accuracy"] > 0.5  # chance is 1/6
    test = api.evaluate_run(tmp_path / "run", "test", device="cpu")
    assert set(test) == {"loss", "accuracy", "scored_tokens"}
    assert runs.run_info(tmp_path / "run").best_valid_name == "valid_accuracy"

    tiny = ["--dim", "16", "--layers", "1", "--heads", "2", "--ff", "32", "--batch", "2", "--segment", "8"]
    assert main(["train", "--data", str(data), *tiny, "--steps", "2", "--out", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["train"]["task"] == "recall"
    assert f"fbt generate {tmp_path / 'cli'} --prompt '1 2 3'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "cli"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["split"] == "test"
