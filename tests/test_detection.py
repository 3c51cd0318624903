"""Object detection end to end through the public API: tiny timm detectors on generated COCO data in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detection_toys import CATEGORIES, FAST, cocoeval, write_shapes
from safetensors.torch import save_file
from torchvision.ops.misc import FrozenBatchNorm2d

import transferkit as tk
from transferkit.data.imageio import load_image
from transferkit.engine.callbacks import Callback


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    write_shapes(root / "train", n=12, seed=0, first_id=1000)
    write_shapes(root / "val", n=6, seed=1, first_id=5000)
    return root


@pytest.fixture(scope="module")
def body_weights(tmp_path_factory):
    """A 'pretrained' classification file for the body (random values): the path a user's ImageNet file takes."""
    from transferkit.backbones import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("timm:test_resnet", pretrained=False)
    path = tmp_path_factory.mktemp("w") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(path))
    return path


class Snapshot(Callback):
    """Keeps the weights and optimizer groups as training starts."""

    def on_train_start(self, state, control):
        self.weights = {n: p.detach().clone() for n, p in state.model.named_parameters()}
        self.groups = [(g["name"], g["base_lr"], [id(p) for p in g["params"]]) for g in state.optimizer.param_groups]
        self.names = {id(p): n for n, p in state.model.named_parameters()}


