"""COCO detection metrics: agreement with COCOeval on the written files, empty input, per-class AP, sync, backends."""

import contextlib
import copy
import importlib.util
import io
import json
import sys

import accelerate.utils
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from transferkit.data.coco import DetectionDataset, resolve_detection_data
from transferkit.errors import ConfigError, DataError
from transferkit.metrics.detection import DetectionMetrics, resolve_coco_backend

# faster-coco-eval is an optional backend (in the dev extra); without it, its half of these tests is skipped.
HAS_FCE = importlib.util.find_spec("faster_coco_eval") is not None
needs_fce = pytest.mark.skipif(not HAS_FCE, reason="faster-coco-eval is not installed")
BACKENDS = ["pycocotools", pytest.param("faster_coco_eval", marks=needs_fce)]

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 3, "name": "circle"}, {"id": 7, "name": "bar"}]
LABEL_TO_CAT = {1: 1, 2: 3, 3: 7}
NAMES = ["square", "circle", "bar"]
CAT_TO_LABEL = {c: label for label, c in LABEL_TO_CAT.items()}


def make_gt(n=16, seed=0):
    """COCO ground truth on 320x240 images with ids 1000, 1003, ...: small, medium and large boxes of categories 1
    and 3 (none of 7), one crowd box, and two images without boxes."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        iid = 1000 + 3 * i
        images.append({"id": iid, "file_name": f"{i}.png", "width": 320, "height": 240})
        for _ in range(0 if i < 2 else int(rng.integers(1, 5))):
            side = float(rng.choice([12, 48, 130]) * rng.uniform(0.8, 1.2))
            w, h = round(side, 1), round(side * rng.uniform(0.6, 1.4), 1)
            x, y = round(float(rng.uniform(0, 320 - w)), 1), round(float(rng.uniform(0, 240 - h)), 1)
            cat = int(rng.choice([1, 3]))
            anns.append(
                {"id": 10 * len(anns) + 5, "image_id": iid, "category_id": cat, "bbox": [x, y, w, h], "area": w * h}
            )
            anns[-1]["iscrowd"] = 0
    anns[3]["iscrowd"] = 1
    return {"images": images, "annotations": anns, "categories": copy.deepcopy(CATEGORIES)}


def records_from_gt(gt, *, shift=0.0, seed=None, false_positives=0):
    """One record per image: the non-crowd GT boxes as detections (xyxy, labels), optionally shifted by `shift` x
    box size, with random scores and extra false positives when `seed` is given."""
    rng = np.random.default_rng(seed)
    out = []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and not a.get("iscrowd")]
        boxes = [[x + shift * w, y, x + w + shift * w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [CAT_TO_LABEL[a["category_id"]] for a in anns]
        for _ in range(false_positives):
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            boxes.append([x, y, x + 40, y + 30])
            labels.append(int(rng.integers(1, 4)))
        scores = rng.uniform(0.05, 1, len(boxes)) if seed is not None else np.ones(len(boxes))
        out.append(
            {
                "image_id": torch.tensor(img["id"]),
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
    return out


def metrics(gt, records=(), **kw):
    m = DetectionMetrics(gt, LABEL_TO_CAT, NAMES, **kw)
    for i in range(0, len(records), 3):  # batches of 3 images
        m.update(records[i : i + 3])
    m.sync(None)
    return m


def cocoeval_on_files(gt_path, pred_path):
    """COCOeval straight from the two JSON files: stats and per-class AP by category id."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        e = COCOeval(gt, gt.loadRes(str(pred_path)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    per_class = {}
    for k, cat in enumerate(e.params.catIds):
        p = e.eval["precision"][:, :, k, 0, 2]
        per_class[cat] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return e.stats, per_class


