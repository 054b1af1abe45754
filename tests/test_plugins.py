"""Commands, tasks and families of a user's own reach every `fbt` call: a plugin module named in FBT_PLUGINS or
declared under the `fbt.plugins` entry point registers them; one that fails to load is one line and exit 1."""

import os
import subprocess
import sys
import types

import pytest

from fbt import commands
from fbt.cli import main
from fbt.errors import FbtError

# A plugin module: itself a command (`fbt hello`), and it registers a task.
PLUGIN = """
import sys

from fbt.commands import register_command
from fbt.tasks import register_task
from fbt.tasks.text import TextTask

NAME = "hello"


def add_parser(subparsers):
    subparsers.add_parser(NAME, help="greet someone").add_argument("--name", default="world")


def run(args):
    print(f"hello, {args.name}")


register_command(sys.modules[__name__])
register_task("plain-text", type("PlainText", (TextTask,), {}))
"""


def fbt(*args, path, plugins=None):
    """`python -m fbt.cli ARGS` in a fresh process that also imports from `path`, with FBT_PLUGINS=plugins."""
    env = {name: value for name, value in os.environ.items() if name != "FBT_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    if plugins is not None:
        env["FBT_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "fbt.cli", *args], capture_output=True, text=True, env=env)


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "hello_plugin.py").write_text(PLUGIN)
    return tmp_path


def test_a_plugin_named_in_fbt_plugins_adds_its_command_and_its_task(plugin_dir):
    listed = fbt("--help", path=plugin_dir, plugins="hello_plugin")
    assert listed.returncode == 0 and "greet someone" in listed.stdout
    greeted = fbt("hello", "--name", "you", path=plugin_dir, plugins=" hello_plugin ,")
    assert (greeted.returncode, greeted.stdout, greeted.stderr) == (0, "hello, you\n", "")
    train_help = fbt("train", "--help", path=plugin_dir, plugins="hello_plugin")
    assert "plain-text}" in train_help.stdout
    assert "greet someone" not in fbt("--help", path=plugin_dir).stdout  # not named: not loaded


def test_a_plugin_declared_by_an_installed_package_is_loaded(plugin_dir):
    dist_info = plugin_dir / "hello_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[fbt.plugins]\nhello = hello_plugin\n")
    greeted = fbt("hello", path=plugin_dir)
    assert (greeted.returncode, greeted.stdout) == (0, "hello, world\n")


def test_a_plugin_that_fails_to_load_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FBT_PLUGINS", "no_such_plugin")
    assert main(["presets"]) == 1
    missing = "fbt: error: cannot load plugin no_such_plugin: No module named 'no_such_plugin'\n"
    assert capsys.readouterr().err == missing
    (tmp_path / "clashing_plugin.py").write_text(
        "from fbt.tasks import register_task\nfrom fbt.tasks.lm import SubwordLmTask\n"
        "register_task('text', SubwordLmTask)\n"
    )
    clashing = fbt("presets", path=tmp_path, plugins="clashing_plugin")
    assert clashing.returncode == 1 and clashing.stdout == ""
    assert clashing.stderr == (
        "fbt: error: cannot load plugin clashing_plugin: task 'text' is already registered, as TextTask\n"
    )


def test_a_registered_command_runs_with_its_exit_code_and_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setattr(commands, "COMMANDS", list(commands.COMMANDS))  # the command leaves with the test
    failing = types.SimpleNamespace(
        NAME="fail", add_parser=lambda subparsers: subparsers.add_parser("fail"), run=lambda args: 3
    )
    commands.register_command(failing)
    assert main(["fail"]) == 3
    with pytest.raises(FbtError, match="command 'train' is already registered"):
        commands.register_command(types.SimpleNamespace(NAME="train"))
