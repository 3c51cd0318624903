"""Semantic-segmentation heads: every architecture of the installed segmentation-models-pytorch, on any backbone.

A segmentation head is an ``nn.Module`` built from ``(feature_backbone, num_classes, **kwargs)`` that maps
``[image, level_1, ..., level_n]`` (the model input followed by the backbone's maps, smp's convention) to logits
``(B, K, h, w)``; :class:`~transferkit.models.segmentation.SegmentationModel` resizes them to the input size. The
heads registered here are read from the installed library's ``MODEL_ARCHITECTURES_MAPPING`` (smp 0.6: unet,
unetplusplus, manet, linknet, fpn, pspnet, deeplabv3, deeplabv3plus, pan, upernet, segformer, dpt), so
``tk.list_heads(task="semantic-segmentation")`` lists what the installed smp offers.

How an smp decoder is put around a transferkit backbone: an smp architecture builds its encoder with
``get_encoder(name, depth=, output_stride=)`` from the registry dict ``smp.encoders.encoders`` and sizes its
decoder from ``encoder.out_channels`` (one entry per stride 1, 2, 4, ..., 2**depth). For the length of one
constructor call we register a metadata-only encoder whose ``out_channels`` describe the backbone's levels (0
channels where the backbone has no map at a stride, as smp does itself for transformer-style encoders), keep the
decoder and segmentation head that the constructor built, and drop that encoder. No weights are involved,
nothing is downloaded, and smp's ``SegmentationModel`` (its ``train()`` override that can keep a frozen encoder's
BatchNorm in eval, its input-shape check) is never used. DPT builds its ViT encoder itself, outside that dict:
its decoder is built directly from smp's DPT decoder classes. ``tests/test_segmentation_models.py`` builds every
installed architecture around tiny timm, torchvision and smp backbones, so a change in smp shows up there.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import register_head

TASK = "semantic-segmentation"
SMP_FLOOR = "0.5"  # DPT, MODEL_ARCHITECTURES_MAPPING with upernet/segformer, hub weights

try:
    import segmentation_models_pytorch as smp
except ImportError as e:  # a clear line, not an empty head list (lightning-flash#1673)
    raise ConfigError(
        f"Semantic segmentation needs segmentation-models-pytorch>={SMP_FLOOR} ({e}); install it with "
        f"`pip install 'segmentation-models-pytorch>={SMP_FLOOR}'`."
    ) from None

# Arguments transferkit sets itself (the encoder is the backbone; logits for the loss; one output).
_RESERVED = {
    "encoder_name": "the encoder is the backbone= of the run",
    "encoder_weights": "weights come from pretrained=",
    "in_channels": "images are RGB",
    "classes": "the number of classes comes from the data",
    "activation": "the model returns logits; the loss and predict apply softmax/argmax themselves",
    "aux_params": "an auxiliary classification output has no loss here",
}


@dataclass(frozen=True)
class ArchSpec:
    """What an architecture needs from the backbone: how many levels (``encoder_depth``) and the output stride
    (dilated encoders for DeepLab), read from the installed class's signature (defaults or the user's
    head_kwargs)."""

    name: str
    cls: type

    def params(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.cls.__init__).parameters)

    def levels(self, kwargs: dict[str, Any]) -> tuple[int, int]:
        """(encoder depth, encoder output stride) for these head kwargs."""
        p = self.params()
        depth = int(kwargs.get("encoder_depth", p["encoder_depth"].default if "encoder_depth" in p else 5))
        stride = 32
        if "encoder_output_stride" in p:
            stride = int(kwargs.get("encoder_output_stride", p["encoder_output_stride"].default))
        return depth, min(stride, 2**depth)

    def output_stride(self, kwargs: dict[str, Any]) -> int:
        """The stride the backbone's deepest map must have (< 32: the backbone is dilated)."""
        depth, stride = self.levels(kwargs)
        return stride if stride < 2**depth else 32

    def select(self, reductions: Sequence[int], kwargs: dict[str, Any], output_stride: int | None = None) -> list[int]:
        """Indices of the backbone levels this architecture uses (planned as for `output_stride`)."""
        depth, stride = self.levels(kwargs)
        slots = plan_levels(reductions, depth, stride if output_stride is None else output_stride)
        return [i for i in slots if i is not None]

    def valid_kwargs(self) -> list[str]:
        """The smp class's own options (what head_kwargs may set)."""
        names = [n for n, p in self.params().items() if n != "self" and p.kind is not p.VAR_KEYWORD]
        return [n for n in names if n not in _RESERVED]

    @property
    def backbone_depth(self) -> int | None:
        """Levels an smp encoder is built with (None: the architecture's encoder_depth)."""
        return None

    @property
    def divisible(self) -> bool:
        return bool(getattr(self.cls, "requires_divisible_input_shape", True))


