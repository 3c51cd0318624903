"""Evaluation: every process scores its own share of the data once, then the metrics are combined.

No sample is padded in or counted twice (a distributed sampler repeats samples to even out the shards), and no
process receives the others' full outputs: each batch goes to one process (round robin), its metric object
updates locally, and ``Metrics.sync`` combines counts or records at the end. The model is run unwrapped (no DDP
hooks), so processes with different numbers of batches never wait for one another. The loss is the mean over
samples, whatever the batch size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .progress import Progress


class ShardedBatches(Sampler[list[int]]):
    """Batches ``rank, rank + world, rank + 2 * world, ...`` of another batch sampler (no padding)."""

    def __init__(self, batch_sampler: Any, rank: int, world: int) -> None:
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self.batch_sampler):
            if i % self.world == self.rank:
                yield batch

    def __len__(self) -> int:
        n = len(self.batch_sampler)
        return n // self.world + (1 if self.rank < n % self.world else 0)


def shard_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """The same loader, keeping only this process's batches."""
    if world <= 1:
        return loader
    return DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatches(loader.batch_sampler, rank, world),
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def broadcast_buffers(model: nn.Module) -> None:
    """Gives every process the main process's buffers (BatchNorm running statistics).

    DDP copies buffers from the main process at the start of each training forward, so after the last step every
    process holds statistics updated by its own last batch: evaluating with them would score each shard with a
    slightly different model than the one that is saved.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    from accelerate.utils import send_to_device

    return send_to_device(batch, device, non_blocking=True)


@torch.no_grad()
def evaluate(
    task: Any,
    model: nn.Module,
    loader: DataLoader,
    accelerator: Any,
    *,
    mixed_precision: str = "no",
    desc: str = "eval",
    quiet: bool = True,
    split: str = "val",
) -> tuple[dict[str, float], Any]:
    """One no-grad pass; returns (bare metric names -> values, the synced Metrics object).

    ``task.eval_step(model, batch)`` returns ``(per-sample losses or None, outputs)``; ``outputs`` go to the task's
    metrics. ``"loss"`` is reported only when the task computes one.
    """
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    if world > 1:
        broadcast_buffers(model)
    sharded = shard_loader(loader, rank, world)
    autocast = accelerator.autocast if mixed_precision != "no" else contextlib.nullcontext
    was_training = model.training
    model.eval()
    metrics = task.new_metrics(split)
    loss_sum = torch.zeros((), dtype=torch.float64)
    loss_count = torch.zeros((), dtype=torch.float64)
    progress = Progress(len(sharded), desc, enabled=not quiet and accelerator.is_main_process)
    try:
        for batch in sharded:
            batch = to_device(batch, device)
            with autocast():
                losses, outputs = task.eval_step(model, batch)
            metrics.update(outputs)
            if losses is not None:
                losses = losses.detach().float().reshape(-1)
                loss_sum += losses.sum().double().cpu()
                loss_count += losses.numel()
            progress.update()
    finally:
        progress.close()
        model.train(was_training)
    from ..metrics.base import all_reduce_sum

    totals = all_reduce_sum(torch.stack([loss_sum, loss_count]), accelerator)
    metrics.sync(accelerator)
    out: dict[str, float] = {}
    if float(totals[1]) > 0:
        out["loss"] = float(totals[0] / totals[1])
    out.update(metrics.compute())
    return out, metrics