def test_ground_truth_as_predictions_scores_one():
    gt = make_gt()
    out = metrics(gt, records_from_gt(gt)).compute()
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert out[key] == pytest.approx(1.0), key
    assert out["ap_square"] == pytest.approx(1.0) and out["ap_circle"] == pytest.approx(1.0)
    assert out["ap_bar"] == -1.0  # no ground truth of that class: COCO's "nothing to score"


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_equal_cocoeval_on_the_written_files(tmp_path, backend):
    gt = make_gt()
    m = metrics(gt, records_from_gt(gt, shift=0.2, seed=1, false_positives=2), backend=backend)
    out = m.compute()
    files = m.artifacts()
    assert list(files) == ["predictions_val.json"]
    results = files["predictions_val.json"]
    assert {r["category_id"] for r in results} == {1, 3, 7}  # labels mapped back to the COCO ids
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] > 0 for r in results)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    stats, per_class = cocoeval_on_files(tmp_path / "gt.json", tmp_path / "pred.json")
    assert 0.1 < out["map"] < 0.9  # the shift and false positives cost something
    expected = {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}
    assert {k: out[k] for k in expected} == {k: float(stats[i]) for k, i in expected.items()}
    assert {k: v for k, v in out.items() if k.startswith("ap_")} == {
        f"ap_{name}": per_class[cat] for name, cat in zip(NAMES, (1, 3, 7))
    }


