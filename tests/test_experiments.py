"""`fbt experiment`: a tiny grid end to end, resumable, and its one-line answers to malformed files."""

import json
import signal

import pytest
from tiny_runs import signal_after, write_corpus

from fbt.cli import main
from fbt.errors import FbtError
from fbt.experiments import runner
from fbt.experiments.grid import load_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_grid(tmp_path, steps=3):
    corpus = write_corpus(tmp_path / "corpus.txt")
    grid = tmp_path / "tiny.toml"
    grid.write_text(f"""
description = "two tiny lstm cells"
[defaults]
model = "lstm"
dim = 16
data = "{corpus}"
batch = 2
segment = 8
steps = {steps}
warmup = 1
[[cells]]
layers = [1, 2]
""")
    return grid


def test_a_tiny_grid_runs_reports_and_never_reruns_a_finished_cell(tmp_path, capsys, monkeypatch):
    grid, out = tiny_grid(tmp_path), tmp_path / "exp"
    assert main(["experiment", str(grid), "--out", str(out), "--no-progress"]) == 0
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert sorted(results) == ["layers=1", "layers=2"]
    assert all(r["train"]["step"] == 3 and r["test"]["bits_per_byte"] > 0 for r in results.values())
    assert results["layers=2"]["train_command"].startswith("fbt train --model lstm --dim 16")
    assert (out / "results.csv").read_text().splitlines()[0].startswith("cell,model,dim,data")
    assert main(["experiment", "report", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "bits_per_byte vs layers" in report and "fbt eval" in report
    assert (out / "figures" / "bits_per_byte_vs_layers.png").read_bytes().startswith(PNG_SIGNATURE)

    def no_process(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(runner, "run_fbt", no_process)
    assert main(["experiment", str(grid), "--out", str(out), "--no-progress"]) == 0


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    grid, out = tiny_grid(tmp_path, steps=4), tmp_path / "exp"
    cell = load_grid(str(grid), out).cells[0]
    signal_after(monkeypatch, 2, signal.SIGINT)  # the cell's own training, stopped at step 2 of 4
    flags = runner.train_flags(cell.settings)
    assert main(["train", *flags, "--out", str(out / "cells" / cell.name), "--no-progress"]) == 130
    monkeypatch.undo()
    results = runner.run_grid(load_grid(str(grid), out), out, jobs=2, progress=False)
    assert [r["train"]["step"] for r in results] == [4, 4]
    assert "train --resume" in (out / "cells" / cell.name / "train.log").read_text()


def test_a_malformed_grid_is_one_line_naming_the_line(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text('description = "x"\n[defaults]\nlayers = = 2\nmodel = "lstm"\n')
    with pytest.raises(FbtError, match="line 3"):
        load_grid(str(broken), tmp_path)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('description = "x"\n[defaults]\nmodel = "lstm"\nlayerz = 2\n')
    assert main(["experiment", str(unknown), "--out", str(tmp_path / "e")]) == 1
    error = capsys.readouterr().err.strip()
    assert "line 4" in error and "layerz" in error and len(error.splitlines()) == 1
    assert main(["experiment", "no-such-grid"]) == 1
    assert "code-exec-depth" in capsys.readouterr().err


def test_shipped_grids_expand(tmp_path):
    grid = load_grid("code-exec-depth", tmp_path, seeds=1)
    assert len(grid.cells) == 3 + 4 + 1 and "code-exec-cpu" in grid.datasets
