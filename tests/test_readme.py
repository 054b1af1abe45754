"""The README's Python example runs as written (read from README.md, so the two cannot drift)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_python_example_runs_verbatim_in_a_fresh_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # as a user would, away from the repository
    exec(compile(python_example(), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == "60"  # the resumed run reached its new end
    assert (tmp_path / "runs" / "api-demo" / "summary.json").exists()
    assert printed[3].startswith("ROMEO:")  # the sample begins with its prompt
