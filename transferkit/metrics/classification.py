"""Accuracy and macro-F1 from a running confusion matrix (O(classes^2) memory, whatever the data size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import Metrics, all_reduce_sum


class ClassificationMetrics(Metrics):
    """Streaming accuracy and macro-F1; the confusion matrix is summed across processes.

    Example:
        >>> m = ClassificationMetrics(num_classes=2)
        >>> m.update((torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])))
        >>> round(m.compute()["accuracy"], 3)
        0.667
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # rows: target, columns: prediction

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        """`outputs` = (predicted class ids, target class ids), any shape, same length."""
        preds, targets = (t.detach().reshape(-1).to("cpu", torch.long) for t in outputs)
        idx = targets * self.num_classes + preds
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def sync(self, accelerator: Any) -> None:
        self.confusion = all_reduce_sum(self.confusion, accelerator)

    def compute(self) -> dict[str, float]:
        cm = self.confusion.double()
        total = cm.sum()
        tp = cm.diag()
        support = cm.sum(1)  # true count per class
        predicted = cm.sum(0)
        denom = support + predicted
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
        present = denom > 0  # as sklearn: classes seen in targets or predictions
        return {
            "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
            "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        }

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 and support of each class (for reports)."""
        cm = self.confusion.double()
        tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
        rows = []
        for i, name in enumerate(self.class_names):
            p = float(tp[i] / predicted[i]) if predicted[i] > 0 else 0.0
            r = float(tp[i] / support[i]) if support[i] > 0 else 0.0
            f = 2 * p * r / (p + r) if p + r > 0 else 0.0
            rows.append({"class": name, "precision": p, "recall": r, "f1": f, "support": int(support[i])})
        return rows
