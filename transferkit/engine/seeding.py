"""Per-item random seeds for training loaders with worker processes, so that a resumed run is bit-identical.

With ``num_workers=0`` the random augmentation draws from the main process's generators, which a checkpoint saves
and restores. Worker processes have generators of their own, seeded once when the (persistent) workers start and
never saved: a run resumed from a checkpoint would augment differently, and the DataLoader's draw of the workers'
base seed would also shift the shuffle. Here each training item instead carries a seed that depends only on (run
seed, epoch, position in the epoch); the worker seeds torch, ``random`` and numpy with it before the item is loaded.
The augmentation of an item then no longer depends on which worker loads it, on how many items a worker loaded
before, or on where a resumed epoch starts.

Example:
    >>> from torch.utils.data import BatchSampler, SequentialSampler
    >>> batches = SeededBatches(BatchSampler(SequentialSampler(range(4)), 2, False), seed=0)
    >>> [[i for i, _ in b] for b in batches]
    [[0, 1], [2, 3]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

_MASK = (1 << 63) - 1


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 63-bit seed of (seed, epoch, position) (splitmix64's finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class SeededBatches:
    """Wraps a batch sampler: yields batches of ``(index, item_seed)``.

    Args:
        batch_sampler: yields lists of dataset indices.
        seed: the run's seed.
        generator: the generator `batch_sampler` shuffles with; reseeded to ``seed + epoch`` when an epoch's
            iteration starts, after the DataLoader has drawn its workers' base seed from it, so the order is the
            one of an uninterrupted run whether or not the workers were just started (and the one of
            ``num_workers=0``).
    """

    def __init__(self, batch_sampler: Any, seed: int, generator: torch.Generator | None = None) -> None:
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        assert isinstance(self.batch_sampler, Sized)
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.generator is not None:
            self.generator.manual_seed(self.seed + self.epoch)
            # the one draw a new single-process iterator makes before the sampler shuffles (its base seed): the
            # order is then the one of num_workers=0, so a resume may change num_workers without skipping others
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        position = 0
        for batch in self.batch_sampler:
            out = []
            for index in batch:
                out.append((int(index), item_seed(self.seed, self.epoch, position)))
                position += 1
            yield out


class SeededItems(Dataset):
    """A dataset indexed by ``(index, seed)``: seeds torch, ``random`` and numpy, then returns ``dataset[index]``.

    Only used inside DataLoader worker processes, whose generators belong to the worker; plain int indices pass
    through unseeded. Other attributes (``lengths``, ``classes``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            return self.dataset[index]
        return self.dataset[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":  # pickling (spawned workers) looks these up before __init__
            raise AttributeError(name)
        return getattr(self.dataset, name)


def set_epoch(batch_sampler: Any, epoch: int) -> None:
    """Tells every `SeededBatches` inside a chain of wrapping batch samplers (sharding, skipping) the epoch."""
    seen = 0
    while batch_sampler is not None and seen < 8:
        if isinstance(batch_sampler, SeededBatches):
            batch_sampler.set_epoch(epoch)
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
        seen += 1
