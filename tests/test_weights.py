"""Loading local weight files into backbones: formats, wrappers, prefixes, classifiers, and helpful errors."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from transferkit.backbones import create_backbone
from transferkit.backbones.weights import load_weights, read_state_dict
from transferkit.errors import WeightsError
from transferkit.models import create_model


class Opaque:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _features(backbone: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(X)


@pytest.fixture(scope="module")
def source():
    """A timm test_resnet with a 1000-class classifier and non-default BatchNorm statistics."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))  # moves running_mean/var away from their 0/1 init
    model.eval()
    return model, model.forward_head(model.forward_features(X), pre_logits=True).detach()


def _save(sd: dict, path) -> None:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize(
    ("filename", "wrap"),
    [
        ("w.safetensors", None),
        ("w.pth", None),
        ("w.pt", "state_dict"),
        ("w.bin", "model"),
        ("w.pth", "module."),
        ("w.safetensors", "no-classifier"),
        ("w.pth", "backbone."),
        ("w.ckpt", "lightning"),
    ],
)
def test_timm_round_trip(tmp_path, source, filename, wrap):
    model, expected = source
    sd = model.state_dict()
    if wrap == "no-classifier":
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    elif wrap in ("module.", "backbone."):
        sd = {wrap + k: v for k, v in sd.items()}
    elif wrap == "lightning":  # Lightning: {"state_dict": {"model.<...>"}, "epoch": ...}
        sd = {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3, "hyper_parameters": {"lr": 0.1}}
    elif wrap is not None:
        sd = {wrap: sd, "epoch": 3}
    _save(sd, tmp_path / filename)
    bb = create_backbone("timm:test_resnet", pretrained=str(tmp_path / filename))
    torch.testing.assert_close(_features(bb), expected)