def test_boxes_are_converted_to_xywh_with_original_ids():
    gt = make_gt(n=3)
    rec = {
        "image_id": 1003,
        "boxes": np.array([[10.0, 20.0, 50.0, 80.0]]),
        "scores": np.array([0.8]),
        "labels": np.array([3]),
    }
    m = metrics(gt, [rec])
    assert m.artifacts()["predictions_val.json"] == [
        {"image_id": 1003, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.8}
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_score_zero(backend):
    gt = make_gt()
    no_boxes = records_from_gt({**gt, "annotations": []})  # a record per image, each with zero detections
    assert all(len(r["boxes"]) == 0 for r in no_boxes)
    for m in (metrics(gt, backend=backend), metrics(gt, no_boxes, backend=backend)):
        out = m.compute()
        assert m.artifacts() == {"predictions_val.json": []}
        assert out["map"] == out["map_50"] == out["mar_100"] == 0.0
        assert out["ap_square"] == out["ap_circle"] == 0.0 and out["ap_bar"] == -1.0


def test_per_class_ap():
    gt = make_gt()
    only_squares = [
        {
            **r,
            "boxes": r["boxes"][r["labels"] == 1],
            "scores": r["scores"][r["labels"] == 1],
            "labels": r["labels"][r["labels"] == 1],
        }
        for r in records_from_gt(gt)
    ]
    out = metrics(gt, only_squares).compute()
    assert sorted(k for k in out if k.startswith("ap_")) == ["ap_bar", "ap_circle", "ap_square"]
    assert (out["ap_square"], out["ap_circle"], out["ap_bar"]) == (pytest.approx(1.0), 0.0, -1.0)
    assert out["map"] == pytest.approx(0.5)  # the mean over the classes with ground truth


def test_sync_over_two_processes_equals_one_process(monkeypatch):
    gt = make_gt()
    records = records_from_gt(gt, shift=0.1, seed=2, false_positives=1)
    single = metrics(gt, records)

    class FakeAccelerator:
        num_processes = 2

    # Process 0 gets the even images, process 1 the odd ones plus a repeat of image 0 (a sampler's padding; made
    # different here, to see that the first record of an image wins and that none is counted twice).
    repeat = {**records[0], "boxes": records[0]["boxes"] + 5}
    shards = [records[0::2], records[1::2] + [repeat]]
    procs = [metrics(gt, shard) for shard in shards]
    payloads = [list(p._records.items()) for p in procs]
    calls = []

    def gather_object(obj):  # what accelerate returns on every process: all processes' lists, in process order
        calls.append(obj)
        return payloads[0] + payloads[1]

    monkeypatch.setattr(accelerate.utils, "gather_object", gather_object)
    for p in procs:
        p.sync(FakeAccelerator())
        assert p.compute() == single.compute()
        assert p.artifacts() == single.artifacts()
    assert len(calls) == 2  # gather_objects was really used, once per process


@needs_fce
def test_backends_agree(capsys):
    gt = make_gt(n=30, seed=5)
    records = records_from_gt(gt, shift=0.15, seed=3, false_positives=3)
    a = metrics(gt, records, backend="pycocotools").compute()
    b = metrics(gt, records, backend="faster_coco_eval").compute()
    assert capsys.readouterr().out == ""  # COCOeval's printing is silenced
    assert a == b
    assert 0 < a["map"] < 1


@needs_fce
def test_resolve_backend(monkeypatch):
    assert resolve_coco_backend("auto") == "faster_coco_eval"
    assert resolve_coco_backend("faster-coco-eval") == "faster_coco_eval"
    with pytest.raises(ConfigError, match="Unknown COCO evaluation backend 'torchmetrics'"):
        resolve_coco_backend("torchmetrics")
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    assert resolve_coco_backend("auto") == "pycocotools"
    with pytest.raises(ConfigError, match="pip install faster-coco-eval"):
        resolve_coco_backend("faster_coco_eval")


def test_ground_truth_fields_are_filled_and_json_keys_accepted():
    gt = make_gt()
    raw = copy.deepcopy(gt)
    for a in raw["annotations"]:
        a.pop("area"), a.pop("id")
        if not a["iscrowd"]:
            del a["iscrowd"]
    records = records_from_gt(gt, shift=0.1, seed=4)
    keys = json.loads(json.dumps(LABEL_TO_CAT))  # {"1": 1, ...} after transferkit.json
    for backend in [b for b in ("pycocotools", "faster_coco_eval") if b != "faster_coco_eval" or HAS_FCE]:
        m = DetectionMetrics(raw, keys, NAMES, backend=backend)
        m.update(records)
        assert m.compute() == metrics(gt, records, backend=backend).compute()
    assert raw["annotations"][0].keys() == {"image_id", "category_id", "bbox"}  # the caller's dict is not changed


def test_bad_records():
    gt = make_gt(n=3)
    m = DetectionMetrics(gt, LABEL_TO_CAT, NAMES, split="test")
    rec = {"image_id": 1003, "boxes": [[0, 0, 5, 5]], "scores": [0.5], "labels": [1]}
    with pytest.raises(DataError, match=r"image id\(s\) \[42\] that are not in the test ground truth"):
        m.update([{**rec, "image_id": 42}])
    with pytest.raises(DataError, match=r"labels \[0\]; expected 1\.\.3"):
        m.update([{**rec, "labels": [0]}])
    with pytest.raises(DataError, match=r"must be \(N, 4\)"):
        m.update([{**rec, "boxes": [[0, 0, 5]]}])
    m.update([rec])
    m.update([{**rec, "scores": [0.9]}])  # the same image again (sampler padding): the first record stays
    assert [r["score"] for r in m.artifacts()["predictions_test.json"]] == [0.5]
    with pytest.raises(ConfigError, match="3 class names for 2 labels"):
        DetectionMetrics(gt, {1: 1, 2: 3}, NAMES)
    with pytest.raises(ConfigError, match="labels 1..K"):
        DetectionMetrics(gt, {0: 1, 1: 3, 2: 7}, NAMES)


def test_end_to_end_from_resolved_data(tmp_path):
    """Boxes and labels served by the data layer, fed back as detections, score 1 against the split's COCO dict."""
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(4):
        img = Image.new("RGB", (80, 60))
        draw = ImageDraw.Draw(img)
        images.append({"id": 50 + 7 * i, "file_name": f"{i}.png", "width": 80, "height": 60})
        for j in range(i % 3 + 1):
            x, y = 4 + 24 * j, 6 + 4 * i
            draw.rectangle([x, y, x + 15, y + 11], fill=(255, 255, 255))
            anns.append(
                {"id": len(anns) + 1, "image_id": 50 + 7 * i, "category_id": (7, 1, 3)[j], "bbox": [x, y, 16, 12]}
            )
        img.save(tmp_path / "images" / f"{i}.png")
    anns[1]["iscrowd"] = 1
    (tmp_path / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES})
    )
    data = resolve_detection_data({"train": tmp_path, "val": tmp_path})
    m = DetectionMetrics(data.val.coco, data.label_to_category, data.class_names)
    ds = DetectionDataset(data.val)
    for i in range(len(ds)):
        _, t = ds[i]
        keep = ~t["iscrowd"]
        m.update(
            [
                {
                    "image_id": t["image_id"],
                    "boxes": t["boxes"][keep],
                    "scores": torch.ones(int(keep.sum())),
                    "labels": t["labels"][keep],
                }
            ]
        )
    m.sync(None)
    out = m.compute()
    assert out["map"] == pytest.approx(1.0) and out["ap_bar"] == pytest.approx(1.0)
    assert {r["category_id"] for r in m.artifacts()["predictions_val.json"]} == {1, 3, 7}