def plan_levels(reductions: Sequence[int], depth: int, output_stride: int) -> list[int | None]:
    """Which backbone level fills each of smp's encoder slots 1..depth (slot k holds stride ``min(2**k,
    output_stride)``), None where the backbone has no map at that stride.

    Filled from the deepest slot up, so the deepest map always feeds the deepest slot; levels at strides smp does
    not use (1, or beyond 2**depth) are left out.

    Example:
        >>> plan_levels([4, 8, 16, 32], 5, 32)  # a transformer-style backbone: nothing at stride 2
        [None, 0, 1, 2, 3]
        >>> plan_levels([2, 4, 8, 16, 16], 5, 16)  # dilated
        [0, 1, 2, 3, 4]
    """
    slots: list[int | None] = [None] * depth
    i = len(reductions) - 1
    for k in range(depth, 0, -1):
        expected = min(2**k, output_stride)
        while i >= 0 and reductions[i] > expected:
            i -= 1
        if i >= 0 and reductions[i] == expected:
            slots[k - 1] = i
            i -= 1
    return slots


class _LevelsEncoder(nn.Module):
    """A parameter-free stand-in that tells an smp architecture the channels of each stride; never run."""

    def __init__(self, out_channels: Sequence[int], depth: int = 5, output_stride: int = 32, **_: Any) -> None:
        super().__init__()
        self._out_channels = list(out_channels)
        self._depth = depth
        self._output_stride = output_stride

    @property
    def out_channels(self) -> list[int]:
        return self._out_channels[: self._depth + 1]

    @property
    def output_stride(self) -> int:
        return min(self._output_stride, 2**self._depth)

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        if in_channels != 3:
            raise ConfigError("Segmentation models take RGB images (in_channels=3).")

    def make_dilated(self, output_stride: int) -> None:
        """The backbone was dilated when it was built; the maps already have this stride."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise RuntimeError("The stand-in encoder only describes channels; the backbone computes the features.")


class SafeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with its running statistics when a training batch has one value per channel
    (a pooled 1x1 map of a batch of one: DeepLab's ASPP pooling, PSP's 1x1 bin), where batch statistics do not
    exist and torch raises "Expected more than 1 value per channel"."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def safe_batchnorm(module: nn.Module) -> int:
    """Swaps every BatchNorm2d in `module` for a SafeBatchNorm2d with the same state; returns how many."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = SafeBatchNorm2d(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                )
                new.load_state_dict(child.state_dict())
                setattr(parent, name, new)
                swapped += 1
    return swapped


def check_kwargs(spec: ArchSpec, kwargs: dict[str, Any]) -> None:
    """One clear line for an option the architecture does not have, or one transferkit sets itself."""
    import difflib

    for key in kwargs:
        if key in _RESERVED:
            raise ConfigError(f"head_kwargs[{key!r}] cannot be set for a transferkit model: {_RESERVED[key]}.")
    valid = spec.valid_kwargs()
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"head_kwargs[{key!r}] is not an option of head={spec.name!r} (smp's {spec.cls.__name__}).{hint} "
                f"Valid: {', '.join(valid)}."
            )


