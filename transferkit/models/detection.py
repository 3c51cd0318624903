"""The ``detector`` model kind: a torchvision detector behind the engine's contract.

Two ways to build one (``create_model(backbone, K, kind="detector", head=..., pretrained=...)``):

- **Around a registry backbone** (the usual case): the ``tv:``/``timm:`` backbone is created with its weights
  (``pretrained=True``, or a local *classification* weights file: the same file that initialises a classifier),
  and a detection head factory (:mod:`transferkit.heads.detection`) builds FPN + detector around its multi-scale
  view. The body is pretrained (its stages are the layer groups); FPN, RPN and heads are new.
- **From a whole torchvision detector checkpoint** (``pretrained="fasterrcnn_resnet50_fpn.pth"``), recognised by
  its keys (``backbone.body.``, ``backbone.fpn.``, ``rpn.``/``roi_heads.``/``head.``): torchvision's matching
  builder is created with ``weights=None`` for K + 1 classes, and everything but the class-specific layers is
  loaded (Faster R-CNN's ``box_predictor``, the ``cls_logits`` of RetinaNet's and FCOS's classification heads;
  their pretrained towers are kept). Then body, FPN and detection heads are all pretrained: the layer groups are the
  body's stages, the FPN, and the heads; only the class-specific layers are new.

Labels are 1..K with 0 the background, so every detector predicts ``num_classes + 1`` classes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from . import MODELS

__all__ = ["DETECTOR_BUILDERS", "DetectionModel", "build_detector", "detector_checkpoint_prefix"]

# torchvision builders a whole-detector checkpoint may come from, by head family, with the body they use.
DETECTOR_BUILDERS: dict[str, list[tuple[str, str]]] = {
    "fasterrcnn": [
        ("fasterrcnn_resnet50_fpn", "resnet50"),
        ("fasterrcnn_resnet50_fpn_v2", "resnet50"),
        ("fasterrcnn_mobilenet_v3_large_fpn", "mobilenet_v3_large"),
    ],
    "retinanet": [("retinanet_resnet50_fpn", "resnet50"), ("retinanet_resnet50_fpn_v2", "resnet50")],
    "fcos": [("fcos_resnet50_fpn", "resnet50")],
}
# Module prefixes (inside the torchvision detector) of the layers whose shape depends on the number of classes.
_CLASS_SPECIFIC = ("roi_heads.box_predictor.", "head.classification_head.cls_logits.")
_WRAPPERS = ("", "module.", "model.", "detector.", "model.detector.", "module.detector.")


class DetectionModel(nn.Module):
    """A torchvision-style detector (``self.detector``) with the layer groups and pretrained flag the engine uses.

    ``forward(images, targets)`` in training returns the detector's loss dict; in eval ``forward(images)`` returns
    one ``{"boxes" (N, 4) xyxy, "labels" (N,) in 1..K, "scores" (N,)}`` per image, in the input images' pixels.

    Attributes:
        detector: the torchvision detector.
        is_pretrained: whether the layer groups hold pretrained weights.
        head_name: the head's name (``"fasterrcnn"``, ...), or the factory's name for a custom head.
        builder: the torchvision builder a whole-detector checkpoint came from, else None.

    Example:
        >>> from transferkit.models import create_model
        >>> model = create_model("timm:test_resnet", 2, kind="detector", pretrained=False, min_size=64, max_size=64)
        >>> model.eval()(torch.rand(1, 3, 64, 64).unbind(0))[0]["boxes"].shape[1]
        4
    """

    def __init__(self, detector: nn.Module, *, is_pretrained: bool, head_name: str = "", builder: str | None = None):
        super().__init__()
        self.detector = detector
        self.is_pretrained = is_pretrained
        self.head_name = head_name
        self.builder = builder

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        out = self.detector(images, targets)
        if self.training or not isinstance(out, list):
            return out
        # RetinaNet and FCOS score every class with a sigmoid, the background (label 0) included, though it is never
        # a target: a detection "of the background" is none.
        return [{k: v[d["labels"] > 0] for k, v in d.items()} if (d["labels"] == 0).any() else d for d in out]

    def layer_groups(self) -> list[list[str]]:
        """The pretrained parameters, stem -> top: the body's stages (plus, for a whole-detector checkpoint, its
        FPN and detection heads). Everything else (a new FPN, RPN and heads; the class-specific layers) is new."""
        if self.builder is not None:
            return [[f"detector.{n}" for n in g] for g in _checkpoint_groups(self.detector)]
        from ..backbones.base import FeatureBackbone

        body_name, body = next(
            ((n, m) for n, m in self.detector.named_modules() if isinstance(m, FeatureBackbone)), (None, None)
        )
        if body is None:
            return []
        return [[f"detector.{body_name}.{n}" for n in g] for g in body.layer_groups()]


def _checkpoint_groups(detector: nn.Module) -> list[list[str]]:
    """A torchvision detector's groups: body stages (resnet: stem, layer1..4; mobilenet: each block), FPN, heads."""
    body = detector.backbone.body
    groups: list[list[str]] = []
    for name, child in body.named_children():
        names = [f"backbone.body.{name}.{n}" for n, _ in child.named_parameters()]
        if not names:
            continue
        if groups and isinstance(child, nn.BatchNorm2d):  # resnet's bn1 sits with conv1
            groups[-1] += names
        else:
            groups.append(names)
    groups.append([f"backbone.fpn.{n}" for n, _ in detector.backbone.fpn.named_parameters()])
    heads = [
        n
        for n, _ in detector.named_parameters()
        if not n.startswith("backbone.") and not n.startswith(_CLASS_SPECIFIC)
    ]
    groups.append(heads)
    return [g for g in groups if g]


