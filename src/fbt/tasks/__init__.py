"""The tasks by name. Each is one module behind the `Task` interface (base.py); `register_task` adds one from
outside the package, after which --task, configs, saved runs and every command know it."""

from __future__ import annotations

from pathlib import Path

from fbt.errors import FbtError
from fbt.tasks.base import EvalSettings, SamplingSettings, Task
from fbt.tasks.code_exec import CodeExecTask
from fbt.tasks.lm import SubwordLmTask
from fbt.tasks.text import TextTask
from fbt.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {}


def register_task(name: str, task: type[Task]) -> type[Task]:
    """Make `task` (a subclass of Task) known as `name`, which becomes its `name`."""
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise FbtError(f"a task is a subclass of fbt.tasks.Task, got {task!r}")
    if TASKS.get(name, task) is not task:
        raise FbtError(f"task {name!r} is already registered, as {TASKS[name].__name__}")
    task.name = name
    TASKS[name] = task
    return task


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def task_class(name: str) -> type[Task]:
    """The task registered as `name`: its class answers what needs no tokenizer; an instance answers the rest."""
    if name not in TASKS:
        raise FbtError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_class_or_base(name: str) -> type[Task]:
    """The task registered as `name`, else the base Task (a plain token stream judged by its loss): what reads
    configs and runs of a task not registered in this process answers with."""
    return TASKS.get(name, Task)


def task_of_data(path: str | Path) -> str | None:
    """The task a --data path alone implies (a code-exec dataset directory), or None."""
    return next((name for name, task in TASKS.items() if task.recognises_data(path)), None)


register_task("text", TextTask)
register_task("code-exec", CodeExecTask)
register_task("lm", SubwordLmTask)
register_task("translation", TranslationTask)

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
