"""Run directories under faults: a disk that fills during a checkpoint save, and two `fbt train` on one --out."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from tiny_runs import tiny_configs, write_corpus

import fbt
from fbt import api, checkpoint, rundir
from fbt.cli import main
from fbt.errors import FbtError

TINY = [
    "--dim",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--ff",
    "32",
    "--batch",
    "2",
    "--segment",
    "8",
    "--warmup",
    "1",
    "--log-every",
    "1",
    "--eval-every",
    "0",
    "--eval-tokens",
    "64",
    "--threads",
    "1",
    "--no-progress",
]
NO_SPACE = os.strerror(errno.ENOSPC)


@pytest.fixture
def text_file(tmp_path):
    return write_corpus(tmp_path / "corpus.txt")


def disk_full_in(directory_part: str, failure: BaseException):
    """A safetensors writer that fills the disk (half a file, then `failure`) in paths containing the part."""
    real = rundir.save_file

    def save_file(tensors, path):
        if directory_part not in str(path):
            return real(tensors, path)
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise failure

    return save_file


def staging_left(run: Path) -> list[str]:
    return [path.name for path in (run / "checkpoints").iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, NO_SPACE), SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")],
    ids=["os-error", "safetensors-error"],
)
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path, text_file, monkeypatch, failure
):
    trainer = api.make_trainer(*tiny_configs(text_file), tmp_path / "run", torch.device("cpu"))
    trainer.train_step()
    trainer.save()
    trainer.train_step()
    monkeypatch.setattr(rundir, "save_file", disk_full_in(".step-00000002.", failure))
    with pytest.raises(FbtError) as error:
        trainer.save()
    monkeypatch.undo()
    message = str(error.value)
    assert "\n" not in message and NO_SPACE in message and "step-00000002" in message
    assert staging_left(tmp_path / "run") == []
    assert checkpoint.find_checkpoint(tmp_path / "run").name == "step-00000001"
    api.load_run(tmp_path / "run", "cpu")


def test_a_failed_flush_of_a_json_file_removes_its_temporary_file(tmp_path, monkeypatch):
    rundir.write_json_atomic(tmp_path / "summary.json", {"step": 1})

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(rundir.os, "fsync", no_space)
    with pytest.raises(FbtError, match=f"could not write {tmp_path / 'summary.json'}: {NO_SPACE}"):
        rundir.write_json_atomic(tmp_path / "summary.json", {"step": 2})
    monkeypatch.undo()
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]
    assert rundir.read_json(tmp_path / "summary.json") == {"step": 1}


def test_fbt_train_on_a_full_disk_exits_with_one_line_and_stays_resumable(tmp_path, text_file, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(rundir, "save_file", disk_full_in(".step-00000004.", OSError(errno.ENOSPC, NO_SPACE)))
    code = main(["train", "--data", str(text_file), *TINY, "--steps", "4", "--save-every", "2", "--out", str(run)])
    monkeypatch.undo()
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("fbt: error: could not write") and NO_SPACE in err and len(err.splitlines()) == 1
    assert staging_left(run) == []
    assert checkpoint.find_checkpoint(run).name == "step-00000002"
    api.load_run(run, "cpu")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert checkpoint.find_checkpoint(run).name == "step-00000004"


def start_fbt_train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(fbt.__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-m", "fbt.cli", "train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def snapshot(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}


def test_a_second_fbt_train_on_a_run_in_use_stops_with_one_line_and_writes_nothing(tmp_path, text_file, capsys):
    run = tmp_path / "run"
    first = start_fbt_train(
        ["--data", str(text_file), *TINY, "--steps", "1000000", "--save-every", "1000000", "--out", str(run)], tmp_path
    )
    try:
        wait_for(run / "metrics.csv", first)
        before = snapshot(run)
        for second in (["--data", str(text_file), *TINY, "--steps", "3"], ["--resume", "--steps", "3"]):
            assert main(["train", *second, "--out", str(run)]) == 1
            err = capsys.readouterr().err
            assert (
                err == f"fbt: error: {run} is in use by another fbt train (pid {first.pid}); wait for it to end "
                "or choose another --out\n"
            )
        with pytest.raises(FbtError, match="in use by another fbt train"):
            api.train(*tiny_configs(text_file, steps=3), run, "cpu", progress=False)
        after = snapshot(run)
        assert after["config.json"] == before["config.json"] and after[".lock"] == before[".lock"]
        assert after["metrics.csv"].startswith(before["metrics.csv"])  # the first run's rows, still being appended
    finally:
        first.kill()  # no clean exit: the operating system releases the lock
        first.wait()
    assert main(["train", "--data", str(text_file), *TINY, "--steps", "2", "--out", str(run)]) == 0
    assert checkpoint.find_checkpoint(run).name == "step-00000002"


def test_a_start_that_fails_leaves_no_directory_behind(tmp_path, text_file):
    assert main(["train", "--resume", "--out", str(tmp_path / "nowhere")]) == 1
    assert main(["train", "--data", str(tmp_path / "missing.txt"), *TINY, "--out", str(tmp_path / "new")]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.txt"]
