"""`fbt experiment`: a tiny grid end to end, resumable, and its one-line answers to malformed files."""

import json
import signal

import pytest
from tiny_runs import signal_after

from fbt.cli import main
from fbt.errors import FbtError
from fbt.experiments import runner
from fbt.experiments.grid import load_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_grid(tmp_path, corpus, steps=3):
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


def test_a_tiny_grid_runs_reports_and_never_reruns_a_finished_cell(tmp_path, text_file, capsys, monkeypatch):
    grid, out = tiny_grid(tmp_path, text_file), tmp_path / "exp"
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


def test_cells_start_seed_by_seed_so_that_one_seeds_models_train_side_by_side(tmp_path, text_file):
    grid = tiny_grid(tmp_path, text_file)
    grid.write_text("seeds = 2\n" + grid.read_text())
    cells = load_grid(str(grid), tmp_path / "exp").cells
    assert [c.name for c in cells] == ["layers=1,seed=0", "layers=1,seed=1", "layers=2,seed=0", "layers=2,seed=1"]
    started = [c.name for c in runner.start_order(cells)]
    assert started == ["layers=1,seed=0", "layers=2,seed=0", "layers=1,seed=1", "layers=2,seed=1"]


def test_a_finished_cell_joins_a_section_added_later_without_training_again(tmp_path, text_file, monkeypatch):
    grid, out = tiny_grid(tmp_path, text_file), tmp_path / "exp"
    assert main(["experiment", str(grid), "--out", str(out), "--no-progress"]) == 0
    grid.write_text(grid.read_text() + '[[cells]]\nsection = "later"\nlayers = 2\n')  # shares layers=2
    monkeypatch.setattr(runner, "run_fbt", lambda *args, **kwargs: pytest.fail("a finished cell ran again"))
    assert main(["experiment", str(grid), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results" / "layers=2.json").read_text())
    assert result["sections"] == ["", "later"]


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, text_file, monkeypatch):
    grid, out = tiny_grid(tmp_path, text_file, steps=4), tmp_path / "exp"
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
    lm = load_grid("lm-depth", tmp_path)
    assert len(lm.cells) == 9 + 4 * 3 + 12  # the headline blocks carry three seeds each
    ablations = load_grid("ablations", tmp_path)
    baseline = ablations.cells[0]
    assert baseline.sections == ("memory source", "keys and values", "attention span")
    assert len(ablations.cells) == 4 * 2 + 2 + 8 * 3 - 2  # the baseline's seeds 0 and 1 are shared
    assert baseline.name == "model=feedback,layers=2,memory=all,seed=0"  # what its first section varies
    assert [c.name for c in ablations.cells if c.values.get("memory_layer") == 1][0].endswith("memory_layer=1,seed=0")
    lm_names = [c.name for c in lm.cells]
    assert "model=gpt,layers=4,seed=2" in lm_names  # a later section's cell of the same name gets its section
    assert "equal-wall-clock.model=gpt,layers=4,seed=0" in lm_names
    assert load_grid("decode-speed", tmp_path).command == "bench"
    lm_budget = load_grid("lm-budget", tmp_path)
    assert [c.name for c in lm_budget.cells][:2] == [
        "model=feedback,layers=2,lr=0.0005",
        "model=feedback,layers=2,lr=0.001",
    ]
    rl = load_grid("rl-memory-s7-baselines", tmp_path)
    assert rl.command == "rl" and len(rl.cells) == 16
    assert rl.cells[1].name == "policy=lstm,lr=0.001" and len(rl.cells[1].sections) == 4  # the defaults, shared
    assert [r["value"] for r in load_grid("code-exec-depth-3var", tmp_path).references] == [0.991, 0.337]
    five = load_grid("code-exec-5var-cpu", tmp_path)
    assert len(five.cells) == 6 and five.cells[-1].name == "model=transformer-xl,layers=4,seed=2"
    assert [r["value"] for r in five.references] == [0.926, 0.375]


SECTIONS = """
description = "sections, shared cells, per-block seeds and a published value"
[defaults]
model = "feedback"
dim = 16
heads = 2
ff = 32
span = 4
data = "{corpus}"
batch = 2
segment = 8
steps = 4
warmup = 1
eval_every = 2
eval_tokens = 64
log_every = 1
[[cells]]
section = "memory source"
memory = ["all", "top"]
[[cells]]
section = "span"
seeds = 2
span = [2, 4]
[[reference]]
label = "a published value"
span = 4
value = 7.5
"""


def test_sections_share_cells_and_the_report_draws_every_figure(tmp_path, text_file):
    grid_file = tmp_path / "sections.toml"
    grid_file.write_text(SECTIONS.format(corpus=text_file))
    out = tmp_path / "exp"
    grid = load_grid(str(grid_file), out)
    # memory=all with span 4 is the span section's span=4 cell too: it runs once, in both sections
    assert [c.name for c in grid.cells] == [
        "memory=all,seed=0",
        "memory=top,seed=0",
        "span=2,seed=0",
        "span=2,seed=1",
        "span=4,seed=1",
    ]
    assert grid.cells[0].sections == ("memory source", "span") and grid.cells[0].values["memory"] == "all"
    assert main(["experiment", str(grid_file), "--out", str(out), "--no-progress"]) == 0
    assert main(["experiment", "report", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "## Memory source" in report and "## Span" in report and "## The learned memory mix" in report
    span_table = report.split("## Span")[1].split("![")[0]
    assert "| 4 | 2 |" in span_table and "| 2 | 2 |" in span_table  # two seeds per span, the shared cell included
    assert "## Where it ran" in report
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures == {
        "s0_bits_per_byte_bars.png",
        "s0_valid_bits_per_byte_vs_tokens.png",
        "s0_valid_bits_per_byte_vs_time.png",
        "s1_bits_per_byte_vs_span.png",
        "s1_valid_bits_per_byte_vs_tokens.png",
        "s1_valid_bits_per_byte_vs_time.png",
        "memory_mix.png",
    }
    assert all(f"figures/{name}" in report for name in figures)


def test_a_bench_grid_measures_every_cell_in_one_process(tmp_path, capsys):
    grid_file = tmp_path / "bench.toml"
    grid_file.write_text("""
command = "bench"
[defaults]
dim = 16
heads = 2
ff = 32
span = 4
batch = 2
segment = 4
repeats = 1
steps = 1
decode_batches = [1, 2]
decode_tokens = 2
peak_memory = false
[[cells]]
model = ["feedback", "transformer-xl"]
layers = [1, 2]
""")
    out = tmp_path / "exp"
    assert main(["experiment", str(grid_file), "--out", str(out), "--no-progress"]) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].endswith(
        "decode_tokens_per_s_batch1,decode_tokens_per_s_batch2,state_bytes_per_token"
    )
    state = {
        json.loads(p.read_text())["cell"]: json.loads(p.read_text())["bench"]["state_bytes_per_token"]
        for p in (out / "results").glob("*.json")
    }
    # the feedback memory is one state per token whatever the depth; a transformer caches one per layer
    assert state["model=feedback,layers=1"] == state["model=feedback,layers=2"]
    assert state["model=transformer-xl,layers=2"] == 2 * state["model=transformer-xl,layers=1"]
    assert main(["experiment", "report", str(out)]) == 0
    assert (out / "figures" / "decode_speed.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "fbt bench --models feedback:" in (out / "REPORT.md").read_text()
    assert main(["experiment", str(grid_file), "--out", str(out), "--budget", "5"]) == 1
    assert "does not apply" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('command = "sing"\n', 1, "command must be one of"),
        ('seeds = 1\n[[cells]]\nmodel = "lstm"\nseeds = 0\n', 4, "positive integer"),
        ('[[cells]]\nmodel = "lstm"\n[[reference]]\nlabel = "x"\n', 3, "numeric value"),
        ('description = "x"\n[data.bad]\nvariables = 9\n', 2, "dataset 'bad'"),
    ],
)
def test_bad_grid_entries_name_their_line(tmp_path, text, line, words):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(FbtError, match=f"line {line}: .*{words}"):
        load_grid(str(path), tmp_path)


RL_GRID = """
description = "two tiny policies"
command = "rl"
[defaults]
frames = 64
envs = 2
steps = 16
bptt = 8
minibatches = 1
dim = 16
layers = 1
[[cells]]
policy = ["lstm", "mlp"]
"""


def test_an_rl_grid_trains_evaluates_and_reports_its_policies(tmp_path, monkeypatch):
    pytest.importorskip("minigrid")
    grid_file, out = tmp_path / "rl.toml", tmp_path / "exp"
    grid_file.write_text(RL_GRID)
    assert [c.settings["frames"] for c in load_grid(str(grid_file), out, steps=32).cells] == [32, 32]  # --budget
    monkeypatch.setattr(runner, "RL_EPISODES", 2)
    assert main(["experiment", str(grid_file), "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    assert json.loads((out / "host.json").read_text())["cells at once"] == 2  # the report's "Where it ran"
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert sorted(results) == ["policy=lstm", "policy=mlp"]
    for result in results.values():
        assert result["train"]["frames"] == 64 and result["test"]["episodes"] == 2
        assert result["train_command"].startswith("fbt rl train --frames 64") and "rl eval" in result["eval_command"]
    assert "train_frames" in (out / "results.csv").read_text().splitlines()[0]
    assert main(["experiment", "report", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "test success_rate" in report and "train frames" in report
    for figure in ("success_rate_bars.png", "train_success_vs_frames.png"):
        assert (out / "figures" / figure).read_bytes().startswith(PNG_SIGNATURE)
    grid_file.write_text(RL_GRID.replace('"mlp"', '"gru"'))
    with pytest.raises(FbtError, match="unknown policy 'gru'"):
        load_grid(str(grid_file), out)
