"""NHWC ("channels_last") memory for conv nets, as timm's ``--channels-last`` does.

Convolutions pick their output layout from their weights, so converting the model is enough: every feature map
after the first conv is NHWC and the inputs need no change. On the CPU (oneDNN) a training step of
EfficientNet-Lite0 at 64 px takes about half the time; ResNets and smp models gain 5-20 %
(``benchmarks/channels_last.py``). The values a layer computes are the same up to floating-point summation order.

A custom head or decoder that flattens a feature map with ``.view(n, -1)`` fails under NHWC ("view size is not
compatible with input tensor's size and stride"): use ``.reshape``/``.flatten`` there, or pass
``channels_last=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def wants_channels_last(setting: bool | str, task: Any) -> bool:
    """Whether the run asks for NHWC: ``"auto"`` follows the task (image classification and segmentation)."""
    if setting == "auto":
        return bool(getattr(task, "channels_last_auto", False))
    return bool(setting)


def apply_channels_last(model: nn.Module, setting: bool | str, task: Any) -> bool:
    """Converts `model`'s 4-D weights to NHWC in place when the run asks for it and the model has 2-D convs.

    Returns whether it did (a model without ``nn.Conv2d``, a text encoder for instance, is left alone).

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> apply_channels_last(m, True, task=None), m[0].weight.is_contiguous(memory_format=torch.channels_last)
        (True, True)
    """
    if not wants_channels_last(setting, task):
        return False
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


@torch.no_grad()
def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Gives every per-parameter optimizer tensor (Adam's moments, SGD's momentum) its parameter's memory layout.

    A checkpoint stores tensors contiguous, so a resumed optimizer would hold NCHW moments for NHWC weights. The
    values are the same, but element-wise kernels over mixed layouts round differently from the uninterrupted run
    (no bit-identical resume) and run slower."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for key, t in state.items():
                if torch.is_tensor(t) and t.shape == p.shape and t.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=t.dtype).copy_(t)  # empty_like keeps p's strides
