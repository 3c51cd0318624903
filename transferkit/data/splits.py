"""Seeded, stratified train/validation splits (shared by every classification-style task)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


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
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be a fraction in (0, 1).")
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
