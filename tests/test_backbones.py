"""timm and torchvision backbone adapters: shapes, metadata, layer groups, names. Tiny models, CPU, offline."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

import transferkit.backbones
from transferkit.backbones import check_layer_groups, create_backbone, list_backbones
from transferkit.errors import ConfigError, UnknownNameError, WeightsError
from transferkit.models import create_model

DATA_KEYS = {"input_size", "mean", "std", "interpolation", "crop_pct"}


@functools.cache
def _tv(name: str) -> nn.Module:
    """One random-init torchvision backbone per name for the whole file (building them is the slow part)."""
    return create_backbone(f"tv:{name}", pretrained=False)


def _stage_channels(backbone: nn.Module, x: torch.Tensor) -> list[int]:
    """Channels of each feature_info module's output on `x`, read with forward hooks."""
    seen: dict[str, int] = {}

    def hook(name: str):
        def record(_module, _inputs, output) -> None:  # returning None keeps the output unchanged
            seen.setdefault(name, output.shape[1])

        return record

    hooks = [
        backbone.get_submodule(f["module"]).register_forward_hook(hook(f["module"])) for f in backbone.feature_info
    ]
    with torch.no_grad():
        backbone.eval()(x)
    for h in hooks:
        h.remove()
    return [seen[f["module"]] for f in backbone.feature_info]


