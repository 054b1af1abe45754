"""Plugins: modules of your own that register model families, tasks or commands when imported.

Every `fbt` call imports the modules named in the environment variable FBT_PLUGINS (comma-separated) and those
that installed packages declare in the entry-point group `fbt.plugins`, so that what they register is there
for every command, for torchrun's workers and for the cells `fbt experiment` starts (they inherit the
environment).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from fbt.errors import FbtError

ENVIRONMENT_VARIABLE = "FBT_PLUGINS"
ENTRY_POINT_GROUP = "fbt.plugins"


def plugin_modules() -> list[str]:
    """The names of the plugin modules: FBT_PLUGINS's, then the entry points'."""
    named = [name.strip() for name in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if name.strip()]
    return named + [entry.module for entry in entry_points(group=ENTRY_POINT_GROUP)]


def load_plugins() -> None:
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except Exception as error:  # a plugin's own code may raise anything: name the plugin, in one line
            raise FbtError(f"cannot load plugin {name}: {error}") from None
