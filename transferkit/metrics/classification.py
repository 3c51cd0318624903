"""Accuracy and macro-F1 from a running confusion matrix (O(classes^2) memory, whatever the data size)."""

from __future__ import annotations

import torch

from ..tasks.base import Metrics


class ClassificationMetrics(Metrics):
    """Streaming accuracy and macro-F1.

    Example:
        >>> m = ClassificationMetrics(num_classes=2)
        >>> m.update((torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])))
        >>> round(m.compute()["accuracy"], 3)
        0.667
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        """`outputs` = (predicted class ids, target class ids), any shape, same length."""
        preds, targets = (t.detach().reshape(-1).to("cpu", torch.long) for t in outputs)
        idx = targets * self.num_classes + preds
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, -1)

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
