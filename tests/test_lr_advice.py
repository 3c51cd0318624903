"""The learning-rate sanity warning: which backbone family, and which rates are far outside its known band."""

from __future__ import annotations

import doctest

import pytest
from torch import nn

from transferkit.backbones import create_backbone, lr_advice
from transferkit.backbones.lr_advice import backbone_family, rate_warning


def test_families():
    assert backbone_family(create_backbone("timm:test_resnet", pretrained=False)) == "cnn"
    assert backbone_family(create_backbone("timm:test_efficientnet", pretrained=False)) == "cnn"
    assert backbone_family(create_backbone("timm:test_vit", pretrained=False)) == "vision-transformer"
    hf = type("HF", (nn.Module,), {"source": "hf"})()
    assert backbone_family(hf) == "text-encoder"
    assert backbone_family(nn.Sequential(nn.Linear(3, 4), nn.ReLU())) is None


@pytest.mark.parametrize(
    ("family", "lr", "mult"),
    [("cnn", 3e-4, 1), ("cnn", 1e-3, 1), ("cnn", 3e-3, 3), ("text-encoder", 2e-5, 20), ("text-encoder", 2e-4, 5)],
)
def test_rates_in_the_measured_bands_pass(family, lr, mult):
    assert rate_warning(family, lr, mult) is None


def test_rates_far_outside_warn_in_one_line():
    low = rate_warning("cnn", 1e-5, 1)
    assert low and "lr=1e-05 is far below" in low and "convolutional" in low and "\n" not in low
    high = rate_warning("text-encoder", 1e-2, 20)
    assert "lr=0.01 is far above" in high and "new head trains at lr*head_lr_mult=0.2, far above" in high
    assert "head" in rate_warning("cnn", 1e-3, 100)  # the body is fine, the head is not
    assert rate_warning("vision-transformer", 1e-2, 1).startswith("lr=0.01 is far above")


def test_nothing_is_said_without_pretrained_weights_or_a_family():
    assert rate_warning("cnn", 1e-6, 1, pretrained=False) is None
    assert rate_warning(None, 1e-6, 1) is None


def test_doctests():
    assert doctest.testmod(lr_advice, optionflags=doctest.ELLIPSIS).failed == 0
