"""The Metrics contract: ``update`` on each process's own batches, ``sync`` once across processes, ``compute``.

Each process evaluates its own share of the data (no duplicated samples, no gathering of full-size outputs onto
every process); ``sync`` then combines the small running state, an all-reduce of counts or a confusion matrix, or
a gather of per-image records as Python objects (detection). A metric never keeps whole predictions of an epoch
unless it needs them (COCO evaluation does, as compact records).
"""

from __future__ import annotations

from typing import Any

import torch


class Metrics:
    """Streaming metric accumulator.

    Subclasses implement `update` and `compute`, and `sync` when they hold state that other processes must see.

    Example:
        >>> class Count(Metrics):
        ...     def __init__(self):
        ...         self.n = torch.zeros((), dtype=torch.long)
        ...     def update(self, outputs):
        ...         self.n += len(outputs)
        ...     def sync(self, accelerator):
        ...         self.n = all_reduce_sum(self.n, accelerator)
        ...     def compute(self):
        ...         return {"count": float(self.n)}
    """

    def update(self, outputs: Any) -> None:
        """Adds one batch of this process's outputs."""
        raise NotImplementedError

    def sync(self, accelerator: Any) -> None:
        """Combines the state of all processes (called once, on every process, before `compute`)."""

    def compute(self) -> dict[str, float]:
        """Bare metric names -> values (e.g. ``{"accuracy": 0.93}``)."""
        raise NotImplementedError

    def artifacts(self) -> dict[str, Any]:
        """Files worth writing next to the model after the final evaluation: ``{file name: JSON-able}``."""
        return {}


def all_reduce_sum(tensor: torch.Tensor, accelerator: Any) -> torch.Tensor:
    """The sum of `tensor` over all processes (the tensor itself in a single process), on the CPU."""
    if accelerator is None or accelerator.num_processes <= 1:
        return tensor
    return accelerator.reduce(tensor.to(accelerator.device), "sum").cpu()


def gather_objects(items: list[Any], accelerator: Any) -> list[Any]:
    """All processes' lists of picklable objects, concatenated in process order (the list itself when alone)."""
    if accelerator is None or accelerator.num_processes <= 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(list(items)))
