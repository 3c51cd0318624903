"""The Task contract: everything domain-specific that the engine must not know about."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import FinetuneConfig


@dataclass
class Splits:
    """Datasets of one run. `labels` are the class names (index = class id); empty for label-free tasks."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    labels: list[str] = field(default_factory=list)


class Metrics:
    """Streaming metric accumulator: `update` once per (gathered) batch, `compute` once per epoch."""

    def update(self, outputs: Any) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class Task:
    """Base class of tasks. Subclasses register themselves with ``@TASKS.register("name")``.

    The engine calls, in order: ``prepare_data`` -> ``build_model`` -> ``make_loader`` per split -> per batch
    ``step`` (training and evaluation) -> ``new_metrics().update(...)`` on the gathered metric inputs ->
    ``compute()``. ``state()`` goes into ``transferkit.json`` and ``from_state`` rebuilds the task for
    ``tk.load``. ``predict`` turns raw user inputs into result dicts.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type | None] = None  # dataclass of task-specific options (e.g. image_size, max_length)
    defaults: ClassVar[dict[str, Any]] = {}  # FinetuneConfig defaults that suit this task
    monitor: ClassVar[str] = "val/loss"  # main metric: picks the best epoch, default early-stopping monitor
    monitor_mode: ClassVar[str] = "min"
    default_head: ClassVar[str] = "linear"

    def __init__(self, config: FinetuneConfig, options: Any = None) -> None:
        self.config = config
        self.options = options if options is not None else (self.Options() if self.Options else None)
        self.labels: list[str] = []

    # --- data -------------------------------------------------------------------------------------------
    def prepare_data(self, data: Any) -> Splits:
        raise NotImplementedError

    def eval_dataset(self, data: Any) -> Dataset:
        """One labelled dataset from `data` for ``tk.evaluate``, using the label names the model was trained on."""
        raise NotImplementedError(f"{type(self).__name__} does not support tk.evaluate yet.")

    def collate_fn(self, split: str) -> Callable | None:
        return None

    def make_loader(self, dataset: Dataset, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """A DataLoader for one split; tasks override to add samplers (e.g. length grouping)."""
        return self.dataloader(dataset, split, self.collate_fn(split), batch_size=batch_size, shuffle=shuffle)

    def dataloader(
        self,
        dataset: Dataset,
        split: str,
        collate_fn: Callable | None,
        *,
        batch_size: int | None = None,
        shuffle: bool = False,
        batch_sampler: Any = None,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        """The DataLoader settings every task shares (workers, pinning, a seeded generator the engine reseeds each
        epoch). Pass `batch_size`/`shuffle`, or a `batch_sampler` that does its own batching."""
        workers = self.config.num_workers
        batching: dict[str, Any] = {"batch_sampler": batch_sampler}
        if batch_sampler is None:
            # A last training batch of one sample breaks BatchNorm and gives a noisy step: drop the remainder
            # (a different one each epoch, as the data is shuffled) unless the split is smaller than a batch.
            batching = {
                "batch_size": batch_size,
                "shuffle": shuffle,
                "drop_last": split == "train" and len(dataset) > batch_size,
            }
        return DataLoader(
            dataset,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=generator or torch.Generator().manual_seed(self.config.seed),
            **batching,
        )

    # --- model ------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        """Forward one batch. Returns ``(loss, metric_inputs)``; metric_inputs is a tensor pytree the engine
        gathers across processes and hands to ``Metrics.update``."""
        raise NotImplementedError

    def new_metrics(self) -> Metrics:
        raise NotImplementedError

    # --- artifacts and inference -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-serialisable facts needed to rebuild the task and model for inference."""
        return {"labels": list(self.labels)}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> Task:
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int) -> list[dict]:
        raise NotImplementedError

    def save_extra(self, model: nn.Module, output_dir: str) -> None:
        """Writes files besides model.safetensors that inference needs (e.g. a tokenizer)."""
