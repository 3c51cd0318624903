"""Object detection: COCO-format boxes -> a fine-tuned torchvision detector around any tv:/timm: backbone.

Data: see :func:`transferkit.data.coco.resolve_detection_data` (a COCO JSON file, a folder holding one, split
folders, or a dict of splits). Category ids may be any integers; they map to labels 1..K (0 = background) and back
to the original ids in every result, with the names kept in ``transferkit.json``.

Model: the heads of :mod:`transferkit.heads.detection` (``fasterrcnn`` by default, ``retinanet``, ``fcos``) built
around the backbone's multi-scale view, or a whole torchvision detector checkpoint (``pretrained=<file>``). The
detector resizes inside (torchvision's ``GeneralizedRCNNTransform``); the default size is the data's own (the
median short side of the training images, at most 800), not torchvision's 800 px, which upsamples small images ~6x.
Anchors are fitted to the training boxes. BatchNorm of the pretrained body is frozen (``FrozenBatchNorm2d``), as
in torchvision's detection recipes for small batches.

Metrics: COCO mAP on the original image coordinates and category ids (``val/map`` picks the best epoch), with the
scored detections written as ``predictions_<split>.json``. torchvision detectors compute no loss in eval mode, and
a second, training-mode pass only to report one would cost about a training forward per batch: no ``val/loss`` is
reported (never a made-up one).

Example:
    >>> import transferkit as tk
    >>> result = tk.finetune("object-detection", data="data/boxes", backbone="tv:mobilenet_v2",
    ...                      head="fasterrcnn", epochs=12, output_dir="runs/boxes")  # doctest: +SKIP
    >>> tk.load("runs/boxes").predict(["a.jpg"])[0]  # doctest: +SKIP
    {'boxes': [[12.3, 40.1, 88.0, 97.5]], 'labels': ['circle'], 'scores': [0.97]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import FinetuneConfig
from ..data.imageio import MAX_IMAGE_PIXELS
from ..errors import ConfigError, DataError
from ..registry import TASKS
from .base import Metrics, Splits, Task, fingerprint

# torchvision's default resize (short side 800, long side at most 1333): the caps of the data-derived sizes.
MAX_MIN_SIZE, MAX_MAX_SIZE = 800, 1333


@dataclass(frozen=True)
class ObjectDetectionOptions:
    """Options of the object-detection task (pass them to ``tk.finetune`` as keywords).

    Attributes:
        image_size: the short side images are resized to inside the detector (torchvision's ``min_size``); a list
            draws one size per training image (multi-scale training; evaluation uses the last). None: the training
            images' median short side, at most 800.
        max_size: the most the long side may be after resizing; None: image_size times the training images'
            95th-percentile aspect ratio (long / short side), at most 1333.
        anchor_sizes: anchor sizes in pixels after resizing, one list per feature map (5 for the built-in heads;
            3 per map for retinanet's octaves); None: fitted to the training boxes (5th-95th percentile sizes).
        aspect_ratios: anchor height/width ratios at each location (Faster R-CNN and RetinaNet).
        train_transforms: "default" (random horizontal flip), "strong" (photometric distortion, zoom-out, IoU
            crop, flip), "none" (for data where mirroring changes the meaning), or a callable
            ``(image, target) -> (image, target)`` on tv_tensors.
        bad_boxes: boxes with a non-positive size or more than 1 px past their image: "drop" them (one warning),
            "clip" them to the image, or "error".
        skip_bad_files: leave out images whose file is missing or unreadable (one warning) instead of failing.
        box_score_thresh: evaluation keeps detections scoring above this for mAP (0.05, as torchvision).
        detections_per_img: at most this many detections per image.
        score_threshold: ``predict`` returns detections at or above this score.
        coco_backend: "auto" (faster-coco-eval when installed, else pycocotools), "pycocotools" or
            "faster_coco_eval": identical numbers.
        max_image_pixels: images with more pixels are refused before decoding (a decompression-bomb guard).
    """

    image_size: Any = None
    max_size: int | None = None
    anchor_sizes: Any = None
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    train_transforms: Any = "default"
    bad_boxes: str = "drop"
    skip_bad_files: bool = False
    box_score_thresh: float = 0.05
    detections_per_img: int = 100
    score_threshold: float = 0.5
    coco_backend: str = "auto"
    max_image_pixels: int | None = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.image_size is not None:
            _image_sizes(self.image_size)
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError(f"max_size={self.max_size!r} must be a positive number of pixels.")
        for name in ("box_score_thresh", "score_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}={value!r} must be a score in [0, 1].")
        if self.detections_per_img < 1:
            raise ConfigError(f"detections_per_img={self.detections_per_img!r} must be at least 1.")
        from ..data.coco import BAD_BOX_POLICIES
        from ..metrics.detection import COCO_BACKENDS

        if self.bad_boxes not in BAD_BOX_POLICIES:
            raise ConfigError(f"bad_boxes={self.bad_boxes!r} is invalid; use one of {list(BAD_BOX_POLICIES)}.")
        if str(self.coco_backend).lower().replace("-", "_") not in COCO_BACKENDS:
            raise ConfigError(f"coco_backend={self.coco_backend!r} is invalid; use one of {list(COCO_BACKENDS)}.")


def _image_sizes(value: Any) -> tuple[int, ...]:
    sizes = value if isinstance(value, (list, tuple)) else (value,)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s < 1 or s != int(s) for s in sizes):
        raise ConfigError(
            f"image_size={value!r} must be a positive number of pixels (the short side after resizing), or a list "
            "of them for multi-scale training, e.g. 320 or [288, 320, 352]."
        )
    return tuple(int(s) for s in sizes)


@TASKS.register("object-detection", domain="image")
class ObjectDetectionTask(Task):
    """Detects objects with boxes. Metrics: COCO mAP (map, map_50, map_75, small/medium/large, mar_100, ap_<class>)."""

    name = "object-detection"
    Options = ObjectDetectionOptions
    # lr: on the generated shapes of benchmarks/detection.py (96 training / 32 val images, 128-320 px), fasterrcnn on
    # tv:mobilenet_v2 with the ImageNet file, batch 4, 2 epochs (48 steps) with the engine's AdamW/cosine defaults:
    # val mAP 0.406 / 0.659 / 0.551 (mAP@0.5 0.845 / 0.983 / 0.965) at lr 1e-4 / 3e-4 / 1e-3. batch_size: a step of
    # 4 images of ~185 px takes ~2.5 s on one CPU thread (the engine's 32 would take ~20 s and gives 3 steps an
    # epoch on 100 images); torchvision's detection references train 2 images per GPU.
    defaults = {"batch_size": 4, "lr": 3e-4}
    monitor = "val/map"
    monitor_mode = "max"
    default_head = "fasterrcnn"
    batchnorm = "frozen"  # FrozenBatchNorm2d in the pretrained body: batch statistics of 2-8 images are noise
    modality = "image"
    writes_artifacts = True  # predictions_<split>.json of the final (best-restored) model

    def __init__(self, config: FinetuneConfig, options: ObjectDetectionOptions | None = None) -> None:
        super().__init__(config, options)
        self.categories = None  # CategoryMap: category ids <-> labels 1..K
        self.detector_config: dict[str, Any] = {}  # sizes, anchors, head/builder: what rebuilds the model
        self._ground_truth: dict[str, dict[str, Any]] = {}  # split -> COCO dict that metrics score against

    @property
    def score_threshold(self) -> float:
        """The score at or above which ``predict`` returns a detection (set it on a loaded model's task)."""
        return self.options.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.options = replace(self.options, score_threshold=float(value))

    # --- phase 1: data ------------------------------------------------------------------------------------
    def read_data(self, data: Any):
        from ..data.coco import resolve_detection_data

        opts = self.options
        resolved = resolve_detection_data(
            data,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            bad_boxes=opts.bad_boxes,
            skip_bad_files=opts.skip_bad_files,
            max_pixels=opts.max_image_pixels,
        )
        self.categories = resolved.categories
        self.labels = resolved.class_names
        return resolved

    def data_fingerprint(self, raw: Any) -> str:
        train = raw.train
        return fingerprint(self.categories.to_dict(), train.coco["images"], train.coco["annotations"])

    def describe_data(self, raw: Any) -> dict[str, Any]:
        sizes = {name: len(split) for name, split in raw.splits.items()}
        boxes = sum(len(a) for a in raw.train.annotations)
        note = f"{boxes} training boxes"
        if raw.val_from_train:
            note += ", val carved from train"
        cfg = self.detector_config
        if cfg.get("min_size") is not None:
            note += f"; images resized to short side {cfg['min_size']} (long side <= {cfg['max_size']})"
        return {"splits": sizes, "classes": len(self.labels), "note": note}

    # --- phase 2: model -----------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        from ..models import create_model

        cfg = self.config
        if raw is not None:
            self.detector_config = self._sizes_from_data(raw.train)
        det = self.detector_config
        stored = "anchor_sizes" in det and det.get("resolved")
        model = create_model(
            cfg.backbone,
            len(self.labels),
            kind="detector",
            task=self.name,
            head=cfg.head,
            pretrained=cfg.pretrained,
            head_kwargs=dict(cfg.head_kwargs),
            default_head=self.default_head,
            is_pretrained=det.get("is_pretrained") if stored else None,
            builder=det.get("builder") if stored else None,
            min_size=det["min_size"],
            max_size=det["max_size"],
            image_mean=det.get("image_mean") if stored else None,
            image_std=det.get("image_std") if stored else None,
            anchor_sizes=det.get("anchor_sizes"),
            aspect_ratios=det.get("aspect_ratios"),
            object_sizes=None if stored else det.get("object_sizes"),
            box_score_thresh=self.options.box_score_thresh,
            detections_per_img=self.options.detections_per_img,
        )
        self.detector_config = {**det, **_resolved_config(model), "resolved": True}
        return model

    def _sizes_from_data(self, train: Any) -> dict[str, Any]:
        """Image size and object sizes from the training split (the options win where given)."""
        from ..data.coco import data_statistics

        opts = self.options
        stats = data_statistics(train)
        if opts.image_size is not None:
            sizes = _image_sizes(opts.image_size)
        else:
            sizes = (int(min(MAX_MIN_SIZE, max(1, round(stats["image_short_side_median"])))),)
        min_size: Any = sizes[0] if len(sizes) == 1 else list(sizes)
        if opts.max_size is not None:
            max_size = int(opts.max_size)
            if max_size < max(sizes):
                raise ConfigError(
                    f"max_size={max_size} is smaller than image_size={max(sizes)}: the long side cannot be shorter "
                    "than the short side. Raise max_size or leave it unset (it then follows the data's aspect ratio)."
                )
        else:
            aspects = [max(i["width"], i["height"]) / min(i["width"], i["height"]) for i in train.coco["images"]]
            max_size = max(max(sizes), min(MAX_MAX_SIZE, math.ceil(max(sizes) * float(np.percentile(aspects, 95)))))
        rel = stats["box_size_rel"]
        # objects' sizes after the detector's resize (evaluation size: the last of a multi-scale list)
        objects = [rel["p5"] * sizes[-1], rel["p95"] * sizes[-1]] if rel else None
        anchors = opts.anchor_sizes
        return {
            "min_size": min_size,
            "max_size": max_size,
            "anchor_sizes": [list(a) if isinstance(a, (list, tuple)) else [a] for a in anchors] if anchors else None,
            "aspect_ratios": list(opts.aspect_ratios),
            "object_sizes": objects,
        }

    # --- phase 3: datasets ----------------------------------------------------------------------------------
    def build_datasets(self, raw: Any) -> Splits:
        opts = self.options
        built = {}
        for name, split in raw.splits.items():
            self._ground_truth[name] = split.coco
            built[name] = split.build(
                self.transform(train=name == "train"), max_pixels=opts.max_image_pixels, skip_bad=opts.skip_bad_files
            )
        return Splits(built["train"], built.get("val"), built.get("test"), self.labels)

    def eval_dataset(self, data: Any):
        from ..data.coco import resolve_detection_split

        opts = self.options
        split = resolve_detection_split(
            data,
            self.categories,
            name="test",
            bad_boxes=opts.bad_boxes,
            skip_bad_files=opts.skip_bad_files,
            max_pixels=opts.max_image_pixels,
        )
        self._ground_truth["test"] = split.coco
        return split.build(self.transform(train=False), max_pixels=opts.max_image_pixels, skip_bad=opts.skip_bad_files)

    def transform(self, train: bool) -> Callable:
        from ..data.coco import build_detection_transforms

        preset = self.options.train_transforms if train else "default"
        if callable(preset) and not train:
            preset = "default"  # a custom training transform; evaluation only converts the image
        return build_detection_transforms(train=train, preset=preset)

    def collate_fn(self, split: str) -> Callable | None:
        from ..data.coco import collate_detection

        return collate_detection

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = _checked_batch(batch)
        return model(images, [_plain_target(t) for t in targets])

    def eval_step(self, model: nn.Module, batch: Any) -> tuple[None, list[dict[str, Any]]]:
        images, targets = _checked_batch(batch)
        outputs = model(images)
        records = [
            {
                "image_id": t["image_id"],
                "boxes": o["boxes"].detach().float().cpu(),
                "scores": o["scores"].detach().float().cpu(),
                "labels": o["labels"].detach().cpu(),
            }
            for o, t in zip(outputs, targets)
        ]
        return None, records

    def new_metrics(self, split: str = "val") -> Metrics:
        from ..metrics.detection import DetectionMetrics

        if split not in self._ground_truth:
            raise ConfigError(f"No ground truth for the {split!r} split; build the datasets (or eval_dataset) first.")
        return DetectionMetrics(
            self._ground_truth[split],
            self.categories.label_to_category,
            self.labels,
            backend=self.options.coco_backend,
            split=split,
        )

    # --- artifacts and inference -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        det = {k: v for k, v in self.detector_config.items() if k != "resolved"}
        return {
            "labels": list(self.labels),
            "categories": self.categories.to_dict() if self.categories else None,
            "detector": _jsonable(det),
            "score_threshold": self.options.score_threshold,
            "box_score_thresh": self.options.box_score_thresh,
            "detections_per_img": self.options.detections_per_img,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> ObjectDetectionTask:
        from ..data.coco import CategoryMap

        options = ObjectDetectionOptions(
            score_threshold=float(state.get("score_threshold", 0.5)),
            box_score_thresh=float(state.get("box_score_thresh", 0.05)),
            detections_per_img=int(state.get("detections_per_img", 100)),
        )
        task = cls(config, options)
        task.labels = list(state["labels"])
        task.categories = CategoryMap.from_dict(state["categories"])
        task.detector_config = {**dict(state["detector"]), "resolved": True}
        return task

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int) -> list[dict]:
        """``{"boxes": [[x0, y0, x1, y1], ...], "labels": [names], "scores": [...]}`` per input, in the input's
        pixels, for detections scoring at least ``score_threshold`` (best first). Draw them on the image with
        :func:`transferkit.data.coco.draw_detections`."""
        from ..data.imageio import load_image

        model.eval()
        threshold = self.options.score_threshold
        out: list[dict] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            images = [load_image(x, self.options.max_image_pixels).to(device).float().div_(255) for x in chunk]
            for det in model(images):
                keep = det["scores"] >= threshold
                boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
                out.append(
                    {
                        "boxes": [[round(float(v), 2) for v in box] for box in boxes.tolist()],
                        "labels": [self.labels[int(i) - 1] for i in labels],
                        "scores": [round(float(s), 6) for s in scores],
                    }
                )
        return out


def _checked_batch(batch: Any) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images, targets = batch
    if not images:
        raise DataError("Every image of a batch failed to decode; see the warnings above for the files.")
    return images, targets


def _plain_target(target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The boxes (a plain tensor, not a tv_tensor) and labels a torchvision detector trains on."""
    return {"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"]}


def _resolved_config(model: nn.Module) -> dict[str, Any]:
    """What the built detector decided (anchors, sizes, normalisation), read back from it: rebuilding from these
    values gives the same detector without the data."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    detector = model.detector
    transform = detector.transform
    anchors = next((m for m in detector.modules() if isinstance(m, AnchorGenerator)), None)
    min_size = list(transform.min_size)
    out = {
        "head": model.head_name,
        "builder": model.builder,
        "is_pretrained": bool(model.is_pretrained),
        "min_size": min_size[0] if len(min_size) == 1 else min_size,
        "max_size": int(transform.max_size),
        "image_mean": [float(v) for v in transform.image_mean],
        "image_std": [float(v) for v in transform.image_std],
    }
    if anchors is not None:
        out["anchor_sizes"] = [[float(s) for s in level] for level in anchors.sizes]
        out["aspect_ratios"] = [float(r) for r in anchors.aspect_ratios[0]]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
