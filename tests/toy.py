"""A minimal task on in-memory tensors, for engine tests that need no images or text."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from transferkit.config import FinetuneConfig
from transferkit.metrics.classification import ClassificationMetrics
from transferkit.models import TransferModel
from transferkit.tasks.base import Metrics, Splits, Task


class MLPBackbone(nn.Module):
    """A 3-group backbone: stem, block, top (with a BatchNorm to check eval-mode freezing)."""

    def __init__(self, d_in: int = 8, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.num_features = width

    def forward(self, x):
        return self.top(self.block(self.stem(x)))

    def layer_groups(self):
        return [[f"{c}.{n}" for n, _ in m.named_parameters()] for c, m in self.named_children()]


def make_data(n: int = 96, d_in: int = 8, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d_in, generator=g) * 3
    y = torch.arange(n) % classes
    x = centers[y] + torch.randn(n, d_in, generator=g)
    return x, y


@dataclass
class ToyOptions:
    metric_sequence: tuple[float, ...] | None = None  # if set, val "accuracy" follows this sequence per epoch


class ScriptedMetrics(Metrics):
    def __init__(self, value: float) -> None:
        self.value = value

    def update(self, outputs) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.value}


class ToyTask(Task):
    name = "toy"
    Options = ToyOptions
    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(self, config: FinetuneConfig, options: ToyOptions | None = None) -> None:
        super().__init__(config, options)
        self.evals = 0

    def read_data(self, data):
        self.labels = ["a", "b", "c"]
        return data

    def build_datasets(self, raw) -> Splits:
        (xt, yt), (xv, yv) = raw
        return Splits(TensorDataset(xt, yt), TensorDataset(xv, yv), TensorDataset(xv, yv), self.labels)

    def prepare_data(self, data) -> Splits:  # the two data phases in one call, for engine tests
        return self.build_datasets(self.read_data(data))

    def build_model(self, raw=None) -> nn.Module:
        torch.manual_seed(self.config.seed)
        return TransferModel(MLPBackbone(), nn.Linear(16, 3))

    def train_step(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_step(self, model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, y, reduction="none"), (logits.argmax(1), y)

    def new_metrics(self, split: str = "val") -> Metrics:
        seq = self.options.metric_sequence
        if seq is None:
            return ClassificationMetrics(3)
        # evaluation number k (val once per epoch, then test) reports seq[k]
        value = seq[min(self.evals, len(seq) - 1)]
        self.evals += 1
        return ScriptedMetrics(value)