def detector_checkpoint_prefix(keys: list[str]) -> str | None:
    """The wrapper prefix under which `keys` hold a whole torchvision-style detector, or None (e.g. a classifier).

    A detector checkpoint has body and FPN keys (``backbone.body.``, ``backbone.fpn.``) and detection heads
    (``rpn.``/``roi_heads.`` or ``head.``).

    Example:
        >>> detector_checkpoint_prefix(["backbone.body.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
        ...                             "rpn.head.conv.0.0.weight"])
        ''
        >>> detector_checkpoint_prefix(["conv1.weight", "fc.weight"]) is None
        True
    """
    for prefix in _WRAPPERS:
        has = {
            m: any(k.startswith(prefix + m) for k in keys)
            for m in ("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.", "head.")
        }
        if has["backbone.body."] and has["backbone.fpn."] and (has["rpn."] or has["roi_heads."] or has["head."]):
            return prefix
    return None


def _head_family(keys: list[str]) -> str:
    if any(k.startswith(("rpn.", "roi_heads.")) for k in keys):
        return "fasterrcnn"
    return "fcos" if any(".bbox_ctrness." in k for k in keys) else "retinanet"


def _builder_kwargs(family: str, det_kwargs: dict[str, Any]) -> dict[str, Any]:
    """torchvision builder keywords from the task's detector keywords (names differ between detector classes)."""
    from ..heads.detection import proposal_counts

    out: dict[str, Any] = {}
    if det_kwargs.get("min_size") is not None:
        out["min_size"] = det_kwargs["min_size"]
    if det_kwargs.get("max_size") is not None:
        out["max_size"] = int(det_kwargs["max_size"])
    for key in ("image_mean", "image_std"):
        if det_kwargs.get(key) is not None:
            out[key] = [float(v) for v in det_kwargs[key]]
    score = det_kwargs.get("box_score_thresh")
    per_img = det_kwargs.get("detections_per_img")
    if family == "fasterrcnn":
        if out.get("min_size") is not None:
            out.update(proposal_counts(out["min_size"]))
        if score is not None:
            out["box_score_thresh"] = float(score)
        if per_img is not None:
            out["box_detections_per_img"] = int(per_img)
    else:
        if score is not None:
            out["score_thresh"] = float(score)
        if per_img is not None:
            out["detections_per_img"] = int(per_img)
    return out


