"""Split names and seeded validation carves, shared by every domain.

One table of split names (``train``/``training``, ``val``/``valid``/``validation``/``dev``, ``test``/``testing``),
one normaliser for dicts of splits and for split folders or files, and two carves: stratified by class for
classification, random by item for dense tasks (segmentation, detection), where an image holds several classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: Any) -> str | None:
    """``"validation"`` -> ``"val"``; None for a name that is no split.

    Example:
        >>> canonical_split("Valid"), canonical_split("cats")
        ('val', None)
    """
    return SPLIT_ALIASES.get(str(name).strip().lower())


def is_split_dict(data: Any) -> bool:
    """True for ``{"train": ..., "val": ...}``-style dicts (every key a split name)."""
    return isinstance(data, Mapping) and bool(data) and all(canonical_split(k) for k in data)


def normalise_splits(data: Mapping[Any, Any], what: str = "data") -> dict[str, Any]:
    """Maps a dict of splits to the canonical names, dropping None values.

    Raises:
        DataError: an unknown split name, one split given twice, or no train split.

    Example:
        >>> normalise_splits({"train": "a.csv", "validation": "b.csv"})
        {'train': 'a.csv', 'val': 'b.csv'}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:  # e.g. {"train": ..., "test": None}
            continue
        name = canonical_split(key)
        if name is None:
            raise DataError(
                f"Unknown split {key!r} in {what}; use the keys 'train', 'val' (or 'valid', 'validation', 'dev') and "
                "'test' (or 'testing')."
            )
        if name in out:
            raise DataError(f"{what} names the {name!r} split twice (key {key!r}); keep one.")
        out[name] = value
    if "train" not in out:
        raise DataError(f"{what} has splits {sorted(out)} but no 'train' split to learn from; add one.")
    return out


def split_folders(root: str | os.PathLike, inside: str = "their data") -> dict[str, Path] | None:
    """``{split: folder}`` when `root` holds a train folder (``train/``, optionally ``val/``, ``test/`` and the
    other names of the table), else None.

    Raises:
        DataError: a train folder next to folders that are no splits, or two folders for one split.

    Example:
        >>> split_folders("data/pets")  # doctest: +SKIP
        {'train': PosixPath('data/pets/train'), 'test': PosixPath('data/pets/test')}
    """
    root = Path(root)
    try:
        subdirs = sorted(
            (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name
        )
    except OSError as e:
        raise DataError(f"Cannot read folder {str(root)!r}: {e.strerror or e}.") from None
    if not any(canonical_split(d.name) == "train" for d in subdirs):
        return None
    others = sorted(d.name for d in subdirs if canonical_split(d.name) is None)
    if others:
        raise DataError(
            f"Folder {str(root)!r} holds a train/ split folder but also {others[:5]}. Either use split folders only "
            f"(train/, val/, test/, each with {inside}) or no split folders at all."
        )
    out: dict[str, Path] = {}
    for d in subdirs:
        name = canonical_split(d.name)
        if name in out:
            raise DataError(f"Folder {str(root)!r} has two {name} folders ({out[name].name}/, {d.name}/); keep one.")
        out[name] = d
    return out


def stratified_split(targets: Sequence[Hashable], val_fraction: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """Splits item indices into train and validation, taking `val_fraction` of every class.

    Each class gives ``round(n * val_fraction)`` of its n items (halves round up), but at least 1 when it has 2 or
    more items and never all of them; a class with a single item stays in training. The result depends only on
    `targets`, `val_fraction` and `seed`, so the same data always yields the same validation set.

    Args:
        targets: the class of each item (ints or strings).
        val_fraction: share of each class that goes to validation, in (0, 1).
        seed: seed of the shuffle within each class.

    Returns:
        ``(train_indices, val_indices)``, each sorted ascending.

    Example:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], val_fraction=0.25, seed=0)
        >>> len(train), len(val)
        (6, 2)
    """
    _check_fraction(val_fraction)
    by_class: dict[Hashable, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    # Sorted class order (by repr, so mixed types cannot fail) keeps the draw independent of item order.
    for key in sorted(by_class, key=repr):
        idx = np.asarray(by_class[key])
        n = len(idx)
        k = 0 if n < 2 else min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)  # round half up
        perm = rng.permutation(n)
        val.extend(idx[perm[:k]].tolist())
        train.extend(idx[perm[k:]].tolist())
    return sorted(train), sorted(val)


def random_split(n: int, val_fraction: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """Splits ``range(n)`` into train and validation at random (by item, not by class): the carve of dense tasks.

    ``round(n * val_fraction)`` items (at least 1 when n >= 2, never all) go to validation.

    Example:
        >>> train, val = random_split(10, 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    _check_fraction(val_fraction)
    k = 0 if n < 2 else min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())


def _check_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction!r} is invalid; pass a fraction in (0, 1), e.g. 0.1.")
