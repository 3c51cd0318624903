"""Backbone sources. A name carries its source: ``timm:resnet50``, ``tv:resnet18``, ``hf:bert-base-uncased``.

Each source's adapter module is imported only when a backbone of that source is asked for, so that
``import transferkit`` does not import timm, torchvision or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..errors import ConfigError, UnknownNameError
from ..registry import BACKBONE_SOURCES, unknown_name_message
from .base import Backbone, check_layer_groups

# source prefix -> adapter module. The module defines `create(name, pretrained, **kw) -> Backbone` and
# `list_names(pattern=None, task=None) -> list[str]`.
_IMAGE_TASKS = ("image-classification", "semantic-segmentation", "object-detection")
for _prefix, _module, _tasks in [
    ("timm", "transferkit.backbones.timm_adapter", _IMAGE_TASKS),
    ("tv", "transferkit.backbones.torchvision_adapter", _IMAGE_TASKS),
    ("smp", "transferkit.backbones.smp_adapter", ("semantic-segmentation",)),
    ("hf", "transferkit.backbones.hf_adapter", ("text-classification", "masked-lm")),
    ("hf-config", "transferkit.backbones.hf_adapter", ("text-classification", "masked-lm")),
]:
    BACKBONE_SOURCES.register(_prefix, _module, tasks=_tasks)


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; a name without a known prefix raises."""
    source, sep, rest = name.partition(":")
    if not sep or source not in BACKBONE_SOURCES:
        raise UnknownNameError(
            f"Backbone {name!r} has no known source prefix. Write it as SOURCE:NAME with SOURCE one of "
            f"{', '.join(BACKBONE_SOURCES)}, e.g. 'timm:resnet18', 'tv:resnet18', 'hf:bert-base-uncased'."
        )
    if not rest:
        raise UnknownNameError(f"Backbone {name!r} names no model after {source + ':'!r}.")
    return source, rest


def _adapter(source: str):
    return importlib.import_module(BACKBONE_SOURCES.get(source))


def create_backbone(name: Any, pretrained: bool | str = True, **kwargs: Any) -> nn.Module:
    """Creates a backbone from a source-prefixed name, or checks and returns a user's nn.Module.

    Args:
        name: ``"timm:NAME"``, ``"tv:NAME"``, ``"hf:NAME_OR_FOLDER"``, or an ``nn.Module`` backbone that has
            ``num_features`` (and optionally ``data_config``, ``layer_groups()``).
        pretrained: True for the library's own weights, False for random init, or a local weights path.

    Example:
        >>> bb = create_backbone("timm:test_resnet", pretrained=False)
        >>> bb.num_features
        96
    """
    if isinstance(name, nn.Module):
        return as_backbone(name)
    if not isinstance(name, str):
        raise ConfigError(f"backbone={name!r} must be a name such as 'timm:resnet18' or an nn.Module.")
    source, model_name = split_name(name)
    return _adapter(source).create(model_name, pretrained=pretrained, source=source, **kwargs)


def list_backbones(pattern: str | None = None, task: str | None = None, source: str | None = None) -> list[str]:
    """Source-prefixed backbone names that the installed libraries offer.

    Args:
        pattern: a glob on the name without prefix, e.g. ``"resnet*"``.
        task: only sources that serve this task, e.g. ``"image-classification"``.
        source: only this source, e.g. ``"timm"``.

    Example:
        >>> "timm:resnet18" in list_backbones("resnet*", task="image-classification")
        True
    """
    if source is not None and source not in BACKBONE_SOURCES:
        raise UnknownNameError(unknown_name_message("backbone source", source, list(BACKBONE_SOURCES)))
    names: list[str] = []
    for prefix in BACKBONE_SOURCES.list(**({"tasks": task} if task else {})):
        if source is not None and prefix != source:
            continue
        try:
            adapter = _adapter(prefix)
        except ImportError as e:
            if source is not None:  # asked for this source by name: say what is missing
                raise ConfigError(f"Backbone source {prefix!r} needs a library that is not installed ({e}).") from None
            continue  # listing everything: a source whose optional library is missing has nothing to offer
        names += [f"{prefix}:{n}" for n in adapter.list_names(pattern=pattern, source=prefix)]
    return names


class ModuleBackbone(Backbone):
    """Wraps a user's feature extractor that lacks the Backbone metadata."""

    source = "module"

    def __init__(self, module: nn.Module, num_features: int) -> None:
        super().__init__()
        self.module = module
        self.name = type(module).__name__
        self.num_features = num_features
        self.feature_info = list(getattr(module, "feature_info", []) or [])
        self.data_config = dict(getattr(module, "data_config", {}) or {})

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def layer_groups(self) -> list[list[str]]:
        if hasattr(self.module, "layer_groups"):
            return [["module." + n for n in g] for g in self.module.layer_groups()]
        children = self.module.named_children()
        groups = [[f"module.{c}.{n}" for n, _ in child.named_parameters()] for c, child in children]
        groups = [g for g in groups if g]
        direct = [f"module.{n}" for n, _ in self.module.named_parameters(recurse=False)]
        return ([direct] if direct else []) + groups


def as_backbone(module: nn.Module) -> nn.Module:
    """Returns `module` itself if it already fulfils the Backbone contract, else a ModuleBackbone around it."""
    if isinstance(module, Backbone):
        return module
    num = getattr(module, "num_features", None)
    if not isinstance(num, int):
        raise ConfigError(
            f"A custom backbone ({type(module).__name__}) must have an integer attribute `num_features` "
            "(the width of the pooled features it returns)."
        )
    return ModuleBackbone(module, num)


__all__ = ["Backbone", "as_backbone", "check_layer_groups", "create_backbone", "list_backbones", "split_name"]
