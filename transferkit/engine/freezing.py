"""Freezing strategies: how many of the backbone's layer groups train in each epoch.

A strategy answers one question, ``trainable_groups(epoch, num_groups)``: the number of *top* backbone layer
groups that train in that (0-based) epoch. The engine turns the answer into ``requires_grad`` flags, optimizer
param groups (frozen parameters are never in the optimizer) and eval-mode BatchNorm for frozen layers.
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import ConfigError


class FreezeStrategy:
    """Base class; subclass and override `trainable_groups` for a custom schedule.

    Example:
        >>> class TopTwoAfterFirstEpoch(FreezeStrategy):
        ...     def trainable_groups(self, epoch, num_groups):
        ...         return 0 if epoch == 0 else 2
    """

    #: True if the trainable set can change during training (DDP then needs find_unused_parameters).
    changes_during_training: bool = False

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        raise NotImplementedError


class NoFreeze(FreezeStrategy):
    """Everything trains (full fine-tuning)."""

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        return num_groups


class FreezeBackbone(FreezeStrategy):
    """Only the head trains (linear probe); frozen BatchNorm layers keep their running statistics."""

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        return 0


class TopLayers(FreezeStrategy):
    """Only the top `n` backbone layer groups (and the head) train, e.g. the last 2 transformer layers."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ConfigError(f"TopLayers(n={n}) needs n >= 0.")
        self.n = n

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        return min(self.n, num_groups)


class BackboneThenUnfreeze(FreezeStrategy):
    """Head only for `unfreeze_epoch` epochs, then the whole backbone joins (at the lower backbone LR)."""

    changes_during_training = True

    def __init__(self, unfreeze_epoch: int = 1) -> None:
        if unfreeze_epoch < 0:
            raise ConfigError(f"unfreeze_epoch={unfreeze_epoch} must be >= 0.")
        self.unfreeze_epoch = unfreeze_epoch

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        return 0 if epoch < self.unfreeze_epoch else num_groups


class GradualUnfreeze(FreezeStrategy):
    """ULMFiT-style: head only until `start_epoch`, then `groups_per_epoch` more top groups each epoch."""

    changes_during_training = True

    def __init__(self, start_epoch: int = 1, groups_per_epoch: int = 1) -> None:
        if start_epoch < 0 or groups_per_epoch < 1:
            raise ConfigError("GradualUnfreeze needs start_epoch >= 0 and groups_per_epoch >= 1.")
        self.start_epoch = start_epoch
        self.groups_per_epoch = groups_per_epoch

    def trainable_groups(self, epoch: int, num_groups: int) -> int:
        return max(0, min(num_groups, (epoch - self.start_epoch + 1) * self.groups_per_epoch))


def resolve_freeze(freeze: object, unfreeze_epoch: int = 1) -> FreezeStrategy:
    """Maps a `freeze=` option to a strategy: "none", "backbone", "backbone-then-unfreeze", "gradual", "top-N"."""
    if isinstance(freeze, FreezeStrategy):
        return freeze
    if freeze is None or freeze is False or freeze == "none":
        return NoFreeze()
    if freeze is True or freeze == "backbone":
        return FreezeBackbone()
    if freeze == "backbone-then-unfreeze":
        return BackboneThenUnfreeze(unfreeze_epoch)
    if freeze == "gradual":
        return GradualUnfreeze(start_epoch=unfreeze_epoch)
    if isinstance(freeze, str) and (m := re.fullmatch(r"top-(\d+)", freeze)):
        return TopLayers(int(m.group(1)))
    raise ConfigError(
        f"freeze={freeze!r} is not a strategy. Use 'none', 'backbone', 'backbone-then-unfreeze', 'gradual', "
        "'top-N' (e.g. 'top-2'), or a FreezeStrategy object."
    )


def set_frozen_batchnorm_eval(module: nn.Module) -> None:
    """Puts norm layers whose parameters are all frozen into eval mode, so running stats stay as pretrained."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
