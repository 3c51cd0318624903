"""One generic registry, used for tasks, backbone sources and heads."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes, factories) plus free-form metadata.

    Example:
        >>> heads = Registry("head")
        >>> @heads.register("linear", domain="image")
        ... def linear(backbone, num_classes): ...
        >>> heads.get("linear") is linear
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: T | None = None, **meta: Any) -> Callable[[T], T] | T:
        """Registers `obj` under `name`; usable as a decorator. A duplicate name raises `ValueError`."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered; pick another name.")
            self._items[name] = item
            self._meta[name] = dict(meta)
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """Returns the object registered as `name`, or raises `UnknownNameError` listing close names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, list(self._items))) from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def list(self, pattern: str | None = None, **filters: Any) -> list[str]:
        """Sorted names matching a glob `pattern` and whose metadata equals (or contains) each filter."""
        out = []
        for name, meta in self._meta.items():
            if pattern and not fnmatch.fnmatch(name, pattern):
                continue
            if all(_meta_matches(meta.get(k), v) for k, v in filters.items()):
                out.append(name)
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} items)"


def _meta_matches(have: Any, want: Any) -> bool:
    if isinstance(have, (list, tuple, set, frozenset)):
        return want in have
    return have == want


def unknown_name_message(kind: str, name: str, valid: list[str], hint: str = "") -> str:
    """The standard 'unknown X' message with the closest valid names."""
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    if not close:  # substring matches help for long names like 'resnet' -> 'resnet18', 'resnet50'
        close = [v for v in valid if name.lower() in v.lower()][:5]
    msg = f"Unknown {kind} {name!r}."
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    elif valid and len(valid) <= 20:
        msg += f" Valid names: {', '.join(sorted(valid))}."
    if hint:
        msg += f" {hint}"
    return msg


TASKS: Registry[Any] = Registry("task")
BACKBONE_SOURCES: Registry[Any] = Registry("backbone source")
HEADS: Registry[Any] = Registry("head")
