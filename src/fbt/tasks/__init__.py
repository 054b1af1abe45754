"""The tasks by name. Each is one module behind the `Task` interface (base.py); `register_task` adds one from
outside the package, after which --task, configs, saved runs and every command know it.

The built-in tasks are imported on first use, so that parsers (`fbt --help`) know their names without torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from fbt.errors import FbtError

if TYPE_CHECKING:
    from fbt.tasks.base import Task

# name -> the task's class, or "module:class" until first used
TASKS: dict[str, type[Task] | str] = {
    "text": "fbt.tasks.text:TextTask",
    "code-exec": "fbt.tasks.code_exec:CodeExecTask",
    "lm": "fbt.tasks.lm:SubwordLmTask",
    "translation": "fbt.tasks.translation:TranslationTask",
}


def register_task(name: str, task: type[Task]) -> type[Task]:
    """Make `task` (a subclass of Task) known as `name`, which becomes its `name`."""
    from fbt.tasks.base import Task

    if not (isinstance(task, type) and issubclass(task, Task)):
        raise FbtError(f"a task is a subclass of fbt.tasks.Task, got {task!r}")
    if name in TASKS and task_class(name) is not task:
        raise FbtError(f"task {name!r} is already registered, as {task_class(name).__name__}")
    task.name = name
    TASKS[name] = task
    return task


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def task_class(name: str) -> type[Task]:
    """The task registered as `name`: its class answers what needs no tokenizer; an instance answers the rest."""
    if name not in TASKS:
        raise FbtError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    task = TASKS[name]
    if isinstance(task, str):
        module, attribute = task.split(":")
        task = getattr(importlib.import_module(module), attribute)
        task.name = name
        TASKS[name] = task
    return task


def task_class_or_base(name: str) -> type[Task]:
    """The task registered as `name`, else the base Task (a plain token stream judged by its loss): what reads
    configs and runs of a task not registered in this process answers with."""
    from fbt.tasks.base import Task

    return task_class(name) if name in TASKS else Task


def task_of_data(path: str | Path) -> str | None:
    """The task a --data path alone implies (a code-exec dataset directory), or None."""
    return next((name for name in TASKS if task_class(name).recognises_data(path)), None)


def __getattr__(name: str):
    if name in ("EvalSettings", "SamplingSettings", "Task"):
        from fbt.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module 'fbt.tasks' has no attribute {name!r}")


__all__ = [
    "EvalSettings",
    "SamplingSettings",
    "Task",
    "register_task",
    "task_class",
    "task_class_or_base",
    "task_names",
    "task_of_data",
]
