"""BatchNorm policies for the pretrained layers.

- ``eval-when-frozen``: BatchNorm trains with its layer and keeps its pretrained running statistics (eval mode)
  while the layer is frozen. The default for classification.
- ``train``: BatchNorm always updates its running statistics, also in frozen layers: the statistics adapt to the
  new data even when the weights do not (a linear probe on a shifted domain).
- ``frozen``: BatchNorm of the pretrained layers becomes torchvision's ``FrozenBatchNorm2d`` (statistics and affine
  fixed, no parameters): torchvision's detection recipe for small batches, where batch statistics are noise.
"""

from __future__ import annotations

from torch import nn

from ..config import BATCHNORM_POLICIES
from ..errors import ConfigError


def resolve_policy(policy: str, task_default: str = "eval-when-frozen") -> str:
    if policy not in BATCHNORM_POLICIES:
        raise ConfigError(f"batchnorm={policy!r} is invalid; expected one of {BATCHNORM_POLICIES}.")
    return task_default if policy == "auto" else policy


def freeze_pretrained_batchnorm(model: nn.Module, pretrained_names: set[str]) -> int:
    """Replaces every BatchNorm2d whose parameters are all pretrained with a FrozenBatchNorm2d (in place), and
    timm's BatchNormAct2d (BatchNorm + activation, in EfficientNets and MobileNetV3s) with timm's
    FrozenBatchNormAct2d; returns how many were replaced. Statistics and affine parameters are copied, so outputs in
    eval mode do not change."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    replaced = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            timm_norm_act = type(child).__name__ in ("BatchNormAct2d", "SyncBatchNormAct")
            if type(child) is not nn.BatchNorm2d and not isinstance(child, nn.SyncBatchNorm) and not timm_norm_act:
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            own = [f"{full}.{n}" for n, _ in child.named_parameters(recurse=False)]
            if not own or not all(n in pretrained_names for n in own):
                continue
            if timm_norm_act:
                from timm.layers import freeze_batch_norm_2d

                frozen = freeze_batch_norm_2d(child)
            else:
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            frozen.to(child.weight.device)
            setattr(parent, child_name, frozen)
            replaced += 1
    return replaced


def set_batchnorm_modes(model: nn.Module, policy: str) -> None:
    """After ``model.train()``: eval mode for norm layers of frozen pretrained layers, unless the policy is "train"
    (under "frozen" this covers the norm layers FrozenBatchNorm2d cannot replace, e.g. BatchNorm1d)."""
    if policy == "train":
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
