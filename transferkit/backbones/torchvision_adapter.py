"""torchvision classification backbones: ``tv:resnet18``, ``tv:mobilenet_v3_large``, ``tv:convnext_tiny``, ...

The classifier's last linear layer (and the dropout right before it) is removed, so ``forward`` returns the
pooled pre-logits features. Submodules keep their torchvision names, so torchvision's own state dicts load
into ``self.model`` unchanged. This module is imported only when a ``tv:`` backbone is asked for.
"""

from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, UnknownNameError, WeightsError
from ..registry import unknown_name_message
from .base import Backbone, FeatureBackbone, probe_feature_info
from .weights import HEAD_NAMES, load_weights

_CLASSIFIER_ATTRS = ("fc", "classifier", "heads", "head")
_CONTAINERS = ("features", "trunk_output", "blocks", "layers")  # expanded into one unit per child
_NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)  # convnext's LayerNorm2d is an nn.LayerNorm


class TorchvisionBackbone(Backbone):
    """A torchvision classification model without its last linear layer, kept as ``self.model``."""

    source = "tv"

    def __init__(self, model: nn.Module, name: str, num_features: int, feature_info: list[dict[str, Any]]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.num_features = num_features
        self.feature_info = feature_info
        self.data_config = _data_config(name, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features(self, out_indices: Sequence[int] | None = None) -> TorchvisionFeatures:
        """The multi-scale view: the model's stage units run in order, returning the maps of `feature_info`.

        Example:
            >>> view = create("resnet18", pretrained=False).features([1, 2, 3, 4])
            >>> view.channels, view.reductions
            ([64, 128, 256, 512], [4, 8, 16, 32])
        """
        return TorchvisionFeatures(self, out_indices)

    def layer_groups(self) -> list[list[str]]:
        """One group per stage-like unit (resnet: stem, layer1..layer4; ``features`` models: each child)."""
        groups: list[list[str]] = []
        for name, module in _units(self.model):
            names = [f"model.{name}.{n}" for n, _ in module.named_parameters()]
            if not names:
                continue
            # a lone norm layer (resnet's bn1, densenet's norm5) belongs with the layer before it
            if groups and isinstance(module, _NORMS):
                groups[-1] += names
            else:
                groups.append(names)
        direct = [f"model.{n}" for n, _ in self.model.named_parameters(recurse=False)]
        if isinstance(self.model, tvm.VisionTransformer):
            direct.append("model.encoder.pos_embedding")
        if direct:
            groups[0] = direct + groups[0]  # class token and position embedding sit with the patch embedding
        return groups


class TorchvisionFeatures(FeatureBackbone):
    """Multi-scale view of a :class:`TorchvisionBackbone`.

    torchvision's classifiers run their stage units one after the other (resnet: conv1 .. layer4; ``features``
    models: each child), so the view holds the units up to the last level it returns, under their own names
    (``model.layer1...``, ``model.features.3...``: the classification keys), and runs them in order. Swin's
    channels-last stage outputs are returned NCHW.
    """

    def __init__(self, backbone: TorchvisionBackbone, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        model = backbone.model
        if isinstance(model, (tvm.VisionTransformer, tvm.GoogLeNet, tvm.Inception3)):
            raise ConfigError(
                f"tv:{backbone.name} does not run its stages one after the other, so it has no multi-scale view; "
                "pick another tv: backbone (resnet, mobilenet, efficientnet, convnext, regnet, ...) or a timm: one."
            )
        indices = self._init_view(backbone, out_indices, backbone.layer_groups())
        wanted = [f["module"].removeprefix("model.") for f in self.feature_info]
        units = _units(model)
        names = [n for n, _ in units]
        last = max(names.index(w) for w in wanted)
        self.units = names[: last + 1]
        self.returns = set(wanted)
        self.channels_last = isinstance(model, tvm.SwinTransformer)
        self.model = nn.Module()  # the same module tree, holding only the units the view runs
        for name, unit in units[: last + 1]:
            parent = self.model
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module(leaf, unit)
        self.indices = indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name in self.units:
            x = self.model.get_submodule(name)(x)
            if name in self.returns:
                out.append(x.permute(0, 3, 1, 2) if self.channels_last else x)
        return out


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules in forward order at stage granularity."""
    if isinstance(model, tvm.VisionTransformer):
        layers = [(f"encoder.layers.{n}", m) for n, m in model.encoder.layers.named_children()]
        return [("conv_proj", model.conv_proj), *layers, ("encoder.ln", model.encoder.ln), ("heads", model.heads)]
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in _CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            units.append((name, child))
    return units


def _strip_classifier(model: nn.Module) -> int:
    """Removes the final linear layer (and dropout before it) in place; returns the pooled feature width."""
    for attr in _CLASSIFIER_ATTRS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            if isinstance(getattr(model, "dropout", None), nn.Dropout):  # googlenet, inception_v3
                model.dropout = nn.Identity()
            return head.in_features
        if isinstance(head, nn.Sequential):
            children = list(head.named_children())
            last = max(i for i, (_, m) in enumerate(children) if isinstance(m, (nn.Linear, nn.Conv2d)))
            final = children[last][1]
            keep = children[:last]
            while keep and isinstance(keep[-1][1], nn.Dropout):
                keep.pop()
            # squeezenet's 1x1-conv classifier is followed by the global pool, which the features still need
            keep += [(n, m) for n, m in children[last + 1 :] if isinstance(m, (nn.AdaptiveAvgPool2d, nn.Flatten))]
            setattr(model, attr, nn.Sequential(OrderedDict(keep)))  # same child names: state dicts still fit
            return final.in_features if isinstance(final, nn.Linear) else final.in_channels
    raise ConfigError(f"Cannot find the classifier of torchvision model {type(model).__name__}.")


def _feature_info(model: nn.Module, input_size: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Channels and strides of each stage output, the last unit per stride (like timm's feature_info)."""
    if isinstance(model, tvm.VisionTransformer):  # tokens, not maps: one entry per encoder layer, as timm does
        return [
            {"num_chs": model.hidden_dim, "reduction": model.patch_size, "module": f"model.encoder.layers.{n}"}
            for n, _ in model.encoder.layers.named_children()
        ]
    if isinstance(model, tvm.SwinTransformer):  # stage outputs are channels-last (B, H, W, C)
        embed = model.features[0][0]
        return [
            {
                "num_chs": embed.out_channels * 2**i,
                "reduction": embed.stride[0] * 2**i,
                "module": f"model.features.{j}",
            }
            for i, j in enumerate(range(1, len(model.features), 2))
        ]
    stages = []
    for name, module in _units(model):
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or name in HEAD_NAMES:
            break  # everything from the global pool on is pooled, not a feature map
        stages.append((f"model.{name}", module))
    info = probe_feature_info(model, stages, input_size)  # names carry "model.": relative to the Backbone
    by_reduction: dict[int, dict[str, Any]] = {}
    for f in info:
        # unpadded nets (inception) give 299 / 8 = 37; the nominal stride is the nearest power of two
        f["reduction"] = 2 ** round(math.log2(f["reduction"]))
        by_reduction[f["reduction"]] = f
    return [by_reduction[r] for r in sorted(by_reduction)]


def _weights_for(name: str, model: nn.Module | None = None):
    """The weights entry whose transforms describe this model's input (the DEFAULT one when it fits)."""
    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    default = enum.DEFAULT
    size = getattr(model, "image_size", None)  # ViTs accept only their own image size
    if size is None or default.transforms().crop_size[0] == size:
        return default
    return next((w for w in enum if w.transforms().crop_size[0] == size), None)


def _data_config(name: str, model: nn.Module) -> dict[str, Any]:
    weights = _weights_for(name, model)
    if weights is None:
        size = getattr(model, "image_size", 224)
        return {
            "input_size": (3, size, size),
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "interpolation": "bilinear",
            "crop_pct": 0.875,
        }
    t = weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return {
        "input_size": (3, crop, crop),
        "mean": tuple(t.mean),
        "std": tuple(t.std),
        "interpolation": t.interpolation.value,
        "crop_pct": round(crop / resize, 4),
    }


def _build(name: str, weights: Any, kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    model = tvm.get_model(name, weights=weights, **kwargs)
    return model, _strip_classifier(model)


def _check_name(name: str) -> None:
    valid = list_names()
    if name not in valid:
        hint = (
            "torchvision detection/segmentation/video models are not classification backbones."
            if name in tvm.list_models()
            else "See transferkit.list_backbones(source='tv')."
        )
        raise UnknownNameError(unknown_name_message("torchvision classification model", name, valid, hint=hint))


def create(name: str, pretrained: bool | str | Path = True, source: str = "tv", **kwargs: Any) -> TorchvisionBackbone:
    """Creates a torchvision classification model without its classifier, as a :class:`TorchvisionBackbone`.

    Args:
        name: a name from ``torchvision.models.list_models(module=torchvision.models)``, e.g. ``"resnet18"``.
        pretrained: True for torchvision's DEFAULT weights (downloaded, or from the torch hub cache), False for
            random init, or a local weights file/folder (see :func:`~transferkit.backbones.weights.load_weights`).
        source: the prefix the name came with (always ``"tv"``).
        **kwargs: passed to the torchvision builder, e.g. ``stochastic_depth_prob=0.1``.

    Example:
        >>> bb = create("resnet18", pretrained=False)
        >>> bb(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 512])
    """
    _check_name(name)
    if "num_classes" in kwargs or "weights" in kwargs:
        raise ConfigError(
            "num_classes/weights are not backbone options: use pretrained=True/False/path for weights, and pass "
            "num_classes to create_model()/finetune(), which build the head."
        )
    if pretrained is not True and pretrained is not False and not isinstance(pretrained, (str, Path)):
        raise ConfigError(f"pretrained={pretrained!r} must be True, False or a path to a local weights file.")
    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", False)  # auxiliary classifiers only matter for ImageNet training
        if pretrained is not True:
            kwargs.setdefault("init_weights", True)  # silences torchvision's FutureWarning; today's default
    try:
        model, num_features = _build(name, "DEFAULT" if pretrained is True else None, kwargs)
    except TypeError as e:
        raise ConfigError(f"torchvision model {name!r} does not accept the options {sorted(kwargs)}: {e}") from e
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained is not True:
            raise
        raise WeightsError(
            f"Could not get torchvision's pretrained weights for {name!r} ({type(e).__name__}: {e}). Offline? Pass "
            "a local weights file or folder as pretrained='path/to/weights.pth', or pretrained=False."
        ) from e
    input_size = _data_config(name, model)["input_size"]
    try:  # shapes only: a copy on the meta device costs no memory or compute
        with torch.device("meta"):
            meta, _ = _build(name, None, kwargs)
            feature_info = _feature_info(meta, input_size)
    except (NotImplementedError, RuntimeError):  # e.g. RegNet computes widths with tensors while building
        feature_info = _feature_info(model, input_size)
    backbone = TorchvisionBackbone(model, name, num_features, feature_info)
    if isinstance(pretrained, (str, Path)):
        load_weights(backbone, pretrained)
    return backbone


def list_names(pattern: str | None = None, source: str = "tv") -> list[str]:
    """torchvision classification model names, filtered by a glob `pattern`.

    Example:
        >>> "resnet18" in list_names("resnet*")
        True
    """
    names = tvm.list_models(module=tvm)
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))
