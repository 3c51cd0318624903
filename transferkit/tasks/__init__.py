"""Tasks register themselves here; their modules are imported on first use."""

from __future__ import annotations

import importlib

from ..registry import TASKS

_TASK_MODULES = {
    "image-classification": "transferkit.tasks.image_classification",
    "text-classification": "transferkit.tasks.text_classification",
    "masked-lm": "transferkit.tasks.masked_lm",
}


def get_task(name: str):
    """Returns the Task class registered as `name` (importing its module lazily)."""
    if name not in TASKS and name in _TASK_MODULES:
        importlib.import_module(_TASK_MODULES[name])
    return TASKS.get(name)


def list_tasks() -> list[str]:
    """Names of all tasks, e.g. ``['image-classification', 'masked-lm', 'text-classification']``.

    Example:
        >>> import transferkit as tk
        >>> "image-classification" in tk.list_tasks()
        True
    """
    return sorted(set(TASKS) | set(_TASK_MODULES))
