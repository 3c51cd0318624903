"""Detection heads: torchvision's detectors built around the multi-scale view of any registry backbone.

A head factory takes the backbone adapter (``tv:``/``timm:``, weights already loaded) and the number of object
classes K, takes the backbone's multi-scale view (``backbone.features(...)``) at the strides the detector needs,
adds a new FeaturePyramidNetwork, and returns a torchvision detector predicting K + 1 classes (0 = background).

Levels that suit small images (torchvision's ``mobilenet_backbone(fpn=True)`` gives only stride-32 maps, on which a
Faster R-CNN learned almost nothing at ~128 px in the project's measurements):

- ``fasterrcnn``: body strides 4, 8, 16, 32 + ``LastLevelMaxPool`` (stride 64) = 5 maps, the layout torchvision's
  ResNet-50 FPN uses; RoIAlign reads the four body levels.
- ``retinanet``, ``fcos``: body strides 8, 16, 32 + ``LastLevelP6P7`` (strides 64, 128) = P3-P7, as torchvision's.

Anchors follow the maps (one size per level for Faster R-CNN, three octave scales per level for RetinaNet; FCOS's
"anchors" are its strides) and the objects: given the data's object sizes after resizing, the anchor ladder
(torchvision's ``size = a * stride``, a = 8 for Faster R-CNN and 4 for RetinaNet at 800 px on COCO) is rescaled so
that its geometric middle meets the middle of the objects' size range. Faster R-CNN's proposal and RoI counts
(torchvision's defaults are for 800 x 1333 images) are scaled with the image area.

Register more with ``register_head(name, factory, tasks=("object-detection",))``; a factory receives the keywords
of :data:`DETECTOR_KEYWORDS` it accepts and returns a torchvision-style detector (``model(images, targets)`` -> loss
dict in training, list of ``{"boxes", "labels", "scores"}`` in eval) whose body is the backbone's view.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from . import register_head

TASK = "object-detection"
# Keywords a detection head factory may take (the task passes those a factory accepts).
DETECTOR_KEYWORDS = (
    "min_size",
    "max_size",
    "image_mean",
    "image_std",
    "anchor_sizes",
    "aspect_ratios",
    "object_sizes",
    "box_score_thresh",
    "detections_per_img",
)
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)
# torchvision's anchor size per stride at 800 px on COCO: Faster R-CNN 32..512 at strides 4..64, RetinaNet 32..512
# at strides 8..128 (times 2^0, 2^(1/3), 2^(2/3)).
_ANCHOR_PER_STRIDE = {"fasterrcnn": 8.0, "retinanet": 4.0}
# The rescaled ladder keeps anchors between 2x and 16x their stride: below 2x, neighbouring anchors stop overlapping
# (objects between them match none); above 16x, the map is far finer than the objects it proposes.
_ANCHOR_PER_STRIDE_RANGE = (2.0, 16.0)


class DetectionBackbone(nn.Module):
    """A backbone's multi-scale view (``body``, pretrained) + a new FeaturePyramidNetwork (``fpn``).

    ``forward(images)`` returns the FPN maps as an OrderedDict (``"0"``, ``"1"``, ... for the body levels, then the
    extra levels' names), which is what torchvision's detectors take; ``out_channels`` is the FPN width and
    ``strides`` the stride of each returned map. ``layer_groups()`` lists only the body's parameters: the FPN is new.

    Example:
        >>> from transferkit.backbones import create_backbone
        >>> from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
        >>> view = create_backbone("timm:test_resnet", pretrained=False).features([1, 2, 3, 4])
        >>> net = DetectionBackbone(view, 64, LastLevelMaxPool(), extra_strides=(64,))
        >>> [tuple(m.shape[-2:]) for m in net(torch.zeros(1, 3, 64, 64)).values()], net.strides
        ([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [4, 8, 16, 32, 64])
    """

    def __init__(
        self, body: nn.Module, out_channels: int, extra_blocks: nn.Module | None, extra_strides: Sequence[int] = ()
    ) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        self.strides = [*body.reductions, *extra_strides]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    def layer_groups(self) -> list[list[str]]:
        return [[f"body.{n}" for n in g] for g in self.body.layer_groups()]


def select_levels(backbone: nn.Module, strides: Sequence[int], head: str) -> list[int]:
    """Indices into ``backbone.feature_info`` of the maps at `strides` (the last map of each stride).

    Example:
        >>> from transferkit.backbones import create_backbone
        >>> select_levels(create_backbone("tv:mobilenet_v2", pretrained=False), (4, 8, 16, 32), "fasterrcnn")
        [1, 2, 3, 4]
    """
    if not hasattr(backbone, "features") or not getattr(backbone, "feature_info", None):
        raise ConfigError(
            f"The {head} head needs a backbone with a multi-scale view (a tv: or timm: image backbone); "
            f"{type(backbone).__name__} has none."
        )
    reductions = [int(f["reduction"]) for f in backbone.feature_info]
    index = {r: i for i, r in enumerate(reductions)}  # the last map of each stride
    missing = [s for s in strides if s not in index]
    if missing:
        name = f"{getattr(backbone, 'source', '')}:{getattr(backbone, 'name', type(backbone).__name__)}"
        raise ConfigError(
            f"The {head} head needs feature maps at strides {list(strides)}, but {name} gives strides {reductions} "
            "(no map at " + ", ".join(map(str, missing)) + "). Pick a CNN backbone (resnet, mobilenet, efficientnet, "
            "convnext, ...)."
        )
    return [index[s] for s in strides]


def anchor_ladder(
    strides: Sequence[int],
    per_stride: float,
    *,
    object_sizes: tuple[float, float] | None = None,
    min_size: int | None = None,
    octaves: int = 1,
) -> tuple[tuple[float, ...], ...]:
    """Anchor sizes, one tuple per map: ``a * stride`` (times octave scales), `a` fitted to the objects.

    With `object_sizes` (low, high: object sizes in pixels after the detector's resize, e.g. the 5th and 95th
    percentiles of the training boxes) `a` is chosen so that the geometric middle of the ladder meets that of the
    objects, kept within 2..16 x the stride; without, torchvision's ladder is scaled by ``min_size / 800``.

    Example:
        >>> anchor_ladder((4, 8, 16, 32, 64), 8.0, object_sizes=(20, 80))
        ((10.0,), (20.0,), (40.0,), (80.0,), (160.0,))
        >>> anchor_ladder((4, 8, 16, 32, 64), 8.0, min_size=800)[0]
        (32.0,)
    """
    if object_sizes is not None and all(s and s > 0 for s in object_sizes):
        middle = math.sqrt(float(object_sizes[0]) * float(object_sizes[1]))
        ladder_middle = math.sqrt(strides[0] * strides[-1]) * 2 ** ((octaves - 1) / (2 * octaves))
        a = middle / ladder_middle
    else:
        a = per_stride * (min_size or 800) / 800
    lo, hi = _ANCHOR_PER_STRIDE_RANGE
    a = min(max(a, lo), hi)
    scales = [2 ** (k / octaves) for k in range(octaves)]
    return tuple(tuple(round(a * s * k, 1) for k in scales) for s in strides)


def check_anchor_sizes(anchor_sizes: Any, num_maps: int, head: str) -> tuple[tuple[float, ...], ...]:
    """`anchor_sizes` as one tuple of positive sizes per map, all of the same length (one RPN/head output each)."""
    try:
        sizes = tuple(
            tuple(float(s) for s in (level if isinstance(level, (list, tuple)) else (level,)))
            for level in anchor_sizes
        )
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) != num_maps or any(not level or min(level) <= 0 for level in sizes):
        raise ConfigError(
            f"anchor_sizes={anchor_sizes!r} does not fit the {head} head: it needs one list of positive sizes per "
            f"feature map ({num_maps} maps), e.g. {[[16 * 2**i] for i in range(num_maps)]}."
        )
    if len({len(level) for level in sizes}) != 1:
        raise ConfigError(
            f"anchor_sizes={anchor_sizes!r}: every feature map needs the same number of sizes (the head predicts "
            "the same number of anchors at each location)."
        )
    return sizes


def check_aspect_ratios(aspect_ratios: Any) -> tuple[float, ...]:
    try:
        ratios = tuple(float(r) for r in aspect_ratios)
    except (TypeError, ValueError):
        ratios = ()
    if not ratios or min(ratios) <= 0:
        raise ConfigError(f"aspect_ratios={aspect_ratios!r} must be positive height/width ratios, e.g. [0.5, 1, 2].")
    return ratios


def proposal_counts(min_size: Any, max_size: int | None = None) -> dict[str, int]:
    """Faster R-CNN's proposal and RoI-sampling counts scaled from torchvision's (for 800 px) to the image area.

    torchvision keeps 2000 proposals per level before NMS and 2000 after (1000 each in eval) and samples 512 RoIs
    per image: on a 320 px image that is mostly background boxes, and the RoI head's cost grows with their number.
    torchvision's own small-image model (``fasterrcnn_mobilenet_v3_large_320_fpn``) keeps 150 in eval.

    Example:
        >>> proposal_counts(320)
        {'rpn_pre_nms_top_n_train': 320, 'rpn_post_nms_top_n_train': 320, 'rpn_pre_nms_top_n_test': 160, \
'rpn_post_nms_top_n_test': 160, 'box_batch_size_per_image': 128}
    """
    size = max(min_size) if isinstance(min_size, (list, tuple)) else int(min_size)
    ratio = min(1.0, (size / 800) ** 2)
    return {
        "rpn_pre_nms_top_n_train": max(256, round(2000 * ratio)),
        "rpn_post_nms_top_n_train": max(256, round(2000 * ratio)),
        "rpn_pre_nms_top_n_test": max(150, round(1000 * ratio)),
        "rpn_post_nms_top_n_test": max(150, round(1000 * ratio)),
        "box_batch_size_per_image": max(128, round(512 * ratio)),
    }


def _transform_kwargs(backbone: nn.Module, min_size: Any, max_size: Any, image_mean: Any, image_std: Any) -> dict:
    from ..data.constants import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(backbone, "data_config", None) or {}
    if min_size is None:
        min_size = 800
    if isinstance(min_size, (list, tuple)):
        min_size = tuple(int(s) for s in min_size)
    return {
        "min_size": min_size,
        "max_size": int(max_size) if max_size is not None else max(1333, max(_as_tuple(min_size))),
        "image_mean": [float(v) for v in (image_mean or cfg.get("mean") or IMAGENET_MEAN)],
        "image_std": [float(v) for v in (image_std or cfg.get("std") or IMAGENET_STD)],
    }


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _eval_size(min_size: Any) -> int:
    return int(_as_tuple(min_size)[-1]) if min_size is not None else 800  # torchvision evaluates at the last


def _body(backbone: nn.Module, strides: Sequence[int], head: str) -> nn.Module:
    return backbone.features(select_levels(backbone, strides, head))


@register_head("fasterrcnn", tasks=(TASK,), domain="image", strides=(4, 8, 16, 32, 64))
def fasterrcnn(
    backbone: nn.Module,
    num_classes: int,
    *,
    min_size: Any = None,
    max_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_sizes: Any = None,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    object_sizes: tuple[float, float] | None = None,
    box_score_thresh: float = 0.05,
    detections_per_img: int = 100,
    fpn_channels: int = 256,
    **kwargs: Any,
) -> nn.Module:
    """Faster R-CNN on the backbone's maps at strides 4-32 + a max-pooled stride-64 map (5 FPN levels).

    Args:
        backbone: a ``tv:``/``timm:`` backbone adapter with its weights loaded.
        num_classes: object classes K (the detector predicts K + 1; label 0 is the background).
        min_size, max_size: torchvision's resize (short side, long-side cap); None: 800 / 1333.
        image_mean, image_std: normalisation inside the detector; None: the backbone's.
        anchor_sizes: one list of sizes per map (5); None: derived from `object_sizes` (or `min_size`).
        aspect_ratios: anchor height/width ratios at every location.
        object_sizes: (low, high) object sizes in pixels after the resize, to fit the anchors to.
        box_score_thresh: detections below this score are dropped in eval (0.05 suits mAP).
        detections_per_img: at most this many detections per image.
        fpn_channels: FPN width (torchvision: 256).
        **kwargs: passed to ``torchvision.models.detection.FasterRCNN`` (e.g. ``rpn_post_nms_top_n_train``).

    Example:
        >>> from transferkit.backbones import create_backbone
        >>> det = fasterrcnn(create_backbone("timm:test_resnet", pretrained=False), 3, min_size=64, max_size=64)
        >>> det.roi_heads.box_predictor.cls_score.out_features, det.rpn.anchor_generator.sizes[0]
        (4, (8.0,))
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = _body(backbone, (4, 8, 16, 32), "fasterrcnn")
    net = DetectionBackbone(body, fpn_channels, LastLevelMaxPool(), extra_strides=(64,))
    if anchor_sizes is None:
        size = _eval_size(min_size)
        anchor_sizes = anchor_ladder(
            net.strides, _ANCHOR_PER_STRIDE["fasterrcnn"], object_sizes=object_sizes, min_size=size
        )
    sizes = check_anchor_sizes(anchor_sizes, len(net.strides), "fasterrcnn")
    anchors = AnchorGenerator(sizes, (check_aspect_ratios(aspect_ratios),) * len(sizes))
    roi_pool = MultiScaleRoIAlign(
        featmap_names=[str(i) for i in range(len(body.channels))], output_size=7, sampling_ratio=2
    )
    options = {**proposal_counts(_eval_size(min_size)), **kwargs}
    return FasterRCNN(
        net,
        num_classes=num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_score_thresh=box_score_thresh,
        box_detections_per_img=detections_per_img,
        **_transform_kwargs(backbone, min_size, max_size, image_mean, image_std),
        **options,
    )


def _p3_p7(backbone: nn.Module, head: str, fpn_channels: int) -> DetectionBackbone:
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = _body(backbone, (8, 16, 32), head)
    # P6 from P5 (in = out channels), as torchvision's RetinaNet/FCOS builders do
    return DetectionBackbone(body, fpn_channels, LastLevelP6P7(fpn_channels, fpn_channels), extra_strides=(64, 128))


@register_head("retinanet", tasks=(TASK,), domain="image", strides=(8, 16, 32, 64, 128))
def retinanet(
    backbone: nn.Module,
    num_classes: int,
    *,
    min_size: Any = None,
    max_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_sizes: Any = None,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    object_sizes: tuple[float, float] | None = None,
    box_score_thresh: float = 0.05,
    detections_per_img: int = 100,
    fpn_channels: int = 256,
    **kwargs: Any,
) -> nn.Module:
    """RetinaNet on the backbone's maps at strides 8-32 + P6/P7 (5 FPN levels), 3 octave scales x 3 ratios.

    Arguments as for :func:`fasterrcnn`; ``**kwargs`` go to ``torchvision.models.detection.RetinaNet``.

    Example:
        >>> from transferkit.backbones import create_backbone
        >>> det = retinanet(create_backbone("timm:test_resnet", pretrained=False), 2, min_size=64, max_size=64)
        >>> det.head.classification_head.num_classes, len(det.anchor_generator.sizes)
        (3, 5)
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    net = _p3_p7(backbone, "retinanet", fpn_channels)
    if anchor_sizes is None:
        anchor_sizes = anchor_ladder(
            net.strides,
            _ANCHOR_PER_STRIDE["retinanet"],
            object_sizes=object_sizes,
            min_size=_eval_size(min_size),
            octaves=3,
        )
    sizes = check_anchor_sizes(anchor_sizes, len(net.strides), "retinanet")
    anchors = AnchorGenerator(sizes, (check_aspect_ratios(aspect_ratios),) * len(sizes))
    return RetinaNet(
        net,
        num_classes=num_classes + 1,
        anchor_generator=anchors,
        score_thresh=box_score_thresh,
        detections_per_img=detections_per_img,
        **_transform_kwargs(backbone, min_size, max_size, image_mean, image_std),
        **kwargs,
    )


@register_head("fcos", tasks=(TASK,), domain="image", strides=(8, 16, 32, 64, 128))
def fcos(
    backbone: nn.Module,
    num_classes: int,
    *,
    min_size: Any = None,
    max_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    anchor_sizes: Any = None,
    box_score_thresh: float = 0.05,
    detections_per_img: int = 100,
    fpn_channels: int = 256,
    **kwargs: Any,
) -> nn.Module:
    """FCOS (anchor-free) on the backbone's maps at strides 8-32 + P6/P7 (5 FPN levels).

    FCOS's "anchor" per location is a square of the map's stride: it sets the centre-sampling radius and which
    level learns which object size (4-8 x the stride), so it stays the strides unless `anchor_sizes` is given.
    torchvision's eval score threshold (0.2) becomes `box_score_thresh` (0.05), as for the other heads, so mAP
    sees the low-scoring detections too. Other arguments as for :func:`fasterrcnn`; ``**kwargs`` go to
    ``torchvision.models.detection.FCOS``.

    Example:
        >>> from transferkit.backbones import create_backbone
        >>> det = fcos(create_backbone("timm:test_resnet", pretrained=False), 2, min_size=64, max_size=64)
        >>> det.anchor_generator.sizes
        ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if fpn_channels % 32 or fpn_channels < 64:
        # GroupNorm(32) over a 1x1 P7 map (images up to 128 px) needs 2+ channels per group
        raise ConfigError(
            f"fpn_channels={fpn_channels} does not fit the fcos head: its towers use GroupNorm with 32 groups, so the "
            "FPN width must be a multiple of 32 and at least 64 (e.g. 64, 128, 256)."
        )
    net = _p3_p7(backbone, "fcos", fpn_channels)
    sizes = check_anchor_sizes(anchor_sizes if anchor_sizes is not None else net.strides, len(net.strides), "fcos")
    if any(len(level) != 1 for level in sizes):
        raise ConfigError(f"anchor_sizes={anchor_sizes!r}: FCOS takes one size per feature map.")
    anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
    return FCOS(
        net,
        num_classes=num_classes + 1,
        anchor_generator=anchors,
        score_thresh=box_score_thresh,
        detections_per_img=detections_per_img,
        **_transform_kwargs(backbone, min_size, max_size, image_mean, image_std),
        **kwargs,
    )


__all__ = [
    "DETECTOR_KEYWORDS",
    "DetectionBackbone",
    "anchor_ladder",
    "check_anchor_sizes",
    "fasterrcnn",
    "fcos",
    "proposal_counts",
    "retinanet",
    "select_levels",
]
