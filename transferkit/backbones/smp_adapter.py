"""segmentation-models-pytorch encoders: ``smp:resnet34``, ``smp:mobilenet_v2``, ``smp:mit_b0``, ``smp:tu-<timm>``.

An ``smp:`` backbone is an encoder for semantic segmentation only: `create` returns a
:class:`~transferkit.backbones.base.FeatureBackbone` (a list of maps at increasing strides), not a pooled backbone.

- smp's own encoders (``smp.encoders.get_encoder_names()``) are built with ``weights=None``; ``pretrained=True``
  then asks smp for its ImageNet weights (smp downloads them from the Hugging Face Hub, so offline this is a
  WeightsError that says to pass a local file); ``pretrained="path"`` loads a local file with transferkit's loader:
  an encoder state dict, or a classification checkpoint of the same network (smp's resnet, resnext, vgg, densenet
  and mobilenet_v2 encoders are torchvision's classes, so torchvision's ImageNet files load as they are).
- ``tu-<name>`` is the timm model ``<name>`` built by transferkit's timm adapter (timm's weights, pretrained_cfg
  mean/std and layer groups), exactly as ``timm:<name>``: the classification weights are loaded before the
  multi-scale view is taken, which smp's own timm wrapper cannot do with a local classification file.

mean/std never come from smp's preprocessing helper (it downloads a config): they are the values smp's encoders
were trained with (ImageNet's for most; 0.5 for the Inception/Xception and TF-Lite families; DPN's own).

This module is imported only when an ``smp:`` backbone is asked for.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, UnknownNameError, WeightsError
from ..registry import unknown_name_message
from .base import FeatureBackbone
from .weights import load_weights

_HALF = (0.5, 0.5, 0.5)
# Normalisation of smp's ImageNet weights by encoder family (as smp's pretrained settings listed them before
# they moved to a downloaded config.json); everything else uses ImageNet's mean/std.
_MEAN_STD = {
    ("inceptionv4", "inceptionresnetv2", "xception", "timm-tf_efficientnet_lite"): (_HALF, _HALF),
    ("dpn",): ((124 / 255, 117 / 255, 104 / 255), (1 / (0.0167 * 255),) * 3),
}
_PROBE_SIZES = (64, 224)  # a small input first; some encoders need a larger one


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        raise ConfigError(
            f"smp: backbones need segmentation-models-pytorch ({e}); install it with "
            "`pip install 'segmentation-models-pytorch>=0.5'`."
        ) from None
    return smp


class SmpEncoder(FeatureBackbone):
    """An smp encoder as a multi-scale view: ``forward(x)`` returns its maps at strides 2, 4, ... (smp's identity
    input and 0-channel placeholders are dropped), with one layer group per returned level, stem -> top.

    Levels and groups are found once by running the encoder on a small input: a parameter belongs to the first
    level whose output depends on it (autograd connectivity), so the groups follow the encoder's actual data flow
    whatever its code looks like. Submodules that the encoder never runs at this depth (smp keeps ``layer4`` of a
    depth-3 ResNet) are removed, so no idle parameter sits in the optimizer or under DDP.

    Example:
        >>> view = create("resnet18", pretrained=False)
        >>> view.channels, view.reductions
        ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
    """

    source = "smp"

    def __init__(self, encoder: nn.Module, name: str, data_config: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.name = name
        self.data_config = dict(data_config)
        keep, info, groups = _probe(encoder)
        self._keep = keep
        self.feature_info = info
        self._backbone_groups = groups

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder(x)
        return [feats[i] for i in self._keep]


def _probe(encoder: nn.Module) -> tuple[list[int], list[dict[str, Any]], list[list[nn.Parameter]]]:
    """(indices of the outputs kept, their feature_info, parameters by level) from one small forward."""
    was_training = encoder.training
    encoder.eval()  # no BatchNorm statistics change while probing
    try:
        for size in _PROBE_SIZES:
            try:
                with torch.enable_grad():
                    feats = encoder(torch.zeros(1, 3, size, size))
                break
            except RuntimeError:
                if size == _PROBE_SIZES[-1]:
                    raise
        keep = [i for i, f in enumerate(feats) if f.ndim == 4 and f.shape[1] > 0 and size // f.shape[-2] >= 2]
        info = [
            {"num_chs": int(feats[i].shape[1]), "reduction": int(round(size / feats[i].shape[-2])), "module": f"[{i}]"}
            for i in keep
        ]
        params = [p for p in encoder.parameters() if p.requires_grad]
        seen: set[int] = set()
        groups: list[list[nn.Parameter]] = []
        for i in keep:
            grads = torch.autograd.grad(feats[i].sum(), params, allow_unused=True, retain_graph=True)
            group = [p for p, g in zip(params, grads) if g is not None and id(p) not in seen]
            seen.update(id(p) for p in group)
            groups.append(group)
        del feats
        _drop_unused(encoder, seen, keep, size)
    finally:
        encoder.train(was_training)
    rest = [p for p in encoder.parameters() if id(p) not in seen]  # frozen by the caller, or kept (see above)
    if rest:
        groups[-1] += rest
    return keep, info, groups


class Skipped(nn.Module):
    """Stands in for a submodule whose output no returned level uses: passes its first input through."""

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


@torch.no_grad()
def _drop_unused(encoder: nn.Module, connected: set[int], keep: list[int], size: int) -> None:
    """Replaces by `Skipped` the outermost submodules whose parameters no returned level depends on (smp keeps
    ``layer4`` of a depth-3 ResNet, and its MobileNetV2 runs one stage past the last level it returns), so they
    are neither computed nor idle in the optimizer or under DDP. The replacement is kept only if the returned maps
    stay exactly the same."""
    dropped: list[tuple[nn.Module, str, nn.Module]] = []
    inside: set[int] = set()  # modules within one already chosen
    for parent in list(encoder.modules()):
        if id(parent) in inside:
            continue
        for child_name, child in list(parent.named_children()):
            params = list(child.parameters())
            if params and not any(id(p) in connected for p in params):
                dropped.append((parent, child_name, child))
                inside.update(id(m) for m in child.modules())
    if not dropped:
        return
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = encoder(x)
    before = [out[i] for i in keep]
    for parent, child_name, _ in dropped:
        setattr(parent, child_name, Skipped())
    try:
        after = encoder(x)
        same = all(torch.equal(a, after[i]) for a, i in zip(before, keep))
    except Exception:  # noqa: BLE001 - the encoder needs those modules after all
        same = False
    if not same:
        for parent, child_name, child in dropped:
            setattr(parent, child_name, child)


def _mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for prefixes, values in _MEAN_STD.items():
        if name.startswith(prefixes):
            return values
    return IMAGENET_MEAN, IMAGENET_STD


def _check_name(name: str) -> None:
    smp = _smp()
    names = smp.encoders.get_encoder_names()
    if name not in names:
        raise UnknownNameError(
            unknown_name_message(
                "smp encoder",
                name,
                names,
                hint="See tk.list_backbones(source='smp'); any timm model works as smp:tu-<timm name>.",
            )
        )


def create(
    name: str,
    pretrained: bool | str | Path = True,
    source: str = "smp",
    *,
    depth: int = 5,
    output_stride: int = 32,
    **kwargs: Any,
) -> FeatureBackbone:
    """Creates an smp encoder (or, for ``tu-<name>``, timm's ``<name>``) as a multi-scale view.

    Args:
        name: an smp encoder name (``"resnet34"``, ``"mobilenet_v2"``, ``"efficientnet-b0"``, ``"mit_b0"``, ...) or
            ``"tu-<timm model name>"``.
        pretrained: True for the library's ImageNet weights (smp downloads them), False for random init, or a local
            weights file (an encoder state dict, or a classification checkpoint of the same network).
        source: the prefix the name came with (always ``"smp"``).
        depth: number of levels (strides 2 .. 2**depth); 5 for every architecture but PSPNet (3).
        output_stride: 32, or 16 / 8 for a dilated encoder (DeepLab); smp's own dilation (``make_dilated``).
        **kwargs: for ``tu-`` names, passed to ``timm.create_model``; smp's own encoders take none.

    Example:
        >>> view = create("mobilenet_v2", pretrained=False)
        >>> view.channels
        [16, 24, 32, 96, 1280]
    """
    if pretrained is not True and pretrained is not False and not isinstance(pretrained, (str, Path)):
        raise ConfigError(f"pretrained={pretrained!r} must be True, False or a path to a local weights file.")
    if name.startswith("tu-"):
        return _timm_view(name, pretrained, depth, output_stride, kwargs)
    smp = _smp()
    _check_name(name)
    if kwargs:
        raise ConfigError(
            f"smp encoder {name!r} takes no options ({', '.join(sorted(kwargs))}); timm options work with "
            "smp:tu-<name> or timm:<name>."
        )
    settings = smp.encoders.encoders[name].get("pretrained_settings") or {}
    weights = ("imagenet" if "imagenet" in settings else next(iter(settings), None)) if pretrained is True else None
    if pretrained is True and weights is None:
        raise WeightsError(f"smp lists no pretrained weights for encoder {name!r}; pass pretrained=False or a file.")
    try:
        encoder = smp.encoders.get_encoder(
            name, in_channels=3, depth=depth, weights=weights, output_stride=output_stride
        )
    except Exception as e:
        if output_stride != 32 and _is_dilation_error(e):
            raise ConfigError(
                f"smp:{name} cannot be dilated to output stride {output_stride} ({type(e).__name__}: {e}), which the "
                "DeepLab heads need. Pick an encoder that can (smp:resnet*, smp:mobilenet_v2, smp:efficientnet-*, "
                "...) or another head."
            ) from None
        if weights is not None and isinstance(e, (OSError, ValueError, RuntimeError, KeyError)):
            raise _download_error(name, e) from e  # hub errors are OSError / ValueError subclasses
        raise
    if isinstance(pretrained, (str, Path)):
        # before the probe drops unused modules: the file holds every layer of the network
        load_weights(encoder, pretrained)
    mean, std = _mean_std(name)
    data_config = {"input_size": (3, 224, 224), "mean": mean, "std": std, "interpolation": "bilinear"}
    return SmpEncoder(encoder, name, data_config)


def _is_dilation_error(e: BaseException) -> bool:
    # smp raises ValueError("... does not support dilated mode ...") or, without get_stages, NotImplementedError
    return isinstance(e, NotImplementedError) or (isinstance(e, ValueError) and "dilat" in str(e).lower())


def _download_error(name: str, e: BaseException) -> WeightsError:
    return WeightsError(
        f"Could not get smp's pretrained weights for encoder {name!r} ({type(e).__name__}: {str(e)[:300]}). Offline? "
        "Pass a local weights file as pretrained='path/to/weights.pth' (an encoder state dict or a classification "
        "checkpoint of the same network, e.g. torchvision's ImageNet file for resnet/vgg/densenet/mobilenet_v2), or "
        "pretrained=False."
    )


def _timm_view(name: str, pretrained: Any, depth: int, output_stride: int, kwargs: dict[str, Any]) -> FeatureBackbone:
    from .timm_adapter import create as create_timm

    timm_name = name[3:]
    if output_stride != 32:
        kwargs = {**kwargs, "output_stride": output_stride}
    backbone = create_timm(timm_name, pretrained=pretrained, **kwargs)
    indices = timm_levels([f["reduction"] for f in backbone.feature_info], depth)
    view = backbone.features(indices)
    view.source, view.name = "smp", name
    return view


def timm_levels(reductions: Sequence[int], depth: int) -> list[int]:
    """Indices of the levels smp's timm wrapper would return for `depth`: the first `depth` stride steps
    (2, 4, ..., 2**depth; dilated levels count as steps), without a stride-1 level."""
    kept = [i for i, r in enumerate(reductions) if r >= 2]
    first = reductions[kept[0]] if kept else 2
    steps = depth - (1 if first >= 4 else 0)  # transformer-style encoders start at stride 4
    return kept[: max(1, steps)]


def list_names(pattern: str | None = None, source: str = "smp") -> list[str]:
    """smp's encoder names plus ``tu-<timm name>`` for every timm model, filtered by a glob `pattern`.

    Example:
        >>> "mobilenet_v2" in list_names("mobilenet*")
        True
    """
    smp = _smp()
    import timm

    names = list(smp.encoders.get_encoder_names()) + [f"tu-{n}" for n in timm.list_models()]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]
