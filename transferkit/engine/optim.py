"""Parameter groups: pretrained layer groups vs new parameters, layer-wise LR decay, no weight decay on biases and
norms.

A model tells the engine which of its parameters are pretrained through ``layer_groups()``: lists of parameter names,
ordered stem -> top. Every other parameter (a head, a neck, an FPN, a decoder) is new. ``lr`` is the rate of the
pretrained weights (as in transformers, timm and torchvision's references); new parameters train at
``lr * head_lr_mult``. A model whose ``is_pretrained`` is False (random init) trains everything at ``lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import FinetuneConfig


def pretrained_groups(model: nn.Module) -> list[list[str]]:
    """The model's pretrained layer groups (parameter names, stem -> top); [] if it declares none."""
    fn = getattr(model, "layer_groups", None)
    return [list(g) for g in fn() if g] if callable(fn) else []


def is_pretrained(model: nn.Module) -> bool:
    """Whether the model's layer groups hold pretrained weights (a model says so with ``is_pretrained``)."""
    return bool(getattr(model, "is_pretrained", True))


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that must not get weight decay: biases, norm weights, and 1-d / scalar params."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    out = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p.ndim <= 1 or isinstance(mod, norm_types) or "norm" in type(mod).__name__.lower():
                out.add(full)
    return out


class ParamGroupPlan:
    """Which parameters exist in which LR group. Built once; the engine asks for the groups it needs each time a
    freezing change makes new parameters trainable.

    Group order is fixed (head, then backbone groups top -> stem), so an optimizer rebuilt on resume has the same
    group order as one that grew group by group while unfreezing top-down.
    """

    def __init__(self, model: nn.Module, config: FinetuneConfig) -> None:
        self.config = config
        params = dict(model.named_parameters())
        self.no_decay = no_decay_names(model)
        self.backbone_groups = pretrained_groups(model)
        in_groups = {n for g in self.backbone_groups for n in g}
        if unknown := sorted(in_groups - set(params)):
            raise ValueError(f"layer_groups() names parameters the model does not have: {unknown[:5]}")
        self.head_names = [n for n in params if n not in in_groups]
        self.pretrained = is_pretrained(model) and bool(self.backbone_groups)
        self.params = params

    @property
    def num_groups(self) -> int:
        return len(self.backbone_groups)

    def backbone_lr(self, index: int) -> float:
        """LR of pretrained group `index` (0 = stem): ``lr * layer_decay ** (L - 1 - index)``."""
        decay = self.config.layer_decay or 1.0
        return self.config.lr * decay ** (self.num_groups - 1 - index)

    @property
    def head_lr(self) -> float:
        """LR of the new parameters: ``lr * head_lr_mult``, or ``lr`` when nothing is pretrained."""
        return self.config.lr * (self.config.head_lr_mult if self.pretrained else 1.0)

    def trainable_names(self, n_top: int) -> set[str]:
        """Names of parameters that train when the top `n_top` backbone groups train."""
        start = self.num_groups - n_top
        names = set(self.head_names)
        for g in self.backbone_groups[start:]:
            names.update(g)
        return names

    def set_trainable(self, n_top: int) -> None:
        names = self.trainable_names(n_top)
        for n, p in self.params.items():
            p.requires_grad_(n in names)

    def groups(self, which: list[int | str]) -> list[dict[str, Any]]:
        """Optimizer param-group dicts for "head" and/or backbone group indices, split by weight decay."""
        out = []
        for key in which:
            names = self.head_names if key == "head" else self.backbone_groups[key]
            lr = self.head_lr if key == "head" else self.backbone_lr(key)
            for wd, selected in (
                (self.config.weight_decay, [n for n in names if n not in self.no_decay]),
                (0.0, [n for n in names if n in self.no_decay]),
            ):
                ps = [self.params[n] for n in selected if self.params[n].requires_grad]
                if ps:
                    name = "head" if key == "head" else f"backbone.{key}"
                    out.append({"params": ps, "lr": lr, "base_lr": lr, "weight_decay": wd, "name": name})
        return out

    def order(self, n_top: int) -> list[int | str]:
        """Group keys trainable with `n_top` top backbone groups, in the canonical order."""
        return ["head"] + list(range(self.num_groups - 1, self.num_groups - 1 - n_top, -1))


def build_optimizer(param_groups: list[dict[str, Any]], config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with momentum over the given groups, fused where torch supports it.

    The fused kernel does the same update in one pass over all parameters of a group: measured here on a CPU, an
    optimizer step of ResNet-18 took 18 ms instead of 70-85 ms, and a small MLP's whole training step 1.2-1.4 ms
    instead of 1.8-2.3 ms. Torch versions or devices without it fall back to the standard implementation.
    """
    if config.optimizer == "sgd":
        cls, kwargs = (
            torch.optim.SGD,
            {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay},
        )
    else:
        cls, kwargs = torch.optim.AdamW, {"lr": config.lr, "betas": config.betas, "weight_decay": config.weight_decay}
    try:  # copies: a failed constructor may have written defaults into the group dicts
        return cls([dict(g) for g in param_groups], fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(param_groups, **kwargs)
