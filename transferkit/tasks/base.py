"""The Task contract: everything domain-specific that the engine must not know about.

A run goes through three phases, each a method with one job, so no step depends on another having patched state:

1. ``read_data(data) -> raw``: find the splits and the label vocabulary (no model yet; cheap checks up front);
2. ``build_model(raw) -> nn.Module``: the model through the one registered model factory; the task keeps what the
   model decides about the data (input size, mean/std, tokenizer);
3. ``build_datasets(raw) -> Splits``: datasets with the transforms/tokenisation the model needs.

Then the engine calls ``make_loader`` per split, ``train_step`` per training batch (a loss, or a dict of named
losses that are summed for backward and logged one by one), ``eval_step`` per evaluation batch (per-sample losses
or None, plus outputs for the metrics), and ``new_metrics(split)``. ``state()`` goes into ``transferkit.json`` and
``from_state`` rebuilds the task for ``tk.load``; ``predict`` turns raw inputs into result dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import FinetuneConfig
from ..metrics.base import Metrics

__all__ = ["Metrics", "Splits", "Task", "fingerprint", "probs_to_result"]


@dataclass
class Splits:
    """Datasets of one run. `labels` are the class names (index = class id); empty for label-free tasks."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    labels: list[str] = field(default_factory=list)


class Task:
    """Base class of tasks. Subclasses register themselves with ``@TASKS.register("name")``."""

    name: ClassVar[str] = ""
    Options: ClassVar[type | None] = None  # dataclass of task-specific options (e.g. image_size, max_length)
    defaults: ClassVar[dict[str, Any]] = {}  # FinetuneConfig defaults that suit this task
    monitor: ClassVar[str] = "val/loss"  # main metric: picks the best epoch, default early-stopping monitor
    monitor_mode: ClassVar[str] = "min"
    default_head: ClassVar[str] = "linear"
    batchnorm: ClassVar[str] = "eval-when-frozen"  # the task's BatchNorm policy for batchnorm="auto"
    # channels_last="auto" turns NHWC memory on for this task's conv nets: measured 1.1-2.3x faster CPU steps for
    # timm / torchvision classifiers and smp models (benchmarks/channels_last.py); detection keeps NCHW.
    channels_last_auto: ClassVar[bool] = False
    modality: ClassVar[str] = ""  # "image" or "text": which backbones fit
    # batch_size="auto" / epochs="auto" (engine/run_length.py): batch bounds, minimum optimizer steps and epochs;
    # None: not measured for this task, so "auto" is refused
    auto_batch_bounds: ClassVar[tuple[int, int] | None] = None
    min_steps: ClassVar[int] = 500
    min_epochs: ClassVar[int] = 10

    def __init__(self, config: FinetuneConfig, options: Any = None) -> None:
        self.config = config
        self.options = options if options is not None else (self.Options() if self.Options else None)
        self.labels: list[str] = []

    # --- phase 1: data ------------------------------------------------------------------------------------
    def read_data(self, data: Any) -> Any:
        """Finds the splits and the label vocabulary of `data` (sets ``self.labels``); returns the raw splits."""
        raise NotImplementedError

    def data_fingerprint(self, raw: Any) -> str:
        """A short hash of what the raw training data is (resume refuses to continue on other data)."""
        return fingerprint(repr(raw))

    def describe_data(self, raw: Any) -> dict[str, Any]:
        """Split sizes and facts for the start-up summary, e.g. ``{"splits": {"train": 180, "val": 20}, "classes":
        3, "note": "val carved from train"}``. This default reads ``raw.splits`` (name -> sized source) and
        ``raw.val_from_train`` where the task's raw data has them."""
        splits = getattr(raw, "splits", None)
        if splits is None:
            return {}
        note = "val carved from train" if getattr(raw, "val_from_train", False) else ""
        return {"splits": {name: len(src) for name, src in splits.items()}, "classes": len(self.labels), "note": note}

    # --- phase 2: model -----------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        """The model, from the one registered factory (``transferkit.models.create_model``)."""
        raise NotImplementedError

    # --- phase 3: datasets ----------------------------------------------------------------------------------
    def build_datasets(self, raw: Any) -> Splits:
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
        generator = generator or torch.Generator().manual_seed(self.config.seed)
        if workers > 0 and split == "train":
            # augmentation in worker processes: per-item seeds, so a resumed run is bit-identical (engine/seeding.py)
            from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

            from ..engine.seeding import SeededBatches, SeededItems

            if batch_sampler is None:
                sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
                batch_sampler = BatchSampler(sampler, batching["batch_size"], batching["drop_last"])
            batching = {"batch_sampler": SeededBatches(batch_sampler, self.config.seed, generator)}
            dataset = SeededItems(dataset)
        return DataLoader(
            dataset,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available() and self.config.device != "cpu",
            generator=generator,
            **batching,
        )

    # --- steps and metrics ----------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """Forward one training batch: the loss, or a dict of named losses (summed for backward)."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor | None, Any]:
        """Forward one evaluation batch: ``(per-sample losses (B,) or None, outputs for the metrics)``."""
        raise NotImplementedError

    def new_metrics(self, split: str = "val") -> Metrics:
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

    def report_examples(self, metrics: Any, split: str) -> dict[str, Any]:
        """Task-specific material for the run report (e.g. misclassified examples); JSON-able."""
        return {}


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def probs_to_result(probs: torch.Tensor, labels: list[str], label_type: str = "str") -> dict[str, Any]:
    """``{"label", "score", "probs"}`` for one row of class probabilities (shared by classification tasks); labels
    come back in the type the training labels had (ints stay ints)."""
    names: list[Any] = [int(n) for n in labels] if label_type == "int" else list(labels)
    idx = int(probs.argmax())
    return {"label": names[idx], "score": float(probs[idx]), "probs": dict(zip(names, probs.tolist()))}
