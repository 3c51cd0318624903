"""Segmentation metrics from one running K x K pixel confusion matrix: mIoU, per-class IoU, Dice, pixel accuracy.

The matrix is all the state there is (K^2 int64 counts, whatever the number of images), so `sync` is one
all-reduce and no prediction is ever kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import DataError
from .base import Metrics, all_reduce_sum


class SegmentationMetrics(Metrics):
    """Streaming semantic-segmentation metrics over the pixels of every image.

    ``compute()`` returns:
        - ``miou``: the mean IoU (TP / (TP + FP + FN)) over the classes **present** in the predictions or the
          targets; a class absent from both has no IoU (0/0) and is left out of the mean. smp's
          ``iou_score(..., reduction="macro", zero_division=z)`` scores such a class as z instead, so with one
          of three classes absent it reports e.g. 0.700 (z=1) or 0.450 (z=0) where this gives 0.600; with every
          class present the two agree.
        - ``iou_<class name>``: the IoU of each present class. Absent classes are **left out of the dict**
          (no NaN, no invented 0 or 1); ``"/"`` in a name becomes ``"_"`` (keys are ``split/name``).
        - ``dice``: the mean Dice (2 TP / (2 TP + FP + FN)) over the same present classes.
        - ``pixel_accuracy``: correct pixels / counted pixels.

    Pixels whose target is `ignore_index` are not counted. With no counted pixel at all every value is 0.0.
    The confusion matrix (rows: target class, columns: predicted class) is `confusion_matrix`.

    Args:
        num_classes: K, the number of classes (ids 0..K-1).
        ignore_index: target value of pixels left out (padding, 'void' regions).
        class_names: names for the per-class keys (default: the ids ``"0"``, ``"1"``, ...).

    Example:
        >>> m = SegmentationMetrics(num_classes=2)
        >>> m.update((torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 255]])))
        >>> m.compute()
        {'miou': 0.5, 'iou_0': 0.5, 'iou_1': 0.5, 'dice': 0.6666666666666666, 'pixel_accuracy': 0.6666666666666666}
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes={num_classes!r} must be at least 1.")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        names = [str(i) for i in range(self.num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != self.num_classes:
            raise ValueError(f"class_names has {len(names)} names for num_classes={self.num_classes}; give one each.")
        self.class_names = names
        # Kept on the device of the first batch: no device-to-host copy per batch, one at sync/compute time.
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self._synced = False

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Adds one batch: `outputs` = (predicted class ids, target class ids), int tensors of the same shape
        (e.g. ``(B, H, W)``; argmax the logits first)."""
        if self._synced:
            raise RuntimeError(
                "SegmentationMetrics.update after sync: the state already holds every process's counts."
            )
        preds, targets = outputs
        preds, targets = torch.as_tensor(preds).detach(), torch.as_tensor(targets).detach()
        if preds.shape != targets.shape:
            raise ValueError(
                f"Predictions {tuple(preds.shape)} and targets {tuple(targets.shape)} differ in shape; pass class ids "
                "(argmax over the class dimension) at the targets' size."
            )
        if preds.is_floating_point() or targets.is_floating_point():
            raise ValueError("SegmentationMetrics expects integer class ids, not scores; argmax the logits first.")
        if self.confusion.device != targets.device:
            self.confusion = self.confusion.to(targets.device)
        k = self.num_classes
        preds, targets = preds.reshape(-1).to(targets.device).long(), targets.reshape(-1).long()
        counted = targets != self.ignore_index
        target_ok = (targets >= 0) & (targets < k)
        if bool((counted & ~target_ok).any()):
            bad = torch.unique(targets[counted & ~target_ok])[:10].tolist()
            raise DataError(
                f"Target mask values {bad} are neither class ids 0..{k - 1} nor ignore_index={self.ignore_index}."
            )
        if bool((counted & ((preds < 0) | (preds >= k))).any()):
            bad = torch.unique(preds[counted & ((preds < 0) | (preds >= k))])[:10].tolist()
            raise ValueError(f"Predicted class ids {bad} are outside 0..{k - 1}.")
        # Ignored pixels go to one extra bin that is dropped: no boolean gather, so no data-dependent shapes.
        idx = torch.where(counted, targets * k + preds, torch.full_like(targets, k * k))
        counts = torch.bincount(idx, minlength=k * k + 1)[: k * k]
        self.confusion += counts.reshape(k, k).to(self.confusion.device)

    def sync(self, accelerator: Any) -> None:
        """Sums the confusion matrices of all processes (once, on every process, before `compute`)."""
        if self._synced:
            return
        self.confusion = all_reduce_sum(self.confusion.cpu(), accelerator)
        self._synced = True

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """The ``(K, K)`` int64 pixel counts on the CPU; entry ``[t, p]`` counts pixels of class t predicted as p."""
        return self.confusion.detach().cpu().clone()

    def compute(self) -> dict[str, float]:
        cm = self.confusion.detach().cpu().double()
        total = cm.sum()
        if total == 0:
            return {"miou": 0.0, "dice": 0.0, "pixel_accuracy": 0.0}
        tp = cm.diag()
        support, predicted = cm.sum(1), cm.sum(0)
        present = (support + predicted) > 0  # in the targets or the predictions
        iou = tp / (support + predicted - tp).clamp(min=1)
        dice = 2 * tp / (support + predicted).clamp(min=1)
        out: dict[str, float] = {"miou": float(iou[present].mean())}
        for i in torch.nonzero(present).flatten().tolist():
            out[f"iou_{self.class_names[i].replace('/', '_')}"] = float(iou[i])
        out["dice"] = float(dice[present].mean())
        out["pixel_accuracy"] = float(tp.sum() / total)
        return out