@pytest.mark.parametrize("layout", ["model.safetensors", "pytorch_model.bin", "only.pth", "sharded"])
def test_folder(tmp_path, source, layout):
    model, expected = source
    sd = model.state_dict()
    if layout == "sharded":
        keys = list(sd)
        half = len(keys) // 2
        save_file({k: sd[k] for k in keys[:half]}, str(tmp_path / "model-00001-of-00002.safetensors"))
        save_file({k: sd[k] for k in keys[half:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
        weight_map = {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors" for i, k in enumerate(keys)}
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        _save(sd, tmp_path / layout)
    (tmp_path / "notes.txt").write_text("not weights")
    bb = create_backbone("timm:test_resnet", pretrained=tmp_path)
    torch.testing.assert_close(_features(bb), expected)


def test_transfer_model_file_round_trip(tmp_path):
    """A TransferModel saved with safetensors loads as pretrained= into a new backbone and a new model."""
    torch.manual_seed(1)
    trained = create_model("timm:test_resnet", num_classes=3, pretrained=False)
    save_file(trained.state_dict(), str(tmp_path / "model.safetensors"))
    expected = _features(trained.backbone)

    bb = create_backbone("timm:test_resnet", pretrained=tmp_path / "model.safetensors")
    torch.testing.assert_close(_features(bb), expected)
    report = load_weights(create_backbone("timm:test_resnet", pretrained=False), tmp_path / "model.safetensors")
    assert report.prefixes == ("backbone.", "")
    assert sorted(report.dropped) == ["head.fc.bias", "head.fc.weight"]

    # a new model with another number of classes: backbone from the file, fresh head
    model = create_model("timm:test_resnet", num_classes=5, pretrained=str(tmp_path))
    torch.testing.assert_close(_features(model.backbone), expected)
    assert model(X).shape == (2, 5)
    # the same class count: load_weights on the whole model restores the head too
    again = create_model("timm:test_resnet", num_classes=3, pretrained=False)
    assert load_weights(again, tmp_path / "model.safetensors").dropped == []
    torch.testing.assert_close(again.eval()(X), trained.eval()(X))


def test_torchvision_state_dicts(tmp_path):
    torch.manual_seed(2)
    full = torchvision.models.mobilenet_v3_small().eval()
    torch.save(full.state_dict(), tmp_path / "mnv3.pth")
    bb = create_backbone("tv:mobilenet_v3_small", pretrained=tmp_path / "mnv3.pth")
    with torch.no_grad():
        pooled = torch.flatten(full.avgpool(full.features(X)), 1)
        expected = full.classifier[1](full.classifier[0](pooled))  # the pre-logits Linear + Hardswish
    torch.testing.assert_close(_features(bb), expected)
    report = load_weights(bb, tmp_path / "mnv3.pth")
    assert sorted(report.dropped) == ["classifier.3.bias", "classifier.3.weight"]  # only the last Linear
    # the pre-logits Linear is called "classifier.0" but belongs to the backbone: a wrong shape is an error
    sd = full.state_dict()
    sd["classifier.0.weight"] = torch.zeros(512, 576)
    torch.save(sd, tmp_path / "narrow.pth")
    with pytest.raises(WeightsError, match=r"model\.classifier\.0\.weight: file \(512, 576\) vs model \(1024, 576\)"):
        load_weights(bb, tmp_path / "narrow.pth")

    model = create_model("tv:resnet18", num_classes=4, pretrained=False)
    save_file(model.state_dict(), str(tmp_path / "r18.safetensors"))
    bb = create_backbone("tv:resnet18", pretrained=tmp_path / "r18.safetensors")
    torch.testing.assert_close(_features(bb), _features(model.backbone))


def test_library_model_with_new_head(source, tmp_path):
    """Weights with 1000 classes into a 10-class timm model: the classifier is skipped unless asked not to."""
    model, _ = source
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    ten = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    report = load_weights(ten, tmp_path / "w.safetensors")
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(ten.state_dict()["layer4.0.conv1.weight"], model.state_dict()["layer4.0.conv1.weight"])
    with pytest.raises(WeightsError) as err:
        load_weights(ten, tmp_path / "w.safetensors", drop_head=False)
    msg = str(err.value)
    assert "w.safetensors" in msg and "shape mismatch (2)" in msg
    assert "fc.weight: file (1000, 96) vs model (10, 96)" in msg


def test_other_architecture_lists_missing_keys(tmp_path):
    torch.manual_seed(3)
    sd = torchvision.models.resnet18().state_dict()
    torch.save(sd, tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError) as err:
        create_backbone("tv:resnet34", pretrained=tmp_path / "resnet18.pth")
    msg = str(err.value)
    assert "resnet18.pth" in msg and "tv:resnet34" in msg
    assert "missing in file (" in msg and "model.layer1.2.conv1.weight" in msg
    assert "unexpected" not in msg  # resnet18 is a subset of resnet34


def test_shape_mismatch_and_unexpected_keys(tmp_path, source):
    model, _ = source
    sd = dict(model.state_dict())
    sd["layer1.0.conv1.weight"] = torch.zeros(8, 32, 3, 3)
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        create_backbone("timm:test_resnet", pretrained=tmp_path / "bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg
    assert "model.layer1.0.conv1.weight: file (8, 32, 3, 3) vs model (32, 32, 3, 3)" in msg
    assert "unexpected in file (1): layer9.0.conv1.weight" in msg

    bb = create_backbone("timm:test_resnet", pretrained=False)
    with pytest.warns(UserWarning, match="shape mismatch"):
        report = load_weights(bb, tmp_path / "bad.pth", strict=False)  # loads what fits
    assert report.mismatched == [("model.layer1.0.conv1.weight", (8, 32, 3, 3), (32, 32, 3, 3))]
    assert report.unexpected == ["layer9.0.conv1.weight"] and len(report.loaded) == len(sd) - 4
    torch.testing.assert_close(bb.model.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])


def test_unrelated_file_says_nothing_fits(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"No key of the weights in '.*other\.pt' fits timm:test_resnet"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "other.pt")


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors' does not exist"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="holds no weights file"):
        read_state_dict(tmp_path)
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="several candidate files"):
        read_state_dict(tmp_path)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="broken.safetensors"):
        read_state_dict(tmp_path / "broken.safetensors")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(WeightsError, match="unsupported extension '.h5'"):
        read_state_dict(tmp_path / "w.h5")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_state_dict(tmp_path / "meta.pt")
    torch.save({"obj": Opaque()}, tmp_path / "pickled.pt")  # arbitrary Python objects are refused
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        read_state_dict(tmp_path / "pickled.pt")


def test_missing_batchnorm_counters_are_fine(tmp_path, source):
    model, expected = source
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, str(tmp_path / "w.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bb = create_backbone("timm:test_resnet", pretrained=tmp_path / "w.safetensors")
    torch.testing.assert_close(_features(bb), expected)


def _renamed(sd: dict, counters: bool = True) -> dict:
    """Another implementation's names for the same tensors, in the same order: 'layer1.0.conv1.weight' ->
    '_layer1_0_conv1.weight', the classifier 'fc' -> '_fc' (as in efficientnet_pytorch)."""
    out = {}
    for key, value in sd.items():
        if key.endswith("num_batches_tracked") and not counters:
            continue
        path, leaf = key.rsplit(".", 1)
        out[("_fc" if path == "fc" else "_" + path.replace(".", "_")) + "." + leaf] = value
    return out


@pytest.mark.parametrize("counters", [True, False])
def test_renamed_keys_load_by_position(tmp_path, source, counters):
    """Keys renamed by another library: the tensors load by position, with one warning saying so."""
    model, expected = source
    torch.save(_renamed(model.state_dict(), counters), tmp_path / "renamed.pth")
    with pytest.warns(UserWarning, match=r"name their layers differently .* by position") as record:
        bb = create_backbone("timm:test_resnet", pretrained=tmp_path / "renamed.pth")
    assert len([w for w in record if "by position" in str(w.message)]) == 1
    assert "\n" not in str(record[0].message)
    torch.testing.assert_close(_features(bb), expected)

    with pytest.warns(UserWarning, match="by position"):
        report = load_weights(create_backbone("timm:test_resnet", pretrained=False), tmp_path / "renamed.pth")
    assert report.by_position and not report.missing
    assert {"_fc.weight", "_fc.bias"} <= set(report.dropped)

    # a whole library model with a classifier of the same shape: the classifier loads too
    full = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    with pytest.warns(UserWarning, match="by position"):
        report = load_weights(full, tmp_path / "renamed.pth", drop_head=False)
    assert "fc.weight" in report.loaded
    torch.testing.assert_close(full.eval()(X), model(X))

    # a TransferModel with a new 4-class head: backbone by position, the head keeps its init
    with pytest.warns(UserWarning, match="by position"):
        four = create_model("timm:test_resnet", num_classes=4, pretrained=str(tmp_path / "renamed.pth"))
    torch.testing.assert_close(_features(four.backbone), expected)


def test_renamed_keys_that_do_not_line_up_are_refused(tmp_path, source):
    model, _ = source
    renamed = _renamed(model.state_dict())
    keys = list(renamed)

    # two tensors of different shapes in the other order
    i = keys.index("_layer2_0_conv1.weight")
    swapped = keys[:i] + [keys[i + 1], keys[i]] + keys[i + 2 :]
    torch.save({k: renamed[k] for k in swapped}, tmp_path / "swapped.pth")
    with pytest.raises(WeightsError) as err:
        create_backbone("timm:test_resnet", pretrained=tmp_path / "swapped.pth")
    msg = str(err.value)
    assert "No key of the weights" in msg and "matching by position is not possible either: tensor" in msg

    # same shapes but BatchNorm statistics in another order: the parameter names disagree
    j = keys.index("_bn1.running_mean")
    assert keys[j + 1] == "_bn1.running_var"
    stats = keys[:j] + [keys[j + 1], keys[j]] + keys[j + 2 :]
    torch.save({k: renamed[k] for k in stats}, tmp_path / "stats.pth")
    with pytest.raises(WeightsError, match=r"tensor \d+ differs: file _bn1\.running_var"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "stats.pth")

    # one tensor fewer
    torch.save({k: renamed[k] for k in keys if k != "_layer3_0_conv2.weight"}, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match=r"the file has \d+ tensors without classifiers, the model \d+"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "short.pth")

    # another architecture's renamed weights
    torch.save(_renamed(torchvision.models.resnet18().state_dict()), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="matching by position is not possible"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "r18.pth")


def test_position_must_agree_with_names_that_match(tmp_path, source):
    """Names that do match must map where position says, else the file is refused (here: renamed keys, but two
    same-shaped convolutions keep their own names in each other's places)."""
    model, _ = source
    sd = model.state_dict()
    a, b = "layer1.0.bn1.weight", "layer1.0.bn2.weight"
    assert sd[a].shape == sd[b].shape
    out = {}
    for (k, v), orig in zip(_renamed(sd).items(), sd):
        out[{a: b, b: a}.get(orig, k)] = v
    torch.save(out, tmp_path / "crossed.pth")
    with pytest.raises(WeightsError, match="matching by position is not possible either: tensor"):
        create_backbone("timm:test_resnet", pretrained=tmp_path / "crossed.pth")