def _check_common(bb: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        out = bb.eval()(x)
    assert out.shape == (x.shape[0], bb.num_features)
    assert set(bb.data_config) >= DATA_KEYS
    assert len(bb.data_config["input_size"]) == 3 and len(bb.data_config["mean"]) == 3
    groups = bb.layer_groups()
    check_layer_groups(bb, groups)
    assert len(groups) >= 3
    # stem first, top last: the first parameter the module registers sits in the first group
    assert next(n for n, _ in bb.named_parameters()) in groups[0]
    for f in bb.feature_info:
        assert {"num_chs", "reduction", "module"} <= set(f)
    reductions = [f["reduction"] for f in bb.feature_info]
    assert reductions == sorted(reductions)


def test_core_modules_do_not_import_libraries_at_top():
    # `import transferkit` must stay fast: only the adapters (imported on demand) may import these at top level
    root = Path(transferkit.backbones.__file__).parents[1]
    files = ["backbones/__init__.py", "backbones/base.py", "backbones/weights.py", "models/__init__.py", "registry.py"]
    files += ["models/masked_lm.py", "config.py", "api.py", "tasks/base.py", "metrics/base.py"]
    files += [str(p.relative_to(root)) for p in (root / "engine").glob("*.py")]
    for rel in files:
        tree = ast.parse((root / rel).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not [n for n in names if n.split(".")[0] in ("timm", "torchvision", "transformers")], rel


@pytest.mark.parametrize(
    ("name", "num_features", "num_stages"),
    [("test_resnet", 96, 5), ("test_efficientnet", 256, 5), ("test_vit", 64, 6)],
)
def test_timm_backbone(name, num_features, num_stages):
    bb = create_backbone(f"timm:{name}", pretrained=False)
    assert (bb.source, bb.name, bb.num_features) == ("timm", name, num_features)
    x = torch.randn(2, 3, 64, 64)
    _check_common(bb, x)
    assert len(bb.feature_info) == num_stages
    assert bb.data_config["input_size"] == (3, 160, 160)
    if name == "test_vit":  # token outputs (B, N, C): channels are the embedding width
        assert {f["num_chs"] for f in bb.feature_info} == {64}
    else:
        assert _stage_channels(bb, x) == [f["num_chs"] for f in bb.feature_info]
    assert bb.forward_features(x).shape[0] == 2


def test_timm_layer_groups_follow_group_matcher():
    bb = create_backbone("timm:test_resnet", pretrained=False)
    groups = bb.layer_groups()
    assert [g[0] for g in groups] == [
        "model.conv1.0.weight",
        "model.layer1.0.conv1.weight",
        "model.layer2.0.conv1.weight",
        "model.layer3.0.conv1.weight",
        "model.layer4.0.conv1.weight",
    ]
    assert "model.bn1.weight" in groups[0]


def test_timm_kwargs_pass_through():
    bb = create_backbone("timm:test_resnet", pretrained=False, in_chans=1)
    assert bb(torch.randn(1, 1, 64, 64)).shape == (1, 96)


@pytest.mark.parametrize(
    ("name", "num_features", "reductions"),
    [("resnet18", 512, [2, 4, 8, 16, 32]), ("mobilenet_v3_small", 1024, [2, 4, 8, 16, 32])],
)
def test_torchvision_backbone(name, num_features, reductions):
    bb = _tv(name)
    assert (bb.source, bb.name, bb.num_features) == ("tv", name, num_features)
    x = torch.randn(2, 3, 64, 64)
    _check_common(bb, x)
    assert [f["reduction"] for f in bb.feature_info] == reductions
    assert _stage_channels(bb, x) == [f["num_chs"] for f in bb.feature_info]
    assert bb.data_config["input_size"] == (3, 224, 224)
    assert bb.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert 0.8 < bb.data_config["crop_pct"] <= 1.0


def test_torchvision_resnet_groups_and_head():
    bb = _tv("resnet18")
    groups = bb.layer_groups()
    assert groups[0] == ["model.conv1.weight", "model.bn1.weight", "model.bn1.bias"]
    assert [g[0].split(".")[1] for g in groups[1:]] == ["layer1", "layer2", "layer3", "layer4"]
    assert isinstance(bb.model.fc, nn.Identity)


def test_torchvision_classifier_stripping():
    # MobileNetV3 keeps its pre-logits Linear + Hardswish, without the dropout before the last Linear
    mnv3 = _tv("mobilenet_v3_small")
    assert [type(m).__name__ for m in mnv3.model.classifier] == ["Linear", "Hardswish"]
    assert [n for n, _ in mnv3.model.classifier.named_children()] == ["0", "1"]  # torchvision key names kept
    # MobileNetV2's Sequential(Dropout, Linear) classifier goes entirely
    mnv2 = create_backbone("tv:mobilenet_v2", pretrained=False)
    assert len(mnv2.model.classifier) == 0 and mnv2.num_features == 1280
    # SqueezeNet classifies with a 1x1 conv followed by the global pool, which must stay
    sq = create_backbone("tv:squeezenet1_1", pretrained=False)
    assert sq(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    check_layer_groups(sq, sq.layer_groups())


def test_transfer_model_on_both_sources():
    x = torch.randn(2, 3, 64, 64)
    for backbone in ("timm:test_resnet", _tv("resnet18")):  # a name, or a ready Backbone module
        model = create_model(backbone, num_classes=3, pretrained=False)
        assert model(x).shape == (2, 3)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_backbone("timm:resnt18", pretrained=False)
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_backbone("tv:resnet19", pretrained=False)
    with pytest.raises(UnknownNameError, match="detection"):
        create_backbone("tv:fasterrcnn_resnet50_fpn", pretrained=False)
    with pytest.raises(UnknownNameError, match="SOURCE:NAME"):
        create_backbone("resnet18", pretrained=False)


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        create_backbone("timm:test_resnet", pretrained=False, num_classes=10)
    with pytest.raises(ConfigError, match="num_classes"):
        create_backbone("tv:resnet18", pretrained=False, num_classes=10)
    with pytest.raises(ConfigError, match="pretrained=3"):
        create_backbone("timm:test_resnet", pretrained=3)
    with pytest.raises(ConfigError, match="does not accept"):
        create_backbone("tv:resnet18", pretrained=False, no_such_option=1)


def test_library_weights_unreachable_is_a_weights_error(monkeypatch):
    import timm
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    for name in ("timm:test_resnet", "tv:resnet18"):
        with pytest.raises(WeightsError, match="pretrained='path/to/weights"):
            create_backbone(name, pretrained=True)


def test_list_backbones():
    names = list_backbones("resnet1*", task="image-classification")
    assert {"timm:resnet18", "tv:resnet18", "tv:resnet101"} <= set(names)
    assert all(n.split(":")[0] in ("timm", "tv") for n in names)
    tv = list_backbones(source="tv")
    assert "tv:mobilenet_v3_small" in tv and "tv:fasterrcnn_resnet50_fpn" not in tv
    assert all(n.startswith("tv:") for n in tv)
    assert len(list_backbones("*", source="timm")) > 1000  # every architecture the installed timm offers
    assert list_backbones("no_such_net*", task="image-classification") == []
