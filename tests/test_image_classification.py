"""Image classification end to end through the public API, on generated images and tiny timm models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import transferkit as tk
from transferkit.errors import DataError

COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def make_folder(root, per_class=8, size=24, seed=0):
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(color) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs") / "data")


FAST = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, batch_size=8, quiet=True, lr=3e-3)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = tk.finetune(
        "image-classification", data=str(data_dir), epochs=2, output_dir=str(out), val_fraction=0.25, **FAST
    )
    return result, out


def test_finetune_writes_a_complete_output_folder(trained):
    result, out = trained
    assert set(result.metrics) == {"val"}
    # the reported val metrics are those of the restored best epoch
    best_row = result.history[result.best_epoch - 1]
    assert result.metrics["val"]["accuracy"] == pytest.approx(best_row["val/accuracy"])
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert {"train/loss", "val/loss", "val/accuracy", "val/f1_macro", "lr"} <= set(result.history[0])
    for name in ("transferkit.json", "model.safetensors", "history.csv", "checkpoints/best"):
        assert (out / name).exists(), name
    # 2 epochs x 2 steps: only the last checkpoint is kept
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-000000004"]
    meta = json.loads((out / "transferkit.json").read_text())
    assert meta["task"] == "image-classification" and meta["status"] == "finished"
    assert meta["task_state"]["labels"] == ["blue", "green", "red"]
    assert meta["task_state"]["data_config"]["input_size"] == [3, 32, 32]
    assert result.labels == ["blue", "green", "red"]


def test_save_load_predict_gives_identical_outputs(trained, data_dir):
    result, out = trained
    paths = sorted(str(p) for p in data_dir.rglob("*.png"))[:5]
    predictor = tk.load(out, device="cpu")
    first = predictor.predict(paths)
    second = tk.load(out, device="cpu").predict([Image.open(p) for p in paths])
    assert [r["label"] for r in first] == [r["label"] for r in second]
    for a, b in zip(first, second):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)
        assert set(a["probs"]) == {"blue", "green", "red"} and a["score"] == max(a["probs"].values())
    # the in-memory result model agrees with the reloaded one
    from transferkit.data.images import load_image

    tf = predictor.task.transform(train=False)
    x = torch.stack([tf(load_image(p)) for p in paths])
    result.model.eval()
    with torch.no_grad():
        probs = result.model(x).softmax(1)
    assert probs[0].tolist() == pytest.approx([first[0]["probs"][k] for k in ("blue", "green", "red")], abs=1e-5)


def test_evaluate_on_a_folder(trained, data_dir):
    _, out = trained
    metrics = tk.evaluate(out, data=str(data_dir))
    assert set(metrics) >= {"accuracy", "f1_macro", "loss"}
    with pytest.raises(DataError, match=r"^evaluation data path '.*typo' does not exist"):
        tk.evaluate(out, data=str(data_dir) + "-typo")


def test_evaluate_errors_name_the_evaluation_data_not_a_training_split(trained, data_dir, tmp_path):
    _, out = trained
    unknown = make_folder(tmp_path / "unknown", per_class=1)
    (unknown / "red").rename(unknown / "purple")
    with pytest.raises(DataError, match=r"'purple' in the evaluation data \(folder .*known classes.*trained on"):
        tk.evaluate(out, data=str(unknown))
    one_file = next(data_dir.rglob("*.png"))
    with pytest.raises(DataError, match=r"^evaluation data '.*\.png' is a file but not a CSV"):
        tk.evaluate(out, data=str(one_file))
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    with pytest.raises(DataError, match=r"holds 1 image but no class subfolders"):
        tk.evaluate(out, data=str(loose))


def test_learns_an_easy_task_with_test_split(data_dir, tmp_path):
    data = {"train": str(data_dir), "test": str(data_dir)}
    result = tk.finetune("image-classification", data=data, epochs=10, output_dir=str(tmp_path / "r"), **FAST)
    assert result.metrics["test"]["accuracy"] >= 0.9


def test_pretrained_path_round_trip_through_finetune(trained, data_dir, tmp_path):
    result, out = trained
    # a new run that starts from the first run's weights (head keys of the old run are dropped)
    r2 = tk.finetune(
        "image-classification",
        data=str(data_dir),
        epochs=1,
        output_dir=str(tmp_path / "r2"),
        **{**FAST, "pretrained": str(out / "model.safetensors")},
        freeze="backbone",
    )
    sd1, sd2 = result.model.backbone.state_dict(), r2.model.backbone.state_dict()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k  # frozen backbone == loaded weights, bit for bit


@pytest.mark.parametrize("head", ["mlp", "module", "class", "factory", "registered"])
def test_custom_heads(head, data_dir, tmp_path):
    if head == "module":
        spec = nn.Sequential(nn.Dropout(0.1), nn.Linear(96, 3))
    elif head == "class":

        class MyHead(nn.Module):
            def __init__(self, in_features, num_classes):
                super().__init__()
                self.fc = nn.Linear(in_features, num_classes)

            def forward(self, x):
                return self.fc(x)

        spec = MyHead
    elif head == "factory":

        def spec(backbone, num_classes):
            return nn.Linear(backbone.num_features, num_classes)
    elif head == "registered":
        name = f"test-head-{tmp_path.name}"
        tk.register_head(
            name,
            lambda backbone, num_classes, hidden=8: nn.Sequential(
                nn.Linear(backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            ),
        )
        spec = name
    else:
        spec = "mlp"
    kwargs = {"head_kwargs": {"hidden": 16}} if head == "mlp" else {}
    out = tmp_path / "run"
    r = tk.finetune(
        "image-classification",
        data=str(data_dir),
        head=spec,
        epochs=1,
        output_dir=str(out),
        max_steps=1,
        **FAST,
        **kwargs,
    )
    assert r.model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    if head in ("module", "class", "factory"):
        with pytest.raises(tk.ConfigError, match="custom head"):
            tk.load(out)
        spec_again = spec if head != "module" else nn.Sequential(nn.Dropout(0.1), nn.Linear(96, 3))
        assert len(tk.load(out, head=spec_again).predict([str(next(data_dir.rglob("*.png")))])) == 1
    else:
        assert len(tk.load(out).predict([str(next(data_dir.rglob("*.png")))])) == 1


def test_custom_backbone_module(data_dir, tmp_path):
    class Tiny(nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.pool(self.conv(x)).flatten(1)

    backbone = Tiny()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    r = tk.finetune(
        "image-classification",
        data=str(data_dir),
        backbone=backbone,
        pretrained=False,
        epochs=1,
        image_size=16,
        quiet=True,
        output_dir=str(tmp_path / "r"),
        freeze="backbone",
    )
    # the user's module is the backbone: frozen, so untouched; the head trained
    after = r.model.backbone.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert math.isfinite(r.history[0]["train/loss"])


def test_option_errors_name_the_option(data_dir, tmp_path):
    with pytest.raises(tk.ConfigError, match="epochz.*did you mean epochs"):
        tk.finetune("image-classification", data=str(data_dir), epochz=3, **FAST)
    with pytest.raises(tk.ConfigError, match="lr=-1"):
        tk.finetune("image-classification", data=str(data_dir), **{**FAST, "lr": -1})
    with pytest.raises(tk.UnknownNameError, match="image-classification"):
        tk.finetune("image-clasification", data=str(data_dir), **FAST)
    with pytest.raises(tk.ConfigError, match="needs a backbone"):
        tk.finetune("image-classification", data=str(data_dir))


def test_unknown_backbone_suggests_close_names(data_dir):
    with pytest.raises(tk.UnknownNameError, match="resnet18"):
        tk.finetune("image-classification", data=str(data_dir), backbone="timm:resnet_18", pretrained=False)
    with pytest.raises(tk.UnknownNameError, match="source prefix"):
        tk.finetune("image-classification", data=str(data_dir), backbone="resnet18", pretrained=False)


def test_load_errors(tmp_path):
    with pytest.raises(tk.ArtifactError, match="transferkit.json is missing"):
        tk.load(tmp_path)


def test_yaml_config_and_kwargs_override(data_dir, tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("epochs: 3\nlr: 0.01\nimage_size: 32\nmax_steps: 1\n")
    r = tk.finetune(
        "image-classification",
        data=str(data_dir),
        config=str(cfg),
        epochs=1,
        output_dir=str(tmp_path / "r"),
        backbone="timm:test_resnet",
        pretrained=False,
        quiet=True,
    )
    meta = json.loads((tmp_path / "r" / "transferkit.json").read_text())
    assert meta["config"]["epochs"] == 1 and meta["config"]["lr"] == 0.01
    assert len(r.history) == 1


def test_head_dropout_is_an_option_not_a_default(data_dir, tmp_path):
    """The README's `head_kwargs={"dropout": 0.2}`: the default linear head has no dropout (measured: it hurt short
    early-stopped runs), and the option puts one in, through tk.finetune and after tk.load."""
    for name, extra, want in (("default", {}, []), ("drop", {"head_kwargs": {"dropout": 0.2}}, [0.2])):
        out = tmp_path / name
        r = tk.finetune("image-classification", data=str(data_dir), epochs=1, max_steps=1, output_dir=str(out),
                        **FAST, **extra)  # fmt: skip
        assert [m.p for m in r.model.head.modules() if isinstance(m, nn.Dropout)] == want, name
        loaded = tk.load(out).model
        assert [m.p for m in loaded.head.modules() if isinstance(m, nn.Dropout)] == want, name
