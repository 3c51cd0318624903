"""The segmentation model: a multi-scale backbone (pretrained) + a segmentation head (new), any input size.

``create_model(backbone, num_classes, kind="segmenter", head="unet")`` builds it. The backbone is a
:class:`~transferkit.backbones.base.FeatureBackbone`: the ``features()`` view of a ``timm:`` or ``tv:``
backbone (so one classification weights file initialises a classifier and a segmentation encoder alike), or an
``smp:`` encoder. Its layer groups are the model's pretrained groups (freezing, ``top-N``, layer decay, ``lr``);
the decoder and segmentation head are new and train at ``lr * head_lr_mult``.

Every smp architecture but Unet needs inputs whose height and width are multiples of the encoder's output
stride (32; 16 for DeepLabV3+ and PAN, 8 for DeepLabV3): the model pads the input (bottom and right, with 0 =
the mean colour after normalisation) and crops the logits back, so any size works.

Architectures that need a dilated encoder (DeepLabV3: output stride 8, DeepLabV3+ and PAN: 16) get one where
the backbone allows it: timm builds the model with ``output_stride`` (its own dilation), smp encoders use smp's
``make_dilated``, and torchvision views have the strides of their deeper units replaced by dilation (as smp does
for its torchvision-derived encoders). Other backbones raise a ConfigError naming the fix.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone, split_name
from ..backbones.base import FeatureBackbone
from ..errors import ConfigError, UnknownNameError
from ..heads import build_head
from ..registry import HEADS, unknown_name_message
from . import MODELS

TASK = "semantic-segmentation"
_PROBE = 64  # side of the dummy input used to check strides after dilation


class SegmentationModel(nn.Module):
    """``head([x, *backbone(x)])`` at any input size: logits ``(B, K, H, W)`` for an input ``(B, 3, H, W)``.

    Args:
        backbone: a FeatureBackbone (pretrained: its ``layer_groups()`` are the model's).
        head: maps ``[x, level_1, ..., level_n]`` to logits of any spatial size (resized to the input's).
        is_pretrained: whether the backbone holds pretrained weights (False: everything trains at ``lr``).
        input_divisor: the head's input multiple (padded to); default: the head's ``input_divisor``, else the
            backbone's largest stride.

    Example:
        >>> model = create_model("timm:test_resnet", 3, kind="segmenter", head="fpn", pretrained=False)
        >>> model(torch.zeros(1, 3, 45, 61)).shape
        torch.Size([1, 3, 45, 61])
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, is_pretrained: bool = True, input_divisor: int | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.is_pretrained = is_pretrained
        if input_divisor is None:
            input_divisor = getattr(head, "input_divisor", None) or max(getattr(backbone, "reductions", [1]) or [1])
        self.input_divisor = int(input_divisor)
        self.min_input_size = int(getattr(head, "min_input_size", 1))  # smaller inputs are padded up to it

    @property
    def data_config(self) -> dict[str, Any]:
        return dict(getattr(self.backbone, "data_config", {}) or {})

    def layer_groups(self) -> list[list[str]]:
        """The backbone's layer groups (pretrained, stem -> top); the decoder and segmentation head are new."""
        groups = self.backbone.layer_groups() if hasattr(self.backbone, "layer_groups") else []
        return [[f"backbone.{n}" for n in g] for g in groups]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        d, least = self.input_divisor, self.min_input_size
        pad_h, pad_w = max(least - h, (-h) % d), max(least - w, (-w) % d)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = self.head([x, *self.backbone(x)])
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w] if (pad_h or pad_w) else logits


@MODELS.register("segmenter")
def build_segmenter(
    backbone: Any,
    num_classes: int | None,
    *,
    head: Any = None,
    pretrained: bool | str = True,
    head_kwargs: dict[str, Any] | None = None,
    default_head: str = "unet",
    **backbone_kwargs: Any,
) -> SegmentationModel:
    """A SegmentationModel: `backbone`'s multi-scale view (levels and dilation as `head` needs) + `head`.

    Args:
        backbone: ``"timm:NAME"``, ``"tv:NAME"``, ``"smp:NAME"`` / ``"smp:tu-NAME"``, a FeatureBackbone, or a
            Backbone with ``features()``.
        num_classes: K.
        head: a segmentation head name (``tk.list_heads(task="semantic-segmentation")``), an nn.Module, or a
            factory ``(feature_backbone, num_classes, **kw)``.
        pretrained: True (the library's weights), False, or a local weights file.
        head_kwargs: options of the head (for smp heads, the smp class's, e.g. ``decoder_channels``).
        **backbone_kwargs: passed to the backbone's library (timm/torchvision builders).

    Example:
        >>> model = build_segmenter("tv:mobilenet_v2", 2, head="deeplabv3plus", pretrained=False)
        >>> model.backbone.reductions
        [2, 4, 8, 16, 16]
    """
    from ..heads import segmentation as seg_heads  # registers the smp heads; a clear error without smp

    if num_classes is None or int(num_classes) < 1:
        raise ConfigError(f"A segmentation model needs num_classes >= 1, got {num_classes!r}.")
    seg = HEADS.list(tasks=TASK)
    if head is None:  # create_model's generic default ("linear") is a classification head
        head = default_head if default_head in seg else "unet"
    kwargs = dict(head_kwargs or {})
    spec = None
    if isinstance(head, str):
        if head not in seg:
            hint = "See tk.list_heads(task='semantic-segmentation')."
            if head in HEADS:
                raise ConfigError(f"head={head!r} is a head for pooled features, not for segmentation. {hint}")
            raise UnknownNameError(unknown_name_message("segmentation head", head, seg, hint=hint))
        spec = HEADS.meta(head).get("spec")
        if spec is not None:
            seg_heads.check_kwargs(spec, kwargs)  # before the backbone is built (and maybe downloaded)
    view = feature_backbone(backbone, pretrained, spec, kwargs, backbone_kwargs)
    head_module = build_head(head, view, int(num_classes), default=default_head, **kwargs)
    loaded = pretrained is not False if isinstance(backbone, str) else getattr(backbone, "is_pretrained", True)
    return SegmentationModel(view, head_module, is_pretrained=bool(loaded))


def feature_backbone(
    backbone: Any, pretrained: bool | str, spec: Any, head_kwargs: dict[str, Any], backbone_kwargs: dict[str, Any]
) -> nn.Module:
    """The multi-scale backbone for a head: the levels it uses, dilated to the output stride it needs."""
    stride = spec.output_stride(head_kwargs) if spec is not None else 32
    depth = (spec.backbone_depth or spec.levels(head_kwargs)[0]) if spec is not None else 5
    head_name = getattr(spec, "name", "the head")
    if isinstance(backbone, str):
        source, name = split_name(backbone)
        if source == "smp" and not name.startswith("tu-"):
            return create_backbone(backbone, pretrained, depth=depth, output_stride=stride, **backbone_kwargs)
        if source in ("timm", "smp"):
            view = _timm_view(name.removeprefix("tu-"), pretrained, spec, stride, head_kwargs, backbone_kwargs)
            if source == "smp":
                view.source, view.name = "smp", name
            return view
        bb = create_backbone(backbone, pretrained, **backbone_kwargs)
        if source == "tv":
            return _torchvision_view(bb, spec, stride, head_kwargs, head_name)
        return _view_of(bb, spec, stride, head_kwargs, head_name)
    if isinstance(backbone, FeatureBackbone) or (hasattr(backbone, "reductions") and hasattr(backbone, "channels")):
        return backbone
    if isinstance(backbone, nn.Module) and callable(getattr(backbone, "features", None)):
        return _view_of(backbone, spec, stride, head_kwargs, head_name)
    raise ConfigError(
        f"backbone={backbone!r} cannot serve semantic segmentation: pass a timm:, tv: or smp: name, a FeatureBackbone "
        "(backbone.features()), or a Backbone with a features() view."
    )


def _levels(bb: nn.Module) -> list[int]:
    return [int(f["reduction"]) for f in bb.feature_info]


def _select(bb: nn.Module, spec: Any, head_kwargs: dict[str, Any], stride: int | None) -> list[int]:
    reductions = _levels(bb)
    if spec is None:  # a custom head: every level at stride >= 2
        return [i for i, r in enumerate(reductions) if r >= 2]
    indices = spec.select(reductions, head_kwargs, stride)
    if not indices:
        raise ConfigError(
            f"{bb.source}:{bb.name} has no feature maps {spec.name!r} can use (strides {reductions}); pick another "
            "backbone."
        )
    return indices


def _view_of(bb: nn.Module, spec: Any, stride: int, head_kwargs: dict[str, Any], head_name: str) -> nn.Module:
    if stride != 32:
        raise ConfigError(
            f"{head_name!r} needs an encoder dilated to output stride {stride}, which transferkit does for timm:, "
            "tv: and smp: names only; pass the backbone by name, or another head."
        )
    return bb.features(_select(bb, spec, head_kwargs, None))


def _timm_view(
    name: str, pretrained: Any, spec: Any, stride: int, head_kwargs: dict[str, Any], backbone_kwargs: dict[str, Any]
) -> nn.Module:
    kwargs = dict(backbone_kwargs)
    if stride != 32:
        kwargs["output_stride"] = stride  # timm's own dilation
    if getattr(spec, "name", "") == "dpt" and "dynamic_img_size" not in kwargs:
        try:  # a ViT at any (padded) input size; CNNs do not take the option
            bb = create_backbone(f"timm:{name}", pretrained, dynamic_img_size=True, **kwargs)
        except ConfigError:
            bb = create_backbone(f"timm:{name}", pretrained, **kwargs)
    else:
        try:
            bb = create_backbone(f"timm:{name}", pretrained, **kwargs)
        except ConfigError as e:
            if "output_stride" not in kwargs or "does not accept" not in str(e):
                raise
            raise ConfigError(
                f"timm:{name} cannot be dilated to output stride {stride} (timm's output_stride option), which head="
                f"{spec.name!r} needs. Use a timm CNN that can (resnet*, efficientnet*, mobilenetv3*, regnet*, ...), "
                "or another head (unet, fpn, ...)."
            ) from None
    view = bb.features(_select(bb, spec, head_kwargs, None))
    if stride != 32:
        _check_strides(view, spec, head_kwargs, f"timm:{name}")
    return view


def _torchvision_view(bb: nn.Module, spec: Any, stride: int, head_kwargs: dict[str, Any], head_name: str):
    # levels chosen on the undilated strides; dilation then brings the deeper ones down to `stride`
    view = bb.features(_select(bb, spec, head_kwargs, 32))
    if stride != 32:
        dilate_torchvision(view, stride, head_name)
        _check_strides(view, spec, head_kwargs, f"tv:{bb.name}")
    return view


@torch.no_grad()
def _unit_strides(view: nn.Module) -> dict[str, int]:
    """Output stride of each unit a torchvision view runs (one dummy forward)."""
    shapes: dict[str, int] = {}
    hooks = []
    for name in view.units:
        unit = view.model.get_submodule(name)
        hooks.append(
            unit.register_forward_hook(
                lambda _m, _i, o, n=name: shapes.__setitem__(n, o.shape[1 if view.channels_last else -2])
            )
        )
    was = view.training
    view.eval()
    try:
        view(torch.zeros(1, 3, _PROBE, _PROBE))
    finally:
        for h in hooks:
            h.remove()
        view.train(was)
    return {n: max(1, round(_PROBE / s)) for n, s in shapes.items()}


def dilate_torchvision(view: nn.Module, output_stride: int, head_name: str = "the head") -> None:
    """Dilates a torchvision view in place so its deepest maps have `output_stride`: each unit whose output stride
    exceeds it has its convolutions' strides replaced by dilation ``unit_stride // output_stride`` (smp's
    ``make_dilated`` for its torchvision-derived encoders, applied per unit)."""
    strides = _unit_strides(view)
    for name in view.units:
        if strides[name] > output_stride:
            _dilate(
                view.model.get_submodule(name), strides[name] // output_stride, f"tv:{view.name} ({name})", head_name
            )
    for f in view.feature_info:
        f["reduction"] = min(int(f["reduction"]), output_stride)


def _dilate(module: nn.Module, rate: int, where: str, head_name: str) -> None:
    for m in module.modules():
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and _pair(m.stride) != (1, 1):
            raise _cannot_dilate(where, head_name, "it downsamples with pooling")
        if isinstance(m, nn.Conv2d):
            k, pad, dil = _pair(m.kernel_size), _pair(m.padding), _pair(m.dilation)
            if any(s % 2 == 0 for s in k) or pad != tuple((s - 1) // 2 * d for s, d in zip(k, dil)):
                raise _cannot_dilate(where, head_name, f"its {k[0]}x{k[1]} convolutions are not 'same'-padded")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            k = _pair(m.kernel_size)
            m.stride, m.dilation = (1, 1), (rate, rate)
            m.padding = tuple((s - 1) // 2 * rate for s in k)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _cannot_dilate(where: str, head_name: str, why: str) -> ConfigError:
    return ConfigError(
        f"{where} cannot be dilated ({why}), which head={head_name!r} needs for its output stride. Use a backbone "
        "that can be (tv:resnet*, tv:mobilenet_v2, smp:resnet*, timm CNNs) or another head (unet, fpn, ...)."
    )


@torch.no_grad()
def _check_strides(view: nn.Module, spec: Any, head_kwargs: dict[str, Any], what: str) -> None:
    """After dilation the maps must have the strides the head plans for; a library that ignored the request shows
    here, not as a shape error deep in the decoder."""
    was = view.training
    view.eval()
    try:
        maps = view(torch.zeros(1, 3, _PROBE, _PROBE))
    finally:
        view.train(was)
    actual = [max(1, round(_PROBE / m.shape[-2])) for m in maps]
    depth, stride = spec.levels(head_kwargs)
    wanted = sorted(min(2**k, stride) for k in range(1, depth + 1))
    if actual[-1] != stride or any(a not in wanted for a in actual):
        raise ConfigError(
            f"{what} gives maps at strides {actual} after dilation to output stride {stride}, not what head="
            f"{spec.name!r} needs ({wanted}); use another backbone or head."
        )


__all__ = ["SegmentationModel", "build_segmenter", "dilate_torchvision", "feature_backbone"]
