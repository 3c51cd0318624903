"""Object detection: evaluation through the task's metric path, and bad input reaching tk.finetune."""

from __future__ import annotations

import json

import pytest
import torch
from detection_toys import FAST, cocoeval, write_shapes
from torch import nn

import transferkit as tk
from transferkit.engine.callbacks import Callback


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    write_shapes(root / "train", n=12, seed=0, first_id=1000)
    write_shapes(root / "val", n=6, seed=1, first_id=5000)
    return root


# --- evaluation correctness through the task's own metric path ----------------------------------------------------
class Oracle(nn.Module):
    """A 'detector' that returns each image's ground truth (found by the image's pixels), optionally shifted."""

    def __init__(self, dataset, shift: float = 0.0) -> None:
        super().__init__()
        self.truth = {}
        for image, target in dataset:
            self.truth[image.numpy().tobytes()] = target
        self.shift = shift

    def forward(self, images, targets=None):
        out = []
        for image in images:
            t = self.truth[image.numpy().tobytes()]
            boxes = t["boxes"].as_subclass(torch.Tensor).clone() + self.shift
            scores = torch.linspace(1.0, 0.5, len(boxes))
            out.append({"boxes": boxes, "labels": t["labels"].clone(), "scores": scores})
        return out


def _task_and_val(data):
    from transferkit.tasks import get_task

    cfg = tk.config.FinetuneConfig(backbone="timm:test_resnet", pretrained=False, eval_batch_size=4)
    task = get_task("object-detection")(cfg)
    raw = task.read_data({"train": str(data / "train"), "val": str(data / "val")})
    splits = task.build_datasets(raw)
    return task, splits.val, task.make_loader(splits.val, "val", 4, shuffle=False)


def test_ground_truth_fed_back_scores_one_through_the_task(data):
    from transferkit.engine.evaluation import evaluate
    from transferkit.engine.loop import make_accelerator

    task, val, loader = _task_and_val(data)
    metrics, obj = evaluate(task, Oracle(val), loader, make_accelerator(task.config), split="val")
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_50"] == pytest.approx(1.0)
    assert [metrics[f"ap_{n}"] for n in ("square", "circle", "bar")] == pytest.approx([1.0] * 3)
    results = obj.artifacts()["predictions_val.json"]
    truth = json.loads((data / "val" / "annotations.json").read_text())["annotations"]
    assert sorted((r["image_id"], r["category_id"], r["bbox"]) for r in results) == sorted(
        (a["image_id"], a["category_id"], [float(v) for v in a["bbox"]]) for a in truth
    )


def test_shifted_boxes_score_what_cocoeval_gives_directly(data):
    from transferkit.engine.evaluation import evaluate
    from transferkit.engine.loop import make_accelerator

    task, val, loader = _task_and_val(data)
    metrics, _ = evaluate(task, Oracle(val, shift=2.0), loader, make_accelerator(task.config), split="val")
    truth = json.loads((data / "val" / "annotations.json").read_text())
    by_image: dict[int, list] = {}
    for a in truth["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    direct = []
    for anns in by_image.values():  # the same detections, built straight from the JSON
        for a, s in zip(anns, torch.linspace(1.0, 0.5, len(anns)).tolist()):
            x, y, w, h = a["bbox"]
            direct.append(
                {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + 2, y + 2, w, h], "score": s}
            )
    stats = cocoeval(data / "val" / "annotations.json", direct)
    assert 0.05 < metrics["map"] < 0.5  # IoU 0.57-0.62: counted at the lower thresholds only
    for name, i in {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "mar_100": 8}.items():
        assert metrics[name] == pytest.approx(stats[i], abs=1e-9), name


# --- bad input, each through tk.finetune -------------------------------------------------------------------------
@pytest.fixture
def coco_dir(tmp_path):
    coco = write_shapes(tmp_path / "d", n=6)
    return tmp_path / "d", coco


class _Started(Exception):
    pass


class StopAtStart(Callback):
    """Ends a run once data and model are built: for checks of what happens before training."""

    def on_train_start(self, state, control):
        raise _Started


def _finetune(path, **kw):
    return tk.finetune(
        "object-detection",
        data=str(path),
        epochs=1,
        output_dir=str(path.parent / "run"),
        pretrained=False,
        **{**FAST, **kw},
    )


def _rewrite(folder, coco):
    (folder / "annotations.json").write_text(json.dumps(coco))


def test_malformed_json_names_the_file_and_the_place(coco_dir):
    folder, _ = coco_dir
    (folder / "annotations.json").write_text('{"images": [], "annotations": [,]}')
    with pytest.raises(tk.errors.DataError, match=r"annotations\.json' is not valid JSON: .* line 1, column 32"):
        _finetune(folder)


def test_annotation_of_a_missing_image_id(coco_dir):
    folder, coco = coco_dir
    coco["annotations"][0]["image_id"] = 4242
    _rewrite(folder, coco)
    with pytest.raises(tk.errors.DataError, match=r"annotations\[0\] \(id 1\) points to image_id 4242, which is not"):
        _finetune(folder)


def test_missing_image_file(coco_dir):
    folder, _ = coco_dir
    (folder / "images" / "img_02.png").unlink()
    with pytest.raises(tk.errors.DataError, match=r"img_02\.png \(not found"):
        _finetune(folder)
    with pytest.warns(UserWarning, match="Skipped 1 image"), pytest.raises(_Started):  # or left out on request
        _finetune(folder, skip_bad_files=True, callbacks=(StopAtStart(),))


@pytest.mark.parametrize(
    ("bbox", "why"), [([3, 3, 0, 5], "non-positive width or height"), ([40, 30, 30, 30], "extends past the image")]
)
def test_bad_boxes_error_or_are_dropped(coco_dir, bbox, why):
    folder, coco = coco_dir
    coco["annotations"][0]["bbox"] = bbox
    _rewrite(folder, coco)
    with pytest.raises(tk.errors.DataError, match=f"(?s)1 bad box.*{why}"):
        _finetune(folder, bad_boxes="error")
    with pytest.warns(UserWarning, match=r"Dropped 1 bad box"), pytest.raises(_Started):
        _finetune(folder, callbacks=(StopAtStart(),))


def test_category_not_in_categories(coco_dir):
    folder, coco = coco_dir
    coco["annotations"][1]["category_id"] = 5
    _rewrite(folder, coco)
    with pytest.raises(tk.errors.DataError, match=r"category_id 5, which is not in 'categories' \(ids \[1, 3, 7\]\)"):
        _finetune(folder)


def test_empty_data_set(coco_dir):
    folder, coco = coco_dir
    _rewrite(folder, {**coco, "images": [], "annotations": []})
    with pytest.raises(tk.errors.DataError, match="lists no images"):
        _finetune(folder)


def test_training_split_without_annotations(coco_dir):
    folder, coco = coco_dir
    _rewrite(folder, {**coco, "annotations": []})
    with pytest.raises(tk.errors.DataError, match="has no boxes to learn from: 6 images, 0 annotations"):
        _finetune(folder)
