"""Tasks register themselves here; their modules are imported on first use."""

from __future__ import annotations

import importlib

from ..errors import ConfigError, UnknownNameError
from ..registry import TASKS, unknown_name_message

_TASK_MODULES = {
    "image-classification": "transferkit.tasks.image_classification",
    "text-classification": "transferkit.tasks.text_classification",
    "masked-lm": "transferkit.tasks.masked_lm",
    "semantic-segmentation": "transferkit.tasks.semantic_segmentation",
    "object-detection": "transferkit.tasks.object_detection",
}


def get_task(name: str):
    """Returns the Task class registered as `name` (importing its module lazily)."""
    if not isinstance(name, str):
        raise ConfigError(f"task={name!r} must be a task name such as 'image-classification'; see tk.list_tasks().")
    if name not in TASKS and name in _TASK_MODULES:
        importlib.import_module(_TASK_MODULES[name])
    if name not in TASKS:
        raise UnknownNameError(unknown_name_message("task", name, list_tasks(), hint="See tk.list_tasks()."))
    return TASKS.get(name)


def list_tasks() -> list[str]:
    """Names of all tasks, e.g. ``['image-classification', 'masked-lm', 'text-classification']``.

    Example:
        >>> import transferkit as tk
        >>> "image-classification" in tk.list_tasks()
        True
    """
    return sorted(set(TASKS) | set(_TASK_MODULES))
