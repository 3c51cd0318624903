"""SegmentationMetrics: values from hand-built confusion matrices, absent classes, ignored pixels, streaming,
sync across processes, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.errors import DataError
from transferkit.metrics.segmentation import SegmentationMetrics

# Rows: target class, columns: predicted class.
CM3 = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
# Per class: tp = (5, 3, 4), target pixels = (6, 6, 4), predicted pixels = (7, 4, 5).
IOU3 = [5 / (6 + 7 - 5), 3 / (6 + 4 - 3), 4 / (4 + 5 - 4)]  # 0.625, 0.4286, 0.8
DICE3 = [2 * 5 / (6 + 7), 2 * 3 / (6 + 4), 2 * 4 / (4 + 5)]


def pixels_from(cm: list[list[int]], shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds, targets) holding exactly cm[t][p] pixels of target t predicted as p, shuffled."""
    t = [i for i, row in enumerate(cm) for j, n in enumerate(row) for _ in range(n)]
    p = [j for i, row in enumerate(cm) for j, n in enumerate(row) for _ in range(n)]
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(0))
    preds, targets = torch.tensor(p)[perm], torch.tensor(t)[perm]
    return (preds.reshape(shape), targets.reshape(shape)) if shape else (preds, targets)


class FakeAccelerator:
    """Two processes holding the same counts: reduce("sum") returns twice the tensor."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        assert reduction == "sum"
        self.calls += 1
        return tensor + tensor.clone()


def test_hand_built_confusion_matrix():
    m = SegmentationMetrics(3, class_names=["bg", "road", "car"])
    m.update(pixels_from(CM3, (2, 2, 4)))  # (B, H, W)
    assert m.confusion_matrix.tolist() == CM3
    out = m.compute()
    assert out["miou"] == pytest.approx(sum(IOU3) / 3)  # 0.6179
    assert out["miou"] == pytest.approx(0.6178571428571429)
    assert [out["iou_bg"], out["iou_road"], out["iou_car"]] == pytest.approx(IOU3)
    assert out["dice"] == pytest.approx(sum(DICE3) / 3)
    assert out["pixel_accuracy"] == pytest.approx(12 / 16)
    assert list(out) == ["miou", "iou_bg", "iou_road", "iou_car", "dice", "pixel_accuracy"]


def test_absent_class_is_left_out_of_the_mean_and_the_dict():
    cm4 = [row + [0] for row in CM3] + [[0, 0, 0, 0]]  # class 3 in neither predictions nor targets
    m = SegmentationMetrics(4)
    m.update(pixels_from(cm4))
    out = m.compute()
    assert "iou_3" not in out and all(np.isfinite(v) for v in out.values())
    assert out["miou"] == pytest.approx(sum(IOU3) / 3)  # not / 4
    assert out["dice"] == pytest.approx(sum(DICE3) / 3)


def test_class_only_predicted_counts_as_present_with_iou_zero():
    m = SegmentationMetrics(3)
    m.update(pixels_from([[3, 1, 1], [0, 2, 0], [0, 0, 0]]))  # class 2: never a target, predicted once
    out = m.compute()
    assert out["iou_2"] == 0.0
    assert out["miou"] == pytest.approx((3 / 5 + 2 / 3 + 0.0) / 3)


def test_ignore_index_pixels_are_skipped():
    preds, targets = pixels_from(CM3)
    noisy_preds = torch.cat([preds, torch.tensor([0, 1, 2, 2])])
    noisy_targets = torch.cat([targets, torch.full((4,), 255)])
    m = SegmentationMetrics(3, ignore_index=255)
    m.update((noisy_preds, noisy_targets))
    assert m.confusion_matrix.tolist() == CM3
    assert m.compute()["pixel_accuracy"] == pytest.approx(12 / 16)
    negative = SegmentationMetrics(3, ignore_index=-1)
    negative.update((noisy_preds, torch.cat([targets, torch.full((4,), -1)])))
    assert negative.confusion_matrix.tolist() == CM3


def test_streaming_over_batches_equals_one_update():
    preds, targets = pixels_from(CM3)
    whole, parts = SegmentationMetrics(3), SegmentationMetrics(3)
    whole.update((preds, targets))
    for chunk in range(0, 16, 5):
        parts.update((preds[chunk : chunk + 5].to(torch.uint8), targets[chunk : chunk + 5].to(torch.int32)))
    assert torch.equal(whole.confusion_matrix, parts.confusion_matrix)
    assert whole.compute() == parts.compute()


def test_matches_a_per_class_count_on_random_masks():
    gen = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 5, (3, 17, 19), generator=gen)
    targets[0, :4] = 255
    preds = torch.where(
        torch.rand(targets.shape, generator=gen) < 0.6,
        targets.clamp(max=4),
        torch.randint(0, 5, targets.shape, generator=gen),
    )
    m = SegmentationMetrics(5)
    m.update((preds, targets))
    valid = targets != 255
    p, t = preds[valid], targets[valid]
    ious = [float(((p == c) & (t == c)).sum() / ((p == c) | (t == c)).sum()) for c in range(5)]
    out = m.compute()
    assert [out[f"iou_{c}"] for c in range(5)] == pytest.approx(ious)
    assert out["pixel_accuracy"] == pytest.approx(float((p == t).float().mean()))


def test_sync_sums_processes_and_leaves_ratios_unchanged():
    m = SegmentationMetrics(3)
    m.update(pixels_from(CM3))
    before = m.compute()
    acc = FakeAccelerator()
    m.sync(acc)
    assert m.confusion_matrix.tolist() == [[2 * n for n in row] for row in CM3]
    assert m.compute() == pytest.approx(before)
    m.sync(acc)  # a second sync must not double again
    assert acc.calls == 1 and m.confusion_matrix.sum() == 32
    with pytest.raises(RuntimeError, match="after sync"):
        m.update(pixels_from(CM3))
    alone = SegmentationMetrics(3)
    alone.update(pixels_from(CM3))
    alone.sync(None)  # a single process: unchanged
    assert alone.confusion_matrix.tolist() == CM3


def test_empty_metrics_are_zero():
    assert SegmentationMetrics(2).compute() == {"miou": 0.0, "dice": 0.0, "pixel_accuracy": 0.0}
    m = SegmentationMetrics(2)
    m.update((torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255)))  # only ignored pixels
    assert m.compute()["miou"] == 0.0


def test_bad_inputs_raise():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="differ in shape"):
        m.update((torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="argmax"):
        m.update((torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4, dtype=torch.long)))
    with pytest.raises(DataError, match=r"\[3, 7\]"):
        m.update((torch.zeros(3, dtype=torch.long), torch.tensor([3, 7, 255])))
    with pytest.raises(ValueError, match=r"Predicted class ids \[5\]"):
        m.update((torch.tensor([0, 5]), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(3, class_names=["a", "b"])


def test_slash_in_a_class_name_does_not_make_a_nested_key():
    m = SegmentationMetrics(2, class_names=["bg", "car/truck"])
    m.update((torch.tensor([0, 1]), torch.tensor([0, 1])))
    assert m.compute()["iou_car_truck"] == 1.0


def test_agrees_with_smp_when_all_classes_are_present_and_differs_when_one_is_absent():
    smp_metrics = pytest.importorskip("segmentation_models_pytorch.metrics")
    preds, targets = pixels_from(CM3, (1, 16))

    def smp_miou(k: int, zero_division: float) -> float:
        stats = smp_metrics.get_stats(preds, targets, mode="multiclass", num_classes=k)
        return float(smp_metrics.iou_score(*stats, reduction="macro", zero_division=zero_division))

    ours = SegmentationMetrics(3)
    ours.update((preds, targets))
    assert ours.compute()["miou"] == pytest.approx(smp_miou(3, 1.0))
    with_absent = SegmentationMetrics(4)
    with_absent.update((preds, targets))
    assert with_absent.compute()["miou"] == pytest.approx(sum(IOU3) / 3)
    assert smp_miou(4, 1.0) == pytest.approx((sum(IOU3) + 1) / 4)  # the absent class scored 1
    assert smp_miou(4, 0.0) == pytest.approx(sum(IOU3) / 4)  # or 0
