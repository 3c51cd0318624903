"""The backbone contract every adapter fulfils."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """A feature extractor with the metadata transfer learning needs.

    Adapters subclass this (or set the same attributes on a wrapped module):

    - ``forward(...)`` returns pooled features of shape ``(batch, num_features)``.
    - ``num_features``: width of the pooled features.
    - ``feature_info``: list of ``{"num_chs": int, "reduction": int, "module": str}``, one per stage output.
    - ``data_config``: ``{"input_size": (C, H, W), "mean": (...), "std": (...), "interpolation": str,
      "crop_pct": float}`` for images; ``{"max_length": int}`` for text.
    - ``layer_groups()``: lists of parameter names (relative to this module), ordered stem -> top. Every
      parameter appears in exactly one group. Freezing and layer-wise LR decay work on these groups.
    - ``source`` and ``name``: where it came from, e.g. ``"timm"`` and ``"resnet18"``.
    - ``features(out_indices=None)``: the multi-scale view for dense tasks (a :class:`FeatureBackbone` sharing
      these weights), where the source supports one.
    """

    num_features: int
    feature_info: list[dict[str, Any]]
    data_config: dict[str, Any]
    source: str = ""
    name: str = ""

    def layer_groups(self) -> list[list[str]]:
        return [[n for n, _ in self.named_parameters()]]

    def features(self, out_indices: Sequence[int] | None = None) -> FeatureBackbone:
        """The multi-scale view: maps at the strides of ``feature_info[i]`` for i in `out_indices` (default: all).

        The view shares this backbone's (already loaded) parameters, so one classification weights file serves a
        classifier, a segmentation encoder and a detection body alike. It may drop layers it does not need (the
        classifier, the last norm): use the backbone either pooled or through its view, not both.
        """
        from ..errors import ConfigError

        raise ConfigError(
            f"{self.source or type(self).__name__}:{self.name} has no multi-scale view, so it cannot serve a dense "
            "task (segmentation, detection). Use a timm:, tv: or smp: image backbone."
        )

    def extra_repr(self) -> str:
        return f"source={self.source!r}, name={self.name!r}, num_features={self.num_features}"


class FeatureBackbone(nn.Module):
    """A backbone's multi-scale view: ``forward(x)`` returns a list of NCHW maps at increasing strides.

    Attributes:
        feature_info: one ``{"num_chs", "reduction", "module"}`` per returned map.
        channels, reductions: the same as lists, e.g. ``[24, 32, 96, 1280]`` and ``[4, 8, 16, 32]``.
        data_config: the backbone's input size, mean and std.
        source, name: as the backbone's.

    ``layer_groups()`` lists the view's parameter names by the backbone's own groups (stem -> top), so freezing,
    ``top-N`` and layer-wise LR decay mean the same stage counts in every domain.
    """

    feature_info: list[dict[str, Any]]
    data_config: dict[str, Any]
    source: str = ""
    name: str = ""

    def _init_view(self, backbone: nn.Module, out_indices: Sequence[int] | None, groups: list[list[str]]) -> list[int]:
        """Stores metadata and the backbone's groups (read before any pruning); returns the checked indices."""
        info = list(backbone.feature_info)
        indices = list(range(len(info))) if out_indices is None else [int(i) for i in out_indices]
        if not indices or any(not 0 <= i < len(info) for i in indices) or indices != sorted(set(indices)):
            from ..errors import ConfigError

            raise ConfigError(
                f"out_indices={out_indices!r} must be increasing indices into the {len(info)} feature levels of "
                f"{backbone.source}:{backbone.name} (strides {[f['reduction'] for f in info]})."
            )
        self.feature_info = [dict(info[i]) for i in indices]
        self.data_config = dict(backbone.data_config)
        self.source, self.name = backbone.source, backbone.name
        params = dict(backbone.named_parameters())
        self._backbone_groups = [[params[n] for n in g if n in params] for g in groups]
        return indices

    @property
    def channels(self) -> list[int]:
        return [int(f["num_chs"]) for f in self.feature_info]

    @property
    def reductions(self) -> list[int]:
        return [int(f["reduction"]) for f in self.feature_info]

    def layer_groups(self) -> list[list[str]]:
        names = {id(p): n for n, p in self.named_parameters()}
        groups = [[names[id(p)] for p in g if id(p) in names] for g in self._backbone_groups]
        grouped = {n for g in groups for n in g}
        rest = [n for n in names.values() if n not in grouped]  # e.g. a norm added by the view
        groups = [g for g in groups if g]
        if rest and groups:
            groups[-1] += rest
        elif rest:
            groups = [rest]
        return groups

    def extra_repr(self) -> str:
        return f"source={self.source!r}, name={self.name!r}, channels={self.channels}, reductions={self.reductions}"


def check_layer_groups(module: nn.Module, groups: list[list[str]]) -> None:
    """Asserts that `groups` partitions the parameters of `module` (used by adapters' tests)."""
    names = [n for n, _ in module.named_parameters()]
    flat = [n for g in groups for n in g]
    if sorted(flat) != sorted(names):
        missing = sorted(set(names) - set(flat))[:5]
        extra = sorted(set(flat) - set(names))[:5]
        dup = len(flat) - len(set(flat))
        raise AssertionError(f"layer groups do not partition parameters: missing={missing} extra={extra} dup={dup}")


def nearest_groups(names: list[str], prefixes: list[list[str]]) -> list[list[str]]:
    """Assigns each parameter name to the first group whose prefix list matches it (helper for adapters).

    `prefixes[i]` lists module-name prefixes of group i; names that match none go to the last group.
    """
    groups: list[list[str]] = [[] for _ in prefixes]
    for n in names:
        for i, pre in enumerate(prefixes):
            if any(n == p or n.startswith(p + ".") for p in pre):
                groups[i].append(n)
                break
        else:
            groups[-1].append(n)
    return [g for g in groups if g]


@torch.no_grad()
def probe_feature_info(model: nn.Module, stages: list[tuple[str, nn.Module]], input_size: tuple[int, int, int]):
    """Runs one dummy forward to read channels and strides of each stage output (for libraries without metadata)."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n, m in stages]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    h = input_size[1]
    return [
        {"num_chs": shapes[n][1], "reduction": max(1, round(h / shapes[n][2])), "module": n}
        for n, _ in stages
        if n in shapes and len(shapes[n]) == 4
    ]
