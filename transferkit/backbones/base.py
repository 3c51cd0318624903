"""The backbone contract every adapter fulfils."""

from __future__ import annotations

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
    """

    num_features: int
    feature_info: list[dict[str, Any]]
    data_config: dict[str, Any]
    source: str = ""
    name: str = ""

    def layer_groups(self) -> list[list[str]]:
        return [[n for n, _ in self.named_parameters()]]

    def extra_repr(self) -> str:
        return f"source={self.source!r}, name={self.name!r}, num_features={self.num_features}"


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
