"""The README's Python examples run as written and its tables name what ships (read from README.md, so the two
cannot drift)."""

import re
from pathlib import Path

import torch

from fbt.presets import PRESETS

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example(heading: str = "## Python API") -> str:
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_python_example_runs_verbatim_in_a_fresh_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # as a user would, away from the repository
    exec(compile(python_example(), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == "60"  # the resumed run reached its new end
    assert (tmp_path / "runs" / "api-demo" / "summary.json").exists()
    assert printed[3].startswith("ROMEO:")  # the sample begins with its prompt
    exec(compile(python_example(), str(README), "exec"), {})  # a second time over the first run: replaced
    assert capsys.readouterr().out.splitlines()[1] == "60"


def test_the_library_example_trains_saves_loads_and_samples_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(python_example("## Using the library directly"), str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert float(printed[0].removeprefix("loss ")) < 3.0  # it learned: a uniform guess over bytes is ln 256 = 5.5
    assert {path.name for path in (tmp_path / "runs" / "my-model").iterdir()} == {
        "model.safetensors",
        "config.json",
        "generation_config.json",
    }
    model, loaded = namespace["model"], namespace["loaded"]
    assert all(torch.equal(loaded.state_dict()[name], weight) for name, weight in model.state_dict().items())
    # The loaded model samples what the trained one samples with the same settings; the text starts with the prompt.
    sample = model.generate(list(b"ROMEO:"), max_new_tokens=80, temperature=0.8, seed=0)
    assert "\n".join(printed[1:]) == bytes(sample[0].tolist()).decode("utf-8", errors="replace")
    assert printed[1].startswith("ROMEO:")


def test_the_model_family_example_registers_and_trains_verbatim(tmp_path, monkeypatch, capsys):
    from fbt.models import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # the example's family leaves with it
    exec(compile(python_example("## A model family of your own"), str(README), "exec"), {})
    bits = float(capsys.readouterr().out.split()[0])
    assert bits < 7.0  # it learned: a uniform guess is 8 bits per byte
    header = (tmp_path / "runs" / "pair-table" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith(",table_rms")


def test_the_transformers_example_trains_saves_loads_and_samples_verbatim(tmp_path, monkeypatch, capsys, one_thread):
    import pytest

    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    exec(compile(python_example("## Using Hugging Face transformers"), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    loss = next(line for line in printed if line.startswith("loss "))
    assert float(loss.removeprefix("loss ")) < 3.0  # it learned: a uniform guess over bytes is ln 256 = 5.5
    assert printed[printed.index(loss) + 1].startswith("ROMEO:")
    assert {"model.safetensors", "config.json", "modeling_fbt.py"} <= {
        p.name for p in (tmp_path / "hf-feedback" / "final").iterdir()
    }


def test_the_preset_table_lists_every_preset():
    readme = README.read_text()
    assert [name for name in PRESETS if f"| `{name}` |" not in readme] == []
