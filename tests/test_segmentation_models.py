"""Segmentation models: every architecture of the installed smp around tiny backbones of each source, odd input
sizes, batches of one, dilation for DeepLab, no idle parameters, level planning and the smp encoder adapter."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

import transferkit as tk
from transferkit.errors import ConfigError
from transferkit.heads.segmentation import ARCHS, SafeBatchNorm2d, plan_levels
from transferkit.models.segmentation import SegmentationModel

ALL_ARCHS = sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def small(arch: str) -> dict:
    """Narrow decoder widths for `arch`, read from its own signature (every option whose name holds 'channels')."""
    import inspect

    cls = smp.MODEL_ARCHITECTURES_MAPPING[arch]
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if "channels" in name and name != "in_channels":
            if isinstance(p.default, int):
                out[name] = 32
            elif isinstance(p.default, (tuple, list)):
                out[name] = type(p.default)([32] * len(p.default))
    return out


def build(backbone: str, arch: str, **kw) -> SegmentationModel:
    return tk.create_model(backbone, 3, kind="segmenter", head=arch, pretrained=False, head_kwargs=small(arch), **kw)


def check_runs(model: SegmentationModel, size=(45, 61)) -> None:
    """Logits at the input size in train and eval mode, a batch of one in training, and every parameter used."""
    model.train()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    out.mean().backward()
    idle = [n for n, p in model.named_parameters() if p.grad is None]
    assert not idle, f"parameters without gradient (idle under DDP): {idle[:5]}"
    assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)  # pooled BatchNorm with one value per channel
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 37)).shape == (1, 3, 29, 37)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_installed_architecture_on_a_tiny_timm_cnn(arch):
    check_runs(build("timm:test_resnet", arch))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("backbone", ["tv:mobilenet_v2", "smp:mobilenet_v2", "timm:test_convnext", "smp:mit_b0"])
def test_every_architecture_on_each_source(backbone, arch):
    transformer_style = backbone in ("timm:test_convnext", "smp:mit_b0")  # no map at stride 2
    if transformer_style and arch in ("linknet", "unetplusplus") and smp_version() < (0, 6):
        with pytest.raises(ConfigError, match="does not run on maps"):  # smp < 0.6 cannot, and says so clearly
            build(backbone, arch)
        return
    check_runs(build(backbone, arch))


def smp_version() -> tuple[int, int]:
    major, minor = smp.__version__.split(".")[:2]
    return int(major), int(minor)


def test_dpt_on_a_vit_and_what_a_vit_cannot_do():
    model = build("timm:test_vit", "dpt")
    assert model.backbone.reductions == [16, 16, 16, 16]
    check_runs(model, size=(40, 50))
    with pytest.raises(ConfigError, match="use head='dpt'"):
        build("timm:test_vit", "unet")
    with pytest.raises(ConfigError, match="readout is 'ignore'"):
        tk.create_model(
            "timm:test_vit", 3, kind="segmenter", head="dpt", pretrained=False, head_kwargs={"decoder_readout": "cat"}
        )


def test_deeplab_dilates_each_source_to_its_output_stride():
    for backbone in ("timm:test_resnet", "tv:resnet18", "tv:mobilenet_v2", "smp:resnet18"):
        assert build(backbone, "deeplabv3").backbone.reductions == [2, 4, 8, 8, 8], backbone
        assert build(backbone, "deeplabv3plus").backbone.reductions == [2, 4, 8, 16, 16], backbone
    model = build(
        "tv:resnet18",
        "deeplabv3plus",
    )
    conv = model.backbone.model.layer4[0].conv1
    assert conv.stride == (1, 1) and conv.dilation == (2, 2) and conv.padding == (2, 2)
    # output stride 16 for DeepLabV3 through head_kwargs
    model = tk.create_model(
        "tv:resnet18",
        3,
        kind="segmenter",
        head="deeplabv3",
        pretrained=False,
        head_kwargs={"encoder_output_stride": 16},
    )
    assert model.backbone.reductions == [2, 4, 8, 16, 16] and model.input_divisor == 16


def test_backbones_that_cannot_be_dilated_say_so():
    with pytest.raises(ConfigError, match=r"tv:densenet121 .* cannot be dilated \(it downsamples with pooling\)"):
        build("tv:densenet121", "deeplabv3plus")
    with pytest.raises(ConfigError, match="smp:vgg11 cannot be dilated"):
        build("smp:vgg11", "deeplabv3")
    with pytest.raises(ConfigError, match="timm:test_vit cannot be dilated"):
        build("timm:test_vit", "deeplabv3")


def test_input_is_padded_to_the_stride_and_logits_cropped_back():
    model = build("timm:test_resnet", "fpn").eval()
    assert model.input_divisor == 32
    x = torch.randn(1, 3, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 26, 0, 14))
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :50, :70], atol=1e-5)
    unet = build("timm:test_resnet", "unet")
    assert unet.input_divisor == 1  # smp's Unet takes any size
    pan = build("timm:test_resnet", "pan").eval()
    with torch.no_grad():  # PAN pools its deepest map further: small inputs are padded up to its minimum
        assert pan(torch.randn(1, 3, 20, 24)).shape == (1, 3, 20, 24)
    assert pan.min_input_size > 16


def test_pspnet_uses_only_the_levels_it_needs():
    model = build("timm:test_resnet", "pspnet")
    assert model.backbone.reductions == [2, 4, 8]
    smp_view = build("smp:resnet18", "pspnet").backbone
    assert smp_view.reductions == [2, 4, 8]
    assert not any(
        n.startswith("encoder.layer3.") or n.startswith("encoder.layer4.") for n, _ in smp_view.named_parameters()
    )


def test_plan_levels():
    assert plan_levels([2, 4, 8, 16, 32], 5, 32) == [0, 1, 2, 3, 4]
    assert plan_levels([4, 8, 16, 32], 5, 32) == [None, 0, 1, 2, 3]
    assert plan_levels([1, 2, 4, 8, 16, 32], 5, 32) == [1, 2, 3, 4, 5]  # VGG's stride-1 map is not used
    assert plan_levels([2, 4, 8, 8, 8], 5, 8) == [0, 1, 2, 3, 4]
    assert plan_levels([2, 4, 8, 16, 32], 3, 8) == [0, 1, 2]
    assert plan_levels([16] * 6, 5, 32) == [None, None, None, 5, None]


def test_safe_batchnorm_uses_running_statistics_for_one_value_per_channel():
    bn = SafeBatchNorm2d(4)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(1, 4, 1, 1)
    bn.train()
    y = bn(x)
    assert torch.allclose(y, (x - 1.0) / torch.sqrt(torch.tensor(4.0 + bn.eps)))
    assert torch.equal(bn.running_mean, torch.ones(4))  # statistics unchanged
    z = bn(torch.randn(2, 4, 3, 3))  # batch statistics as usual
    assert not torch.equal(bn.running_mean, torch.ones(4)) and z.shape == (2, 4, 3, 3)


def test_not_an_smp_segmentation_model_and_decoder_is_not_pretrained():
    model = build("smp:mobilenet_v2", "unet")
    assert not any(isinstance(m, smp.base.SegmentationModel) for m in model.modules())
    grouped = {n for g in model.layer_groups() for n in g}
    assert grouped == {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    assert all(not n.startswith("head.") for n in grouped)


def test_engine_batchnorm_policy_is_not_overridden_by_smp():
    # smp's SegmentationModel.train() can keep a frozen encoder's BatchNorm in eval after unfreezing; ours is a plain
    # module, so the engine's policy alone decides: eval while frozen, train again once unfrozen.
    from transferkit.engine.batchnorm import set_batchnorm_modes

    model = build("smp:mobilenet_v2", "unet")
    encoder_bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.train()
    set_batchnorm_modes(model, "eval-when-frozen")
    assert encoder_bns and not any(m.training for m in encoder_bns)
    assert all(m.training for m in model.head.modules() if isinstance(m, nn.BatchNorm2d))
    for p in model.backbone.parameters():
        p.requires_grad_(True)
    model.train()
    set_batchnorm_modes(model, "eval-when-frozen")
    assert all(m.training for m in encoder_bns)


def test_custom_head_on_a_feature_backbone():
    class Last(nn.Module):
        def __init__(self, backbone, num_classes):
            super().__init__()
            self.conv = nn.Conv2d(backbone.channels[-1], num_classes, 1)

        def forward(self, features):
            return self.conv(features[-1])

    model = tk.create_model("timm:test_resnet", 3, kind="segmenter", head=Last, pretrained=False)
    assert model(torch.randn(1, 3, 40, 44)).shape == (1, 3, 40, 44)
    tk.register_head("test-last", Last, tasks=("semantic-segmentation",))
    assert "test-last" in tk.list_heads(task="semantic-segmentation")
    named = tk.create_model("tv:resnet18", 2, kind="segmenter", head="test-last", pretrained=False)
    assert named(torch.randn(1, 3, 33, 33)).shape == (1, 2, 33, 33)


def test_arch_specs_come_from_the_installed_classes():
    assert set(ARCHS) == set(ALL_ARCHS)
    assert ARCHS["deeplabv3"].output_stride({}) == 8
    assert ARCHS["deeplabv3plus"].output_stride({}) == 16
    assert ARCHS["pspnet"].levels({}) == (3, 8) and ARCHS["pspnet"].output_stride({}) == 32
    assert ARCHS["unet"].divisible is False and ARCHS["fpn"].divisible is True
