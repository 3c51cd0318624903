"""Task heads. A head is an nn.Module built from ``(backbone, num_classes, **kwargs)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import HEADS

_CLASSIFICATION_TASKS = ("image-classification", "text-classification")


def register_head(name: str, factory: Callable[..., nn.Module] | None = None, **meta: Any):
    """Registers a head factory ``(backbone, num_classes, **kw) -> nn.Module`` under `name`.

    Example:
        >>> import transferkit as tk
        >>> from torch import nn
        >>> @tk.register_head("two-layer")
        ... def two_layer(backbone, num_classes, hidden=128):
        ...     width = backbone.num_features
        ...     return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    """
    meta.setdefault("tasks", _CLASSIFICATION_TASKS)  # a head on pooled features; dense heads name their task
    return HEADS.register(name, factory, **meta)


class LinearHead(nn.Module):
    """Dropout (optional) + one linear layer on pooled features."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(x))


class MLPHead(nn.Module):
    """Linear -> GELU -> dropout -> linear: a small non-linear head on pooled features."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):
        return self.net(x)


@register_head("linear", domain=("image", "text"), tasks=_CLASSIFICATION_TASKS)
def linear_head(backbone: nn.Module, num_classes: int, dropout: float = 0.0) -> nn.Module:
    return LinearHead(backbone.num_features, num_classes, dropout=dropout)


@register_head("mlp", domain=("image", "text"), tasks=_CLASSIFICATION_TASKS)
def mlp_head(backbone: nn.Module, num_classes: int, hidden: int = 512, dropout: float = 0.1) -> nn.Module:
    return MLPHead(backbone.num_features, num_classes, hidden=hidden, dropout=dropout)


# Heads of the dense tasks are registered by modules imported on first use (they list the installed smp /
# torchvision architectures): task -> module.
_HEAD_MODULES = {
    "semantic-segmentation": "transferkit.heads.segmentation",
    "object-detection": "transferkit.heads.detection",
}


def list_heads(task: str | None = None) -> list[str]:
    """Names of the heads registered for `task` (all tasks when None), from the installed libraries.

    Example:
        >>> list_heads(task="image-classification")
        ['linear', 'mlp']
    """
    import importlib

    from ..registry import unknown_name_message

    tasks = [task] if task is not None else [*_CLASSIFICATION_TASKS, *_HEAD_MODULES]
    known = [*_CLASSIFICATION_TASKS, *_HEAD_MODULES, "masked-lm"]
    if task is not None and task not in known:
        from ..errors import UnknownNameError

        raise UnknownNameError(unknown_name_message("task", task, known))
    names: set[str] = set()
    for t in tasks:
        if t in _HEAD_MODULES:
            importlib.import_module(_HEAD_MODULES[t])
        names.update(HEADS.list(tasks=t))
    return sorted(names)


def build_head(head: Any, backbone: nn.Module, num_classes: int, default: str = "linear", **kwargs: Any) -> nn.Module:
    """Builds a head from a registered name, an nn.Module (used as is), an nn.Module class, or a factory.

    Classes and factories are called as ``head(backbone, num_classes, **kwargs)``; a class whose first
    parameter is named ``in_features`` gets ``backbone.num_features`` instead of the backbone.
    """
    if head is None:
        head = default
    if isinstance(head, nn.Module):
        if kwargs:
            raise ConfigError("head_kwargs cannot be used with a ready-made nn.Module head.")
        return head
    if isinstance(head, str):
        head = HEADS.get(head)
    if not callable(head):
        raise ConfigError(f"head={head!r} must be a registered name, an nn.Module, a class, or a factory.")
    first = _first_param_name(head)
    _check_head_kwargs(head, kwargs)
    try:
        module = head(
            backbone.num_features if first in ("in_features", "in_channels", "num_features") else backbone,
            num_classes,
            **kwargs,
        )
    except (TypeError, ValueError, RuntimeError) as e:
        if not kwargs:
            raise
        # a wrong type or value in head_kwargs (e.g. hidden: abc) surfaces deep in torch: say where it came from
        raise ConfigError(f"The head {_name(head)} could not be built with head_kwargs={kwargs}: {e}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"head factory {head!r} returned {type(module).__name__}, not an nn.Module.")
    return module


def _name(head: Callable) -> str:
    return repr(getattr(head, "__name__", type(head).__name__))


def _check_head_kwargs(head: Callable, kwargs: dict[str, Any]) -> None:
    """Unknown head_kwargs keys are a typo: one line naming the ones the head takes."""
    try:
        target = head.__init__ if inspect.isclass(head) else head
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in list(params.items())[2 + inspect.isclass(head) :] if p.kind is not p.VAR_POSITIONAL]
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        import difflib

        hints = {k: difflib.get_close_matches(k, takes, n=1) for k in unknown}
        hint = "; ".join(f"did you mean {v[0]!r} for {k!r}?" for k, v in hints.items() if v)
        raise ConfigError(
            f"The head {_name(head)} does not take head_kwargs {unknown}; it takes {takes or 'none'}."
            + (f" ({hint})" if hint else "")
        )


def _first_param_name(fn: Callable) -> str | None:
    try:
        target = fn.__init__ if inspect.isclass(fn) else fn
        params = [p for p in inspect.signature(target).parameters if p != "self"]
    except (TypeError, ValueError):
        return None
    return params[0] if params else None