class SmpHead(nn.Module):
    """An smp architecture's decoder and segmentation head over a FeatureBackbone's maps.

    Args:
        spec: the architecture.
        channels, reductions: the backbone's levels (``FeatureBackbone.channels`` / ``.reductions``).
        num_classes: K, the logits' channels.
        **kwargs: options of the smp class (``decoder_channels``, ``encoder_output_stride``, ...).

    Attributes:
        slots: for smp's encoder slot k (stride ``strides[k]``), the backbone level that fills it (None: none).
        input_divisor: height and width of the input must be multiples of this (the model pads to it).

    Example:
        >>> head = SmpHead(ARCHS["fpn"], [16, 24, 32, 96, 1280], [2, 4, 8, 16, 32], num_classes=3)
        >>> head.slots, head.input_divisor
        ([0, 1, 2, 3, 4], 32)
    """

    def __init__(
        self, spec: ArchSpec, channels: Sequence[int], reductions: Sequence[int], num_classes: int, **kwargs: Any
    ) -> None:
        super().__init__()
        check_kwargs(spec, kwargs)
        depth, stride = spec.levels(kwargs)
        self.arch = spec.name
        self.slots = plan_levels(reductions, depth, stride)
        self.strides = [min(2**k, stride) for k in range(1, depth + 1)]
        if self.slots[-1] is None:
            raise ConfigError(
                f"head={spec.name!r} needs the backbone's deepest map at stride {self.strides[-1]}, but its maps have "
                f"strides {list(reductions)}. {_stride_hint(spec.name, reductions)}"
            )
        out_channels = [3] + [int(channels[i]) if i is not None else 0 for i in self.slots]
        model = _build(spec, out_channels, depth, stride, num_classes, kwargs)
        self.decoder = model.decoder
        self.segmentation_head = model.segmentation_head
        self.input_divisor = stride if spec.divisible else 1
        safe_batchnorm(self)
        self.min_input_size = smallest_input(self, [int(c) for c in channels], [int(r) for r in reductions])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x, levels = features[0], features[1:]
        full = [x]
        for index, stride in zip(self.slots, self.strides):
            if index is None:  # smp's own placeholder for a stride the encoder has no map at
                full.append(x.new_empty(x.shape[0], 0, x.shape[-2] // stride, x.shape[-1] // stride))
            else:
                full.append(levels[index])
        return self.segmentation_head(self.decoder(full))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, slots={self.slots}, strides={self.strides}"


@torch.no_grad()
def smallest_input(head: nn.Module, channels: list[int], reductions: list[int]) -> int:
    """The smallest square input side (a multiple of the head's divisor) on which the decoder runs: some decoders
    pool their deepest map further (PAN's feature pyramid attention needs it at 8 x 8 or more), so the model pads
    small images up to this size instead of failing on them."""
    side = max([getattr(head, "input_divisor", 1), *reductions])
    was = head.training
    head.eval()
    try:
        for _ in range(8):
            maps = [torch.zeros(1, c, max(1, side // r), max(1, side // r)) for c, r in zip(channels, reductions)]
            try:
                head([torch.zeros(1, 3, side, side), *maps])
                return side
            except (RuntimeError, ValueError):
                side *= 2
    finally:
        head.train(was)
    raise ConfigError(
        f"The {type(head).__name__} does not run on maps of {channels} channels at strides {reductions} at any size "
        "up to 8192 pixels; use another head or backbone."
    )


def _build(spec: ArchSpec, out_channels: list[int], depth: int, stride: int, num_classes: int, kwargs: dict):
    """The smp model built around the stand-in encoder (registered only for this call)."""
    registry = smp.encoders.encoders
    name = f"transferkit-levels-{uuid.uuid4().hex}"
    registry[name] = {"encoder": _LevelsEncoder, "params": {"out_channels": out_channels}, "pretrained_settings": {}}
    args = {"encoder_name": name, "encoder_weights": None, "classes": num_classes, **kwargs}
    if "encoder_depth" in spec.params():
        args["encoder_depth"] = depth
    try:
        model = spec.cls(**args)
    except (ValueError, TypeError, KeyError, AssertionError, RuntimeError) as e:
        raise ConfigError(
            f"smp's {spec.cls.__name__} (head={spec.name!r}) cannot be built on maps of {out_channels[1:]} channels "
            f"at strides {[min(2**k, stride) for k in range(1, depth + 1)]} ({type(e).__name__}: {e})."
        ) from None
    finally:
        registry.pop(name, None)
    if not isinstance(getattr(model, "encoder", None), _LevelsEncoder):
        raise RuntimeError(
            f"smp {smp.__version__} no longer builds {spec.cls.__name__}'s encoder through smp.encoders.encoders; "
            "transferkit's segmentation heads need updating for it."
        )
    return model


def _stride_hint(head: str, reductions: Sequence[int]) -> str:
    if reductions and len(set(reductions)) == 1:
        return "A plain ViT has maps at one stride only: use head='dpt'."
    return "Use another backbone or head (unet, fpn, ... need maps up to stride 32)."


class DPTHead(nn.Module):
    """smp's DPT decoder and head over any backbone's levels (a ViT's blocks at stride 16, or a CNN's stages).

    The multi-scale view returns maps only, not a ViT's prefix (class) tokens, so the readout is "ignore".

    Example:
        >>> head = DPTHead([64] * 4, [16] * 4, num_classes=2)
        >>> head(
        ...     [torch.zeros(1, 3, 64, 64)] + [torch.zeros(1, 64, 4, 4)] * 4
        ... ).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        num_classes: int,
        *,
        encoder_depth: int = 4,
        encoder_output_indices: Sequence[int] | None = None,
        decoder_readout: str = "ignore",
        decoder_intermediate_channels: Sequence[int] = (256, 512, 1024, 1024),
        decoder_fusion_channels: int = 256,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import initialization
        from segmentation_models_pytorch.decoders.dpt.decoder import DPTDecoder, DPTSegmentationHead

        if decoder_readout != "ignore":
            raise ConfigError(
                f"head_kwargs decoder_readout={decoder_readout!r}: the backbone's multi-scale view gives feature maps "
                "without the ViT's class token, so DPT's readout is 'ignore'."
            )
        self.indices = dpt_levels(reductions, encoder_depth, encoder_output_indices)
        if len(decoder_intermediate_channels) != len(self.indices):
            raise ConfigError(
                f"head_kwargs decoder_intermediate_channels={list(decoder_intermediate_channels)} needs one entry per "
                f"level ({len(self.indices)}, encoder_depth)."
            )
        self.decoder = DPTDecoder(
            encoder_out_channels=[int(channels[i]) for i in self.indices],
            encoder_output_strides=[int(reductions[i]) for i in self.indices],
            encoder_has_prefix_tokens=False,
            readout="ignore",
            intermediate_channels=list(decoder_intermediate_channels),
            fusion_channels=decoder_fusion_channels,
        )
        self.segmentation_head = DPTSegmentationHead(decoder_fusion_channels, num_classes, kernel_size=3, upsampling=2)
        initialization.initialize_decoder(self.decoder)
        initialization.initialize_head(self.segmentation_head)
        self.input_divisor = 2 ** (len(self.indices) + 1)  # the deepest reassembled map is at 1 / 2**(n + 1)
        safe_batchnorm(self)
        self.min_input_size = smallest_input(self, [int(c) for c in channels], [int(r) for r in reductions])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        levels = [features[1 + i] for i in self.indices]
        return self.segmentation_head(self.decoder(levels, [None] * len(levels)))


def dpt_levels(reductions: Sequence[int], depth: int, indices: Sequence[int] | None = None) -> list[int]:
    """The levels DPT uses: `indices` if given; for a ViT (one stride), `depth` blocks sampled uniformly as smp does;
    else the deepest `depth` levels."""
    n = len(reductions)
    if indices is not None:
        picked = [int(i) % n if -n <= int(i) < n else -1 for i in indices]
        if any(i < 0 for i in picked) or len(picked) != depth:
            raise ConfigError(
                f"head_kwargs encoder_output_indices={list(indices)} must be {depth} (encoder_depth) indices into "
                f"the backbone's {n} levels."
            )
        return picked
    if depth > n:
        raise ConfigError(f"head='dpt' with encoder_depth={depth} needs {depth} levels; the backbone has {n}.")
    if len(set(reductions)) == 1:
        return [int(n / depth * (d + 1)) - 1 for d in range(depth)]
    return list(range(n - depth, n))


class DPTSpec(ArchSpec):
    """DPT takes any `encoder_depth` levels (no dilation); from a CNN the deepest ones."""

    @property
    def backbone_depth(self) -> int | None:
        return 5

    def levels(self, kwargs: dict[str, Any]) -> tuple[int, int]:
        return int(kwargs.get("encoder_depth", 4)), 32

    def output_stride(self, kwargs: dict[str, Any]) -> int:
        return 32

    def valid_kwargs(self) -> list[str]:
        sig = inspect.signature(DPTHead.__init__).parameters
        return [n for n, p in sig.items() if p.kind is p.KEYWORD_ONLY]

    def select(self, reductions: Sequence[int], kwargs: dict[str, Any], output_stride: int | None = None) -> list[int]:
        return dpt_levels(reductions, int(kwargs.get("encoder_depth", 4)), kwargs.get("encoder_output_indices"))


def _factory(spec: ArchSpec):
    def build(backbone: nn.Module, num_classes: int, **kwargs: Any) -> nn.Module:
        channels, reductions = _levels_of(backbone)
        if isinstance(spec, DPTSpec):
            return DPTHead(channels, reductions, num_classes, **kwargs)
        return SmpHead(spec, channels, reductions, num_classes, **kwargs)

    build.__name__ = f"{spec.name}_head"
    build.__doc__ = f"smp's {spec.cls.__name__} decoder and segmentation head on a multi-scale backbone."
    return build


def _levels_of(backbone: nn.Module) -> tuple[list[int], list[int]]:
    channels, reductions = getattr(backbone, "channels", None), getattr(backbone, "reductions", None)
    if channels is None or reductions is None:
        raise ConfigError(
            f"A segmentation head needs a multi-scale backbone (a FeatureBackbone with channels and reductions), not "
            f"{type(backbone).__name__}; pass a timm:, tv: or smp: name, or backbone.features()."
        )
    return list(channels), list(reductions)


ARCHS: dict[str, ArchSpec] = {}
for _name, _cls in smp.MODEL_ARCHITECTURES_MAPPING.items():
    _spec = DPTSpec(_name, _cls) if _name == "dpt" else ArchSpec(_name, _cls)
    ARCHS[_name] = _spec
    register_head(_name, _factory(_spec), tasks=(TASK,), domain="image", arch=_cls.__name__, spec=_spec)


__all__ = ["ARCHS", "ArchSpec", "DPTHead", "SafeBatchNorm2d", "SmpHead", "plan_levels", "safe_batchnorm"]