@pytest.fixture(scope="module")
def trained(data, body_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    snap = Snapshot()
    result = tk.finetune(
        "object-detection",
        data={"train": str(data / "train"), "val": str(data / "val")},
        pretrained=str(body_weights),
        epochs=2,
        output_dir=str(out),
        callbacks=(snap,),
        box_score_thresh=0.001,  # 6 steps leave every score low: keep some detections to score and compare
        **FAST,
    )
    return result, out, snap


def test_finetune_writes_metrics_predictions_and_no_val_loss(trained, data):
    result, out, _ = trained
    assert [row["epoch"] for row in result.history] == [1, 2]
    row = result.history[0]
    assert {"train/loss", "train/loss_classifier", "train/loss_box_reg", "train/loss_objectness"} <= set(row)
    assert "val/map" in row and "val/loss" not in row  # torchvision detectors give no eval loss: none reported
    assert {
        "map",
        "map_50",
        "map_75",
        "map_small",
        "map_medium",
        "map_large",
        "mar_100",
        "ap_square",
        "ap_circle",
        "ap_bar",
    } <= set(result.metrics["val"])
    for name in ("transferkit.json", "model.safetensors", "history.csv", "predictions_val.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "transferkit.json").read_text())
    assert meta["task_state"]["categories"] == {"category_ids": [1, 3, 7], "class_names": ["square", "circle", "bar"]}
    det = meta["task_state"]["detector"]
    assert det["min_size"] == 48 and det["head"] == "fasterrcnn" and det["is_pretrained"] is True


def test_written_predictions_rescore_to_the_reported_metrics(trained, data):
    """result.metrics is what COCOeval gives on the written predictions_val.json (original ids, original pixels)."""
    result, out, _ = trained
    preds = json.loads((out / "predictions_val.json").read_text())
    assert preds, "the detector should detect something at score >= 0.001"
    assert {p["category_id"] for p in preds} <= {1, 3, 7}
    assert {p["image_id"] for p in preds} <= set(range(5000, 5006))
    stats = cocoeval(data / "val" / "annotations.json", preds)
    m = result.metrics["val"]
    for name, i in {"map": 0, "map_50": 1, "map_75": 2, "mar_100": 8}.items():
        assert m[name] == pytest.approx(stats[i], abs=1e-9), name


def test_pretrained_body_has_frozen_batchnorm_and_file_weights(trained, body_weights):
    from safetensors.torch import load_file

    result, out, snap = trained
    body = result.model.detector.backbone.body
    assert not [n for n, m in body.named_modules() if type(m) is torch.nn.BatchNorm2d]
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) >= 5
    file = load_file(str(body_weights))
    # the frozen statistics and affine values are the file's: BatchNorm neither trained nor updated its statistics
    keys = [k for k in file if k.endswith("running_mean") and not k.startswith("fc.")]
    for key in keys:
        module = body.model.get_submodule(key.rsplit(".", 1)[0])
        assert isinstance(module, FrozenBatchNorm2d)
        assert torch.equal(module.running_mean, file[key]) and torch.equal(module.weight, file[key[:-12] + "weight"])
    # tk.load converts the same layers before loading the weights
    loaded = tk.load(out).model
    assert not [n for n, m in loaded.detector.backbone.body.named_modules() if type(m) is torch.nn.BatchNorm2d]


def test_fpn_rpn_and_heads_are_new_parameters_at_head_lr(trained):
    result, _, snap = trained
    model = result.model
    grouped = {n for g in model.layer_groups() for n in g}
    assert grouped and all(n.startswith("detector.backbone.body.") for n in grouped)
    fpn = [n for n, _ in model.named_parameters() if ".fpn." in n]
    assert fpn and not set(fpn) & grouped
    by_id = {pid: name for name, _, ids in snap.groups for pid in ids}
    names = snap.names
    assert {by_id[i] for i, n in names.items() if ".fpn." in n or ".rpn." in n or ".roi_heads." in n} == {"head"}
    assert {by_id[i] for i, n in names.items() if n in grouped} <= {f"backbone.{k}" for k in range(10)}


def test_freeze_backbone_trains_the_fpn_but_not_the_body(data, body_weights, tmp_path):
    snap = Snapshot()
    lr, mult = 1e-3, 5.0
    result = tk.finetune(
        "object-detection",
        data={"train": str(data / "train"), "val": str(data / "val")},
        pretrained=str(body_weights),
        epochs=1,
        max_steps=2,
        freeze="backbone",
        output_dir=str(tmp_path / "r"),
        callbacks=(snap,),
        **{**FAST, "lr": lr, "head_lr_mult": mult},
    )
    after = dict(result.model.named_parameters())
    body = [n for n in snap.weights if n.startswith("detector.backbone.body.")]
    fpn = [n for n in snap.weights if n.startswith("detector.backbone.fpn.")]
    assert body and fpn
    assert all(torch.equal(after[n], snap.weights[n]) for n in body)
    assert all(not after[n].requires_grad for n in body)
    assert any(not torch.equal(after[n], snap.weights[n]) for n in fpn)
    groups = {name: base for name, base, _ in snap.groups}
    assert set(groups) == {"head"} and groups["head"] == pytest.approx(lr * mult)


def test_load_predict_matches_the_trained_model_and_maps_category_ids(trained, data):
    result, out, _ = trained
    predictor = tk.load(out)
    assert predictor.labels == ["square", "circle", "bar"]
    images = sorted(str(p) for p in (data / "val" / "images").glob("*.png"))
    x = [load_image(p).float().div(255) for p in images]
    with torch.no_grad():
        before = result.model.eval()(x)
        after = predictor.model(x)
    for a, b in zip(before, after):
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(a[k], b[k])
    predictor.task.score_threshold = 0.0
    preds = predictor.predict(images)
    assert len(preds) == len(images) and any(p["boxes"] for p in preds)
    for p, raw in zip(preds, before):
        assert set(p) == {"boxes", "labels", "scores"}
        assert p["scores"] == sorted(p["scores"], reverse=True)
        assert p["labels"] == [["square", "circle", "bar"][int(i) - 1] for i in raw["labels"]]
        assert np.allclose(p["boxes"], raw["boxes"].numpy(), atol=0.006)
    predictor.task.score_threshold = 0.5
    kept = predictor.predict(images)
    assert all(s >= 0.5 for p in kept for s in p["scores"])
    assert sum(len(p["scores"]) for p in kept) < sum(len(p["scores"]) for p in preds)


def test_a_finished_run_is_no_pretrained_file_for_a_new_run(trained, data, tmp_path):
    _, out, _ = trained
    with pytest.raises(tk.errors.WeightsError, match="whole transferkit detector.*resume=True"):
        tk.finetune(
            "object-detection",
            data=str(data / "train"),
            pretrained=str(out / "model.safetensors"),
            output_dir=str(tmp_path / "again"),
            **FAST,
        )


def test_evaluate_reproduces_the_val_metrics(trained, data):
    result, out, _ = trained
    metrics = tk.evaluate(out, data=str(data / "val"))
    assert "loss" not in metrics
    assert metrics["map"] == pytest.approx(result.metrics["val"]["map"], abs=1e-12)
    assert metrics["ap_bar"] == pytest.approx(result.metrics["val"]["ap_bar"], abs=1e-12)


def test_evaluate_refuses_a_category_the_model_never_saw(trained, tmp_path):
    _, out, _ = trained
    coco = write_shapes(tmp_path / "other", n=3, categories=[*CATEGORIES[:2], {"id": 9, "name": "star"}])
    assert any(a["category_id"] == 9 for a in coco["annotations"])
    with pytest.raises(tk.errors.DataError, match="category 9 .'star'.*not trained on"):
        tk.evaluate(out, data=str(tmp_path / "other"))


def test_draw_detections_marks_the_boxes(trained, data):
    from transferkit.data.coco import draw_detections

    image = str(data / "val" / "images" / "img_00.png")
    pred = {"boxes": [[4.0, 5.0, 30.0, 25.0]], "labels": ["circle"], "scores": [0.87]}
    drawn = draw_detections(image, pred)
    plain = draw_detections(image, {"boxes": [], "labels": [], "scores": []})
    assert drawn.shape == plain.shape == (44, 56, 3) and drawn.dtype == np.uint8
    changed = np.argwhere((drawn != plain).any(-1))
    assert changed[:, 0].min() == 5 and changed[:, 1].min() == 4  # the box's top-left corner
    with pytest.raises(tk.errors.DataError, match="1 boxes, 2 labels"):
        draw_detections(image, {"boxes": [[0, 0, 1, 1]], "labels": ["a", "b"], "scores": [1.0]})


@pytest.mark.parametrize("head", ["retinanet", "fcos"])
def test_each_head_fits_through_finetune(head, data, tmp_path):
    snap = Snapshot()
    result = tk.finetune(
        "object-detection",
        data={"train": str(data / "train"), "val": str(data / "val")},
        pretrained=False,
        head=head,
        epochs=1,
        max_steps=2,
        output_dir=str(tmp_path / head),
        callbacks=(snap,),
        **{**FAST, "head_kwargs": {"fpn_channels": 64}},  # FCOS's GroupNorm(32) needs 2+ channels per group
    )
    losses = {
        "retinanet": {"classification", "bbox_regression"},
        "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    }[head]
    assert {f"train/{k}" for k in losses} <= set(result.history[0])
    assert np.isfinite(result.history[0]["train/loss"]) and result.history[0]["train/loss"] > 0.1
    after = dict(result.model.named_parameters())
    for part in ("head.classification_head.cls_logits.weight", "backbone.fpn.layer_blocks.0.0.weight"):
        assert not torch.equal(after[f"detector.{part}"], snap.weights[f"detector.{part}"]), part
    assert {"map", "map_50", "ap_square"} <= set(result.metrics["val"])
    preds = json.loads((tmp_path / head / "predictions_val.json").read_text())
    assert all(p["category_id"] in (1, 3, 7) for p in preds)  # never the background (label 0)
    assert tk.load(tmp_path / head).task.detector_config["head"] == head


def test_image_size_and_anchors_follow_the_data_or_the_options(data, tmp_path):
    from transferkit.tasks import get_task

    task_cls = get_task("object-detection")
    cfg = tk.config.FinetuneConfig(backbone="timm:test_resnet", pretrained=False, head_kwargs={"fpn_channels": 8})
    task = task_cls(cfg)
    raw = task.read_data(str(data / "train"))
    model = task.build_model(raw)
    det = task.detector_config
    # the short side: the median of the training images' (val carved out); the long side: that x the
    # 95th-percentile aspect ratio
    images = raw.train.coco["images"]
    short = round(float(np.median([min(i["width"], i["height"]) for i in images])))
    assert model.detector.transform.min_size == (short,) and det["min_size"] == short
    aspects = [max(i["width"], i["height"]) / min(i["width"], i["height"]) for i in images]
    assert det["max_size"] == int(np.ceil(short * np.percentile(aspects, 95))) == model.detector.transform.max_size
    sizes = [s[0] for s in det["anchor_sizes"]]
    assert sizes == sorted(sizes) and len(sizes) == 5
    assert sizes[0] <= 16 <= sizes[-1]  # the objects (10-22 px at this size) lie inside the ladder
    anchors = [[8], [16], [32], [64], [96]]
    task2 = task_cls(cfg, task_cls.Options(image_size=[40, 64], max_size=90, anchor_sizes=anchors))
    model2 = task2.build_model(task2.read_data(str(data / "train")))
    assert model2.detector.transform.min_size == (40, 64) and model2.detector.transform.max_size == 90
    assert [list(s) for s in model2.detector.rpn.anchor_generator.sizes] == anchors
    with pytest.raises(tk.errors.ConfigError, match="image_size"):
        task_cls.Options(image_size=0)
    with pytest.raises(tk.errors.ConfigError, match="max_size=40 is smaller than image_size=64"):
        task4 = task_cls(cfg, task_cls.Options(image_size=64, max_size=40))
        task4.build_model(task4.read_data(str(data / "train")))
    with pytest.raises(tk.errors.ConfigError, match="one list of positive sizes per feature map"):
        task3 = task_cls(cfg, task_cls.Options(anchor_sizes=[[8], [16]]))
        task3.build_model(task3.read_data(str(data / "train")))


def test_resume_continues_a_detection_run(data, body_weights, tmp_path):
    common = dict(
        data={"train": str(data / "train"), "val": str(data / "val")},
        pretrained=str(body_weights),
        output_dir=str(tmp_path / "r"),
        **FAST,
    )
    first = tk.finetune("object-detection", epochs=1, **common)
    second = tk.finetune("object-detection", epochs=2, resume=True, **common)
    assert [r["epoch"] for r in second.history] == [1, 2]
    assert second.history[0]["train/loss"] == pytest.approx(first.history[0]["train/loss"])
    assert "map" in second.metrics["val"]
