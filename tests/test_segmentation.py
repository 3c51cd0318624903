"""Semantic segmentation end to end through the public API: generated shape images, tiny encoders of each
backbone source (timm:, tv:, smp:), freezing and learning rates, save/load/predict at the original size,
evaluation at the original mask size, weights from a classification state dict, and every bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transferkit as tk
from transferkit.errors import ConfigError, DataError, UnknownNameError, WeightsError

CLASSES = ["background", "square", "disc"]
RGB = {1: (220, 40, 40), 2: (40, 220, 40)}


def shapes(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy dark background with a red square (class 1) and a green disc (class 2)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    s = int(rng.integers(h // 4, h // 2))
    y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w // 2))
    mask[y : y + s, x : x + s] = 1
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 2, w - 6)), max(3, min(h, w) // 6)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    img = rng.integers(0, 70, (h, w, 3)).astype(np.uint8)
    for c, colour in RGB.items():
        img[mask == c] = colour
    return img, mask


def make_split(root: Path, n: int, seed: int = 0, sizes=((40, 52), (37, 53))) -> Path:
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img, mask = shapes(seed + i, h, w)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "data"
    make_split(root / "train", 12, seed=0)
    make_split(root / "test", 4, seed=100)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


FAST = dict(pretrained=False, image_size=32, batch_size=4, quiet=True, lr=3e-3, save_checkpoints=False)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir),
        backbone="timm:test_resnet",
        head="unet",
        epochs=2,
        output_dir=str(out),
        val_fraction=0.25,
        **{**FAST, "save_checkpoints": True},
    )
    return result, out


# --- fitting -----------------------------------------------------------------------------------------------------
def test_finetune_writes_metrics_and_output_folder(trained):
    result, out = trained
    assert set(result.metrics) == {"val", "test"}
    assert result.labels == CLASSES
    row = result.history[-1]
    assert {"train/loss", "val/loss", "val/miou", "val/dice", "val/pixel_accuracy", "val/iou_background"} <= set(row)
    test = result.metrics["test"]
    assert 0 < test["miou"] <= 1 and 0 < test["pixel_accuracy"] <= 1
    for name in ("transferkit.json", "model.safetensors", "history.csv", "checkpoints/best"):
        assert (out / name).exists(), name
    meta = json.loads((out / "transferkit.json").read_text())
    assert meta["task"] == "semantic-segmentation" and meta["status"] == "finished"
    assert meta["task_state"]["labels"] == CLASSES
    assert meta["task_state"]["data_config"]["input_size"] == [3, 32, 32]


@pytest.mark.parametrize(
    "backbone,source",
    [("timm:test_efficientnet", "timm"), ("tv:mobilenet_v2", "tv"), ("smp:mobilenet_v2", "smp")],
)
def test_two_epoch_fit_for_each_backbone_source(backbone, source, data_dir, tmp_path):
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir / "train"),
        backbone=backbone,
        classes=CLASSES,
        epochs=2,
        output_dir=str(tmp_path / "r"),
        **FAST,
    )
    assert len(result.history) == 2 and result.model.backbone.source == source
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]
    assert 0 < result.metrics["val"]["miou"] <= 1


def test_learns_the_shapes(data_dir, tmp_path):
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir),
        backbone="timm:test_resnet",
        head="fpn",
        epochs=20,
        output_dir=str(tmp_path / "r"),
        **FAST,
    )
    assert result.metrics["test"]["miou"] > 0.6


def test_ce_plus_dice_logs_both_losses(data_dir, tmp_path):
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir / "train"),
        backbone="timm:test_resnet",
        classes=CLASSES,
        loss="ce+dice",
        class_weights={"disc": 2.0},
        epochs=1,
        output_dir=str(tmp_path / "r"),
        **FAST,
    )
    row = result.history[0]
    assert row["train/loss"] == pytest.approx(row["train/ce"] + row["train/dice"], rel=1e-5)


def test_weighted_cross_entropy_matches_torch():
    from transferkit.config import FinetuneConfig
    from transferkit.tasks.semantic_segmentation import SemanticSegmentationOptions, SemanticSegmentationTask

    task = SemanticSegmentationTask(FinetuneConfig(), SemanticSegmentationOptions(class_weights=[1.0, 3.0, 0.5]))
    task._weights = torch.tensor([1.0, 3.0, 0.5])
    logits = torch.randn(2, 3, 5, 6)
    masks = torch.randint(0, 3, (2, 5, 6))
    masks[0, 0] = 255
    want = torch.nn.functional.cross_entropy(logits, masks, weight=task._weights, ignore_index=255)
    assert task.cross_entropy(logits, masks) == pytest.approx(float(want), rel=1e-6)
    # a batch whose pixels are all ignored gives 0, not NaN
    assert float(task.cross_entropy(logits, torch.full((2, 5, 6), 255))) == 0.0


def test_batch_of_one_trains_with_pooled_batchnorm(data_dir, tmp_path):
    # DeepLabV3's ASPP pooling branch normalises a 1x1 map: one value per channel with a batch of one
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir / "train"),
        backbone="timm:test_resnet",
        head="deeplabv3",
        epochs=1,
        max_steps=3,
        output_dir=str(tmp_path / "r"),
        **{**FAST, "batch_size": 1},
    )
    assert np.isfinite(result.history[0]["train/loss"])


# --- transfer: frozen encoder, learning rates, weights -----------------------------------------------------------
def _saved_backbone_weights(tmp_path: Path, name: str = "timm:test_resnet") -> Path:
    from safetensors.torch import save_file

    bb = tk.backbones.create_backbone(name, pretrained=False)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(path))
    return path


def test_frozen_encoder_is_bit_identical_after_training(data_dir, tmp_path):
    from safetensors.torch import load_file

    weights = _saved_backbone_weights(tmp_path)
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data_dir / "train"),
        backbone="timm:test_resnet",
        freeze="backbone",
        epochs=2,
        output_dir=str(tmp_path / "r"),
        **{**FAST, "pretrained": str(weights)},
    )
    saved = load_file(str(weights))
    state = result.model.state_dict()
    encoder = {k[len("backbone.model.") :]: v for k, v in state.items() if k.startswith("backbone.model.")}
    assert encoder, "no encoder weights in the model"
    for key, value in encoder.items():  # weights and BatchNorm running statistics
        assert torch.equal(value, saved[key]), key
    decoder = [k for k in state if k.startswith("head.") and k.endswith("weight")]
    fresh = tk.create_model("timm:test_resnet", 3, kind="segmenter", head="unet", pretrained=str(weights))
    assert any(not torch.equal(state[k], fresh.state_dict()[k]) for k in decoder)


def test_encoder_trains_at_lr_and_decoder_at_lr_times_head_lr_mult(tmp_path):
    from transferkit.config import FinetuneConfig
    from transferkit.engine.optim import ParamGroupPlan

    weights = _saved_backbone_weights(tmp_path)
    model = tk.create_model("timm:test_resnet", 3, kind="segmenter", head="fpn", pretrained=str(weights))
    plan = ParamGroupPlan(model, FinetuneConfig(lr=1e-3, head_lr_mult=10.0))
    groups = plan.groups(plan.order(plan.num_groups))
    encoder = {id(p) for p in model.backbone.parameters()}
    decoder = {id(p) for p in model.head.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        if g["name"] == "head":
            assert g["lr"] == pytest.approx(1e-2) and ids <= decoder
        else:
            assert g["lr"] == pytest.approx(1e-3) and ids <= encoder
    covered = {id(p) for g in groups for p in g["params"]}
    assert covered == encoder | decoder
    assert plan.num_groups == len(model.backbone.layer_groups()) > 1
    # random init: nothing is pretrained, everything at lr
    scratch = tk.create_model("timm:test_resnet", 3, kind="segmenter", head="fpn", pretrained=False)
    assert ParamGroupPlan(scratch, FinetuneConfig(lr=1e-3, head_lr_mult=10.0)).head_lr == pytest.approx(1e-3)


def test_smp_encoder_layer_groups_are_its_stages():
    view = tk.backbones.create_backbone("smp:mobilenet_v2", pretrained=False)
    from transferkit.backbones.base import check_layer_groups

    groups = view.layer_groups()
    check_layer_groups(view, groups)
    assert len(groups) == 5 and view.reductions == [2, 4, 8, 16, 32]
    assert groups[0][0].startswith("encoder.features.0.") and groups[-1][-1].startswith("encoder.features.18.")


def test_classification_state_dict_initialises_smp_and_tv_encoders_alike(tmp_path):
    import torchvision

    torch.manual_seed(0)
    classifier = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2_classifier.pth"
    torch.save(classifier.state_dict(), path)
    reference = classifier.state_dict()
    smp_view = tk.backbones.create_backbone("smp:mobilenet_v2", pretrained=str(path))
    tv_view = tk.backbones.create_backbone("tv:mobilenet_v2", pretrained=str(path)).features()
    smp_state = {k.removeprefix("encoder."): v for k, v in smp_view.state_dict().items()}
    tv_state = {k.removeprefix("model."): v for k, v in tv_view.state_dict().items()}
    assert set(smp_state) == set(tv_state) == {k for k in reference if not k.startswith("classifier.")}
    for key, value in reference.items():
        if not key.startswith("classifier."):
            assert torch.equal(smp_state[key], value) and torch.equal(tv_state[key], value), key
    x = torch.randn(1, 3, 64, 64)
    smp_view.eval(), tv_view.eval()
    with torch.no_grad():
        for a, b in zip(smp_view(x), tv_view(x)):
            assert torch.allclose(a, b)
    # and through finetune: the same file as pretrained= for the smp: source
    model = tk.create_model("smp:mobilenet_v2", 3, kind="segmenter", pretrained=str(path))
    assert torch.equal(model.backbone.encoder.features[0][0].weight, reference["features.0.0.weight"])


def test_pretrained_true_offline_is_a_clear_weights_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants
    import segmentation_models_pytorch as smp

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(smp.encoders, "load_url", no_network, raising=False)  # smp 0.5's fallback download
    with pytest.raises(WeightsError, match=r"Offline\? Pass a local weights file"):
        tk.backbones.create_backbone("smp:resnet18", pretrained=True)
    with pytest.raises(WeightsError, match=r"Offline\?"):  # also when dilated for DeepLab
        tk.create_model("smp:resnet18", 3, kind="segmenter", head="deeplabv3plus", pretrained=True)


# --- save, load, predict, evaluate -------------------------------------------------------------------------------
def test_save_load_predict_identical_at_original_sizes(trained, data_dir, tmp_path):
    result, out = trained
    odd = tmp_path / "odd.png"
    Image.fromarray(shapes(7, 29, 45)[0]).save(odd)
    paths = sorted(str(p) for p in (data_dir / "test" / "images").glob("*.png")) + [str(odd)]
    first = tk.load(out, device="cpu").predict(paths, batch_size=2)
    second = tk.load(out, device="cpu").predict([Image.open(p) for p in paths])
    for p, a, b in zip(paths, first, second):
        h, w = Image.open(p).size[::-1]
        assert a["mask"].shape == (h, w) and a["mask"].dtype == np.int64
        assert np.array_equal(a["mask"], b["mask"])
        assert set(np.unique(a["mask"])) <= {0, 1, 2}
    # the in-memory result model agrees with the reloaded one
    task = tk.load(out, device="cpu").task
    again = task.predict(result.model, paths, torch.device("cpu"), 8)
    assert all(np.array_equal(a["mask"], b["mask"]) for a, b in zip(first, again))


def test_test_metrics_are_computed_at_the_original_mask_size(trained, data_dir):
    from transferkit.metrics.segmentation import SegmentationMetrics

    result, out = trained
    images = sorted((data_dir / "test" / "images").glob("*.png"))
    preds = tk.load(out, device="cpu").predict([str(p) for p in images])
    metrics = SegmentationMetrics(3, class_names=CLASSES)
    for p, pred in zip(images, preds):
        target = np.array(Image.open(data_dir / "test" / "masks" / p.name))
        metrics.update((torch.from_numpy(pred["mask"]), torch.from_numpy(target.astype(np.int64))))
    expected = metrics.compute()
    assert result.metrics["test"]["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert result.metrics["test"]["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-6)
    evaluated = tk.evaluate(out, data=str(data_dir))  # the test split of the folder
    assert evaluated["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert evaluated["loss"] == pytest.approx(result.metrics["test"]["loss"], rel=1e-5)


def test_evaluate_errors_name_the_evaluation_data(trained, data_dir, tmp_path):
    _, out = trained
    one = make_split(tmp_path / "one", 1, seed=7)
    Image.fromarray(np.zeros((40, 52), np.uint8)).save(one / "masks" / "000.png")  # background only: a set may
    assert set(tk.evaluate(out, data=str(one))) >= {"miou", "loss"}  # hold fewer classes than training needs
    bad = make_split(tmp_path / "bad", 1, seed=7)
    Image.fromarray(np.full((40, 52), 7, np.uint8)).save(bad / "masks" / "000.png")
    with pytest.raises(DataError, match=r"outside the 3 classes .*\(the model's classes\)"):
        tk.evaluate(out, data=str(bad))
    with pytest.raises(DataError, match=r"^evaluation data '.*000\.png' is a file, not a folder"):
        tk.evaluate(out, data=str(one / "images" / "000.png"))


def test_predict_writes_colour_overlays(trained, data_dir, tmp_path):
    _, out = trained
    predictor = tk.load(out, device="cpu")
    image = data_dir / "test" / "images" / "000.png"
    results = predictor.task.predict(
        predictor.model, [str(image), np.array(Image.open(image))], predictor.device, 4, overlay_dir=tmp_path / "ov"
    )
    assert [Path(r["overlay"]).name for r in results] == ["000_overlay.png", "00001_overlay.png"]
    drawn = np.array(Image.open(results[0]["overlay"]))
    original = np.array(Image.open(image))
    mask = results[0]["mask"]
    assert drawn.shape == original.shape
    assert np.array_equal(drawn[mask == 0], original[mask == 0])  # background untinted
    if (mask > 0).any():
        assert not np.array_equal(drawn[mask > 0], original[mask > 0])


# --- bad input, each through tk.finetune -------------------------------------------------------------------------
def _finetune(data, tmp_path, **kw):
    opts = {**FAST, "backbone": "timm:test_resnet", "epochs": 1, "output_dir": str(tmp_path / "bad"), **kw}
    return tk.finetune("semantic-segmentation", data=str(data), **opts)


def test_unpaired_files_are_listed_and_counted(tmp_path):
    root = make_split(tmp_path / "d", 8)
    for i in (1, 2, 3, 4, 5, 6):
        (root / "masks" / f"{i:03d}.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / "orphan.png")
    with pytest.raises(DataError) as e:
        _finetune(root, tmp_path)
    msg = str(e.value)
    assert "6 image(s) without a mask" in msg and "001.png" in msg and "..." in msg
    assert "1 mask(s) without an image" in msg and "orphan.png" in msg


def test_size_mismatch_names_the_files(tmp_path):
    root = make_split(tmp_path / "d", 4)
    Image.fromarray(np.zeros((10, 11), np.uint8)).save(root / "masks" / "002.png")
    with pytest.raises(DataError, match=r"002\.png.* 10x11.*40x52"):
        _finetune(root, tmp_path)


def test_mask_values_outside_the_classes_name_file_and_values(tmp_path):
    root = make_split(tmp_path / "d", 4)
    (root / "classes.txt").write_text("background\nsquare\ndisc\n")
    mask = np.array(Image.open(root / "masks" / "001.png"))
    mask[:2, :2] = 7
    Image.fromarray(mask).save(root / "masks" / "001.png")
    with pytest.raises(DataError, match=r"001\.png.*\[7\]"):
        _finetune(root, tmp_path)


def test_rgb_mask_without_colour_map(tmp_path):
    root = make_split(tmp_path / "d", 4)
    mask = np.array(Image.open(root / "masks" / "000.png"))
    colour = np.stack([mask * 100, mask * 50, mask * 20], -1).astype(np.uint8)
    Image.fromarray(colour).save(root / "masks" / "000.png")
    with pytest.raises(DataError, match=r"000\.png.*colour \(RGB\) mask.*palette="):
        _finetune(root, tmp_path)
    # with the colour map it trains
    palette = {"background": [0, 0, 0], "square": [100, 50, 20], "disc": [200, 100, 40]}
    for i in (1, 2, 3):  # the others as colour masks too
        m = np.array(Image.open(root / "masks" / f"{i:03d}.png"))
        Image.fromarray(np.stack([m * 100, m * 50, m * 20], -1).astype(np.uint8)).save(root / "masks" / f"{i:03d}.png")
    result = _finetune(root, tmp_path, palette=palette, overwrite=True)
    assert result.labels == ["background", "square", "disc"]


def test_corrupt_files_fail_up_front_or_are_skipped(tmp_path):
    root = make_split(tmp_path / "d", 6)
    (root / "images" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=r"(?s)003\.png.*skip_bad_files=True"):
        _finetune(root, tmp_path, classes=CLASSES)
    with pytest.warns(UserWarning, match="Left out 1 image/mask pair"):
        result = _finetune(root, tmp_path, classes=CLASSES, skip_bad_files=True, overwrite=True)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train/loss"])


def test_unknown_architecture_and_encoder_suggest_close_names(data_dir, tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean: unet"):
        _finetune(data_dir / "train", tmp_path, head="unett")
    with pytest.raises(UnknownNameError, match="Did you mean: mobilenet_v2"):
        _finetune(data_dir / "train", tmp_path, backbone="smp:mobilenetv2")
    with pytest.raises(ConfigError, match="pooled features, not for segmentation"):
        _finetune(data_dir / "train", tmp_path, head="linear")
    with pytest.raises(ConfigError, match="Did you mean decoder_channels"):
        _finetune(data_dir / "train", tmp_path, head_kwargs={"decoder_chanels": (8, 8, 8, 8, 8)})
    with pytest.raises(ConfigError, match="number of classes comes from the data"):
        _finetune(data_dir / "train", tmp_path, head_kwargs={"classes": 5})
    with pytest.raises(ConfigError, match="serves text-classification"):
        _finetune(data_dir / "train", tmp_path, backbone="hf:bert-base-uncased")


def test_custom_head_with_wrong_output_channels(data_dir, tmp_path):
    class TwoChannels(torch.nn.Module):
        def __init__(self, backbone, num_classes):
            super().__init__()
            self.conv = torch.nn.Conv2d(backbone.channels[-1], 2, 1)

        def forward(self, features):
            return self.conv(features[-1])

    with pytest.raises(ConfigError, match=r"outputs \(1, 2, 32, 32\).*\(1, 3, 32, 32\) \(3 classes\)"):
        _finetune(data_dir / "train", tmp_path, head=TwoChannels, classes=CLASSES)


def test_option_errors(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="loss='focal' is invalid"):
        _finetune(data_dir / "train", tmp_path, loss="focal")
    with pytest.raises(ConfigError, match="class_weights has 2 weights, but the data has 3 classes"):
        _finetune(data_dir / "train", tmp_path, class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="ignore_index=.* is invalid; expected an integer"):
        _finetune(data_dir / "train", tmp_path, ignore_index="void")


# --- registry -----------------------------------------------------------------------------------------------------
def test_heads_listed_from_the_installed_smp():
    import segmentation_models_pytorch as smp

    assert tk.list_heads(task="semantic-segmentation") == sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    names = tk.list_backbones("mobilenet*", task="semantic-segmentation", source="smp")
    assert "smp:mobilenet_v2" in names
    assert "smp:tu-resnet18" in tk.list_backbones("tu-resnet1*", source="smp")


def test_missing_smp_is_a_clear_error_not_an_empty_list(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import fails
    monkeypatch.delitem(sys.modules, "transferkit.heads.segmentation", raising=False)
    with pytest.raises(ConfigError, match="pip install 'segmentation-models-pytorch>="):
        tk.list_heads(task="semantic-segmentation")