def _set_anchors(detector: nn.Module, anchor_sizes: Any, aspect_ratios: Any, family: str) -> None:
    """Replaces a torchvision builder's anchors (same count per location, so the pretrained heads still fit)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from ..heads.detection import check_anchor_sizes, check_aspect_ratios

    owner = detector.rpn if family == "fasterrcnn" else detector
    old = owner.anchor_generator
    sizes = check_anchor_sizes(anchor_sizes, len(old.sizes), family)
    ratios = check_aspect_ratios(aspect_ratios) if aspect_ratios is not None else tuple(old.aspect_ratios[0])
    new = AnchorGenerator(sizes, (ratios,) * len(sizes))
    if new.num_anchors_per_location() != old.num_anchors_per_location():
        raise ConfigError(
            f"anchor_sizes={anchor_sizes!r} / aspect_ratios give {new.num_anchors_per_location()[0]} anchors per "
            f"location, but the checkpoint's heads predict {old.num_anchors_per_location()[0]}; keep the count."
        )
    owner.anchor_generator = new


def _from_detector_checkpoint(
    backbone: Any,
    num_classes: int,
    head: Any,
    state: dict[str, torch.Tensor] | None,
    path: str | None,
    builder: str | None,
    det_kwargs: dict[str, Any],
) -> tuple[nn.Module, str, str]:
    """(detector, head family, builder name): torchvision's builder for the checkpoint, its weights loaded."""
    import torchvision.models.detection as tvd

    from ..backbones import split_name

    keys = list(state) if state is not None else []
    family = (
        _head_family(keys)
        if builder is None
        else next(f for f, bs in DETECTOR_BUILDERS.items() if builder in (b for b, _ in bs))
    )
    if isinstance(head, str) and head != family:
        raise ConfigError(
            f"pretrained={path!r} is a {family} checkpoint, but head={head!r}; pass head={family!r} (or leave head "
            "unset)."
        )
    body_name = split_name(backbone)[1] if isinstance(backbone, str) and ":" in backbone else None
    candidates = [(b, n) for b, n in DETECTOR_BUILDERS[family] if builder in (None, b)]
    if builder is None:
        fits = [(b, n) for b, n in candidates if body_name is None or n == body_name]
        if not fits:
            bodies = sorted({n for _, n in candidates})
            raise ConfigError(
                f"pretrained={path!r} is a whole {family} detector; torchvision's {family} checkpoints use the bodies "
                f"{bodies}, so pass backbone='tv:{bodies[0]}' (got {backbone!r})."
            )
        builder = _match_builder(fits, state, num_classes, path)
    detector = getattr(tvd, builder)(
        weights=None, weights_backbone=None, num_classes=num_classes + 1, **_builder_kwargs(family, det_kwargs)
    )
    if det_kwargs.get("anchor_sizes") is not None:
        _set_anchors(detector, det_kwargs["anchor_sizes"], det_kwargs.get("aspect_ratios"), family)
    if state is not None:
        _load_detector_state(detector, state, path)
    return detector, family, builder


def _match_builder(candidates: list[tuple[str, str]], state: dict[str, torch.Tensor], k: int, path: Any) -> str:
    """The builder whose parameter and buffer names are exactly the file's (BatchNorm counters aside)."""
    import torchvision.models.detection as tvd

    def names(keys):
        return {n for n in keys if not n.endswith("num_batches_tracked")}

    file_keys = names(state)
    for builder, _ in candidates:
        with torch.device("meta"):  # names and shapes only: no memory, no init cost
            model = getattr(tvd, builder)(weights=None, weights_backbone=None, num_classes=k + 1)
        if names(model.state_dict()) == file_keys:
            return builder
    tried = ", ".join(b for b, _ in candidates)
    raise WeightsError(
        f"Weights in '{path}' look like a whole detector, but their keys match none of torchvision's builders "
        f"{tried}. Pass a checkpoint saved from one of them (torch.save(model.state_dict(), path)), or a "
        "classification weights file for the backbone."
    )


def _load_detector_state(detector: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    target = detector.state_dict()
    to_load, mismatched = {}, []
    for key, tensor in state.items():
        if key not in target:
            continue
        if tuple(tensor.shape) == tuple(target[key].shape):
            to_load[key] = tensor
        elif not key.startswith(_CLASS_SPECIFIC):
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(target[key].shape)}")
    if mismatched:
        raise WeightsError(
            f"Weights in '{path}' do not fit the detector: {', '.join(mismatched[:4])}. Was the checkpoint saved "
            "from another architecture?"
        )
    missing = [
        k
        for k in target
        if k not in to_load and not k.endswith("num_batches_tracked") and not k.startswith(_CLASS_SPECIFIC)
    ]
    if missing:
        raise WeightsError(f"Weights in '{path}' lack {len(missing)} detector keys, e.g. {missing[:4]}.")
    detector.load_state_dict(to_load, strict=False)


def _head_factory(head: Any, default_head: str) -> tuple[Callable[..., nn.Module], str]:
    from ..heads import list_heads
    from ..registry import HEADS

    detection_heads = list_heads(task="object-detection")
    if head is None:
        # create_model's default_head is the classifiers' ("linear") unless the task names its own
        head = default_head if default_head in detection_heads else "fasterrcnn"
    if isinstance(head, str):
        if head not in detection_heads:
            if head in HEADS:
                raise ConfigError(
                    f"head={head!r} is not a detection head; use one of {detection_heads} (see "
                    "tk.list_heads(task='object-detection'))."
                )
            HEADS.get(head)  # raises UnknownNameError with the closest names
        return HEADS.get(head), head
    if isinstance(head, nn.Module) or not callable(head):
        raise ConfigError(
            f"head={type(head).__name__} cannot be used for object detection: pass a registered head name "
            "('fasterrcnn', 'retinanet', 'fcos') or a factory (backbone, num_classes, **kw) -> detector, e.g. "
            "registered with tk.register_head(name, factory, tasks=('object-detection',))."
        )
    return head, getattr(head, "__name__", type(head).__name__)


