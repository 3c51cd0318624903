"""timm backbones: ``timm:resnet50``, ``timm:convnext_tiny.fb_in22k``, ``timm:vit_small_patch16_224``, ...

This module is imported only when a ``timm:`` backbone is asked for, so importing timm at the top is fine here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError, WeightsError
from ..registry import unknown_name_message
from .base import Backbone, FeatureBackbone
from .weights import load_weights

_DATA_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


class TimmBackbone(Backbone):
    """A timm model without its classifier; ``forward`` returns the pooled (pre-logits) features.

    The timm model is kept as ``self.model``, so parameter names are ``model.<timm name>``.
    """

    source = "timm"

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        # head_hidden_size is the width after timm's pre-logits (it differs from num_features for e.g. MambaOut)
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.feature_info = [
            {"num_chs": int(f["num_chs"]), "reduction": int(f["reduction"]), "module": _rel(f.get("module", ""))}
            for f in (getattr(model, "feature_info", None) or [])
            if isinstance(f, dict) and "num_chs" in f
        ]
        self.data_config = _data_config(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features of the last stage, e.g. ``(B, C, H, W)`` for CNNs, ``(B, N, C)`` for ViTs."""
        return self.model.forward_features(x)

    def features(self, out_indices: Sequence[int] | None = None) -> TimmFeatures:
        """The multi-scale view (timm's ``forward_intermediates`` on this model, pruned after the last level).

        Example:
            >>> view = create("test_resnet", pretrained=False).features()
            >>> view.reductions, [tuple(m.shape[1:]) for m in view(torch.zeros(1, 3, 64, 64))][-1]
            ([2, 4, 8, 16, 32], (96, 2, 2))
        """
        return TimmFeatures(self, out_indices)

    def layer_groups(self) -> list[list[str]]:
        """timm's own fine-grained layer grouping (``group_matcher(coarse=False)``), stem -> top."""
        from timm.models import group_parameters

        try:
            matcher = self.model.group_matcher(coarse=False)
        except (AttributeError, NotImplementedError):
            matcher = None
        if matcher:
            by_layer = group_parameters(self.model, matcher)
            groups = [by_layer[i] for i in sorted(by_layer)]
        else:  # no matcher: one group per top-level child, in registration order (stem first for timm models)
            groups = [[n for n, _ in self.model.named_parameters(recurse=False)]]
            groups += [[f"{c}.{n}" for n, _ in m.named_parameters()] for c, m in self.model.named_children()]
        return [["model." + n for n in g] for g in groups if g]


class TimmFeatures(FeatureBackbone):
    """Multi-scale view of a :class:`TimmBackbone`. Parameter names stay ``model.<timm name>`` where timm supports
    ``forward_intermediates`` (most models); other models go through timm's FeatureListNet (flattened names)."""

    def __init__(self, backbone: TimmBackbone, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        indices = self._init_view(backbone, out_indices, backbone.layer_groups())
        model = backbone.model
        if hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers"):
            try:  # drops what comes after the last level (head, final norm): no idle parameters under DDP
                self.indices = model.prune_intermediate_layers(indices, prune_norm=True, prune_head=True)
                self.model, self.getter = model, True
                return
            except (NotImplementedError, AssertionError, AttributeError):
                pass
        from timm.models._features import FeatureListNet

        self.indices, self.model, self.getter = indices, FeatureListNet(model, out_indices=tuple(indices)), False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.getter:
            return self.model.forward_intermediates(
                x, indices=self.indices, intermediates_only=True, output_fmt="NCHW"
            )
        return self.model(x)


def _rel(module: str) -> str:
    # relative to the Backbone; for a few models (hrnet, tresnet) timm names a module that does not exist as such
    return f"model.{module}" if module else "model"


def _data_config(model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    out = {k: cfg[k] for k in _DATA_KEYS if k in cfg}
    out["input_size"] = tuple(int(v) for v in out["input_size"])
    out["mean"], out["std"] = tuple(out["mean"]), tuple(out["std"])
    return out


def _check_name(name: str) -> None:
    from timm.models import is_model, parse_model_name

    try:
        prefix, _ = parse_model_name(name)
    except ValueError as e:
        raise UnknownNameError(f"Backbone 'timm:{name}' is not a valid timm model name: {e}") from None
    if prefix is None and not is_model(name):  # hf-hub:/local-dir: names are resolved by timm itself
        raise UnknownNameError(
            unknown_name_message(
                "timm model",
                name,
                timm.list_models(),
                hint="See transferkit.list_backbones(source='timm') or timm.list_models('PATTERN*').",
            )
        )


def create(name: str, pretrained: bool | str | Path = True, source: str = "timm", **kwargs: Any) -> TimmBackbone:
    """Creates a timm model without its classifier, wrapped as a :class:`TimmBackbone`.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"resnet50.a1_in1k"``) or a timm source
            prefix (``"local-dir:/models/resnet50"``).
        pretrained: True for timm's weights (downloaded, or from the Hugging Face cache), False for random init,
            or a local weights file/folder (see :func:`~transferkit.backbones.weights.load_weights`).
        source: the prefix the name came with (always ``"timm"``).
        **kwargs: passed to ``timm.create_model``, e.g. ``drop_path_rate=0.1``, ``in_chans=1``.

    Example:
        >>> bb = create("test_resnet", pretrained=False)
        >>> bb(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 96])
    """
    _check_name(name)
    if "num_classes" in kwargs:
        raise ConfigError(
            "num_classes is not a backbone option: a backbone has no classifier. Pass num_classes to "
            "create_model()/finetune(), which build the head."
        )
    from_library = pretrained is True
    try:
        model = timm.create_model(name, pretrained=from_library, num_classes=0, **kwargs)
    except TypeError as e:
        raise ConfigError(f"timm model {name!r} does not accept the options {sorted(kwargs)}: {e}") from e
    except (OSError, ValueError, RuntimeError) as e:
        if not from_library:
            raise
        # Download failures surface as OSError/ValueError subclasses from huggingface_hub, requests or urllib.
        raise WeightsError(
            f"Could not get timm's pretrained weights for {name!r} ({type(e).__name__}: {e}). Offline? Pass a "
            "local weights file or folder as pretrained='path/to/weights.safetensors', or pretrained=False."
        ) from e
    backbone = TimmBackbone(model, name)
    if isinstance(pretrained, (str, Path)):
        load_weights(backbone, pretrained, head_names=_head_names(model))
    elif pretrained is not True and pretrained is not False:
        raise ConfigError(f"pretrained={pretrained!r} must be True, False or a path to a local weights file.")
    return backbone


def _head_names(model: nn.Module) -> tuple[str, ...]:
    from .weights import HEAD_NAMES

    # timm records the classifier's module name, e.g. "fc", "head.fc", "classifier"; its first part suffices.
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    extra = classifier if isinstance(classifier, (tuple, list)) else (classifier,)
    return tuple(dict.fromkeys([*HEAD_NAMES, *(c.split(".")[0] for c in extra if c)]))


def list_names(pattern: str | None = None, source: str = "timm") -> list[str]:
    """Architectures the installed timm offers, filtered by a glob `pattern`.

    Example:
        >>> "resnet18" in list_names("resnet*")
        True
    """
    return list(timm.list_models(pattern or "*"))