def _accepted(fn: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords `fn` accepts (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@MODELS.register("detector")
def build_detector(
    backbone: Any,
    num_classes: int | None,
    *,
    head: Any = None,
    pretrained: bool | str = True,
    head_kwargs: dict[str, Any] | None = None,
    default_head: str = "fasterrcnn",
    is_pretrained: bool | None = None,
    builder: str | None = None,
    **det_kwargs: Any,
) -> DetectionModel:
    """A :class:`DetectionModel` for `num_classes` object classes (K; the detector predicts K + 1).

    Args:
        backbone: a ``tv:``/``timm:`` name or a backbone adapter module with ``features()``.
        num_classes: K, the number of object classes.
        head: a detection head name (``"fasterrcnn"``, ``"retinanet"``, ``"fcos"``) or a factory.
        pretrained: True (the library's weights for the body), False, a local classification weights file for the
            body, or a whole torchvision detector checkpoint (see the module docs).
        head_kwargs: extra keywords for the head factory (e.g. ``fpn_channels``, torchvision detector options).
        is_pretrained: overrides whether the layer groups count as pretrained (``tk.load`` rebuilds a trained
            model with ``pretrained=False`` and restores the flag, so BatchNorm is frozen the same way).
        builder: rebuild a whole-detector checkpoint's torchvision builder without weights (``tk.load``).
        **det_kwargs: the detector keywords of :data:`~transferkit.heads.detection.DETECTOR_KEYWORDS`.

    Example:
        >>> model = build_detector("timm:test_resnet", 3, head="retinanet", pretrained=False, min_size=64)
        >>> model.head_name, len(model.layer_groups()) > 1, model.is_pretrained
        ('retinanet', True, False)
    """
    from ..backbones import create_backbone
    from ..backbones.weights import read_state_dict

    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"A detector needs num_classes >= 1 object classes, got {num_classes!r}.")
    unknown = set(det_kwargs) - set(_detector_keywords())
    if unknown:
        raise ConfigError(f"Unknown detector option(s) {sorted(unknown)}; valid: {sorted(_detector_keywords())}.")
    head_kwargs = dict(head_kwargs or {})
    if builder is not None or (isinstance(pretrained, (str, Path)) and Path(pretrained).is_file()):
        state = read_state_dict(pretrained) if isinstance(pretrained, (str, Path)) else None
        prefix = detector_checkpoint_prefix(list(state)) if state is not None else None
        if prefix is not None and prefix.endswith("detector."):
            raise WeightsError(
                f"'{pretrained}' holds a whole transferkit detector (a run's model.safetensors), which cannot seed a "
                "new run yet. Continue that run with resume=True and its output_dir, or start from a torchvision "
                "detector checkpoint or the backbone's classification weights."
            )
        if builder is not None or prefix is not None:
            if state is not None:
                state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if head_kwargs:
                raise ConfigError(
                    f"head_kwargs={head_kwargs!r} cannot be used with a whole-detector checkpoint (torchvision's "
                    "builder fixes the architecture); pass detector options such as image_size instead."
                )
            detector, family, builder = _from_detector_checkpoint(
                backbone, num_classes, head, state, str(pretrained), builder, det_kwargs
            )
            loaded = state is not None or bool(is_pretrained)
            return DetectionModel(
                detector,
                is_pretrained=loaded if is_pretrained is None else is_pretrained,
                head_name=family,
                builder=builder,
            )
    factory, head_name = _head_factory(head, default_head)
    bb = create_backbone(backbone, pretrained=pretrained)
    if not callable(getattr(bb, "features", None)):
        raise ConfigError(
            f"backbone={backbone!r} has no multi-scale view, so it cannot be a detection body; use a tv: or timm: "
            "CNN backbone."
        )
    detector = factory(
        bb, num_classes, **_accepted(factory, {k: v for k, v in det_kwargs.items() if v is not None}), **head_kwargs
    )
    if not isinstance(detector, nn.Module):
        raise ConfigError(f"Detection head factory {head_name!r} returned {type(detector).__name__}, not a module.")
    flag = getattr(bb, "is_pretrained", pretrained is not False) if is_pretrained is None else is_pretrained
    return DetectionModel(detector, is_pretrained=bool(flag), head_name=head_name)


def _detector_keywords() -> tuple[str, ...]:
    from ..heads.detection import DETECTOR_KEYWORDS

    return DETECTOR_KEYWORDS
