"""Object-detection data in COCO format: find each split's images and boxes, check them up front, serve them.

`resolve_detection_data` turns what a user passes as ``data`` (a COCO JSON file, a folder holding one, a folder
of split folders, or a dict of splits) into a `DetectionData`: the class names, the category-id <-> label map, and
per split a `CocoSplit` holding the split's normalised COCO dict (the ground truth COCOeval scores against), its
image paths and per-image annotations. `DetectionDataset` yields ``(image, target)`` pairs in the form torchvision
detectors take, through a joint transform from `build_detection_transforms`; `collate_detection` batches them.

Labels: category ids may be any integers (1, 3, 7); they map to labels 1..K in ascending id order, and 0 is the
background, as torchvision detectors expect (``num_classes = K + 1``).

Crowd boxes (``iscrowd=1``) stay in each split's COCO dict, so COCOeval ignores detections that fall on them as
COCO intends; `DetectionDataset` drops them from the targets of the train split (``drop_crowd=None``), because a
torchvision detector would train on them as ordinary boxes. Other splits keep them, flagged in ``iscrowd``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError, DataError
from .imageio import MAX_IMAGE_PIXELS, bad_files_listing, check_files, read_image_file
from .splits import canonical_split, normalise_splits, random_split, split_folders

__all__ = [
    "BAD_BOX_POLICIES",
    "DETECTION_PRESETS",
    "CategoryMap",
    "CocoSplit",
    "DetectionData",
    "DetectionDataset",
    "build_detection_transforms",
    "collate_detection",
    "data_statistics",
    "draw_detections",
    "resolve_detection_data",
    "resolve_detection_split",
]

BAD_BOX_POLICIES = ("drop", "clip", "error")
DETECTION_PRESETS = ("default", "strong", "none")
ANNOTATION_FILE = "annotations.json"
IMAGE_FOLDER = "images"
# Boxes that stick out of their image by at most this many pixels are clipped silently: annotation tools round
# coordinates, so x + w = W + 0.5 is common and not a mistake worth a warning.
EDGE_TOLERANCE = 1.0
_MAX_LISTED = 5  # files / boxes named in one message
_REQUIRED_KEYS = ("images", "annotations", "categories")


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryMap:
    """COCO category ids <-> contiguous labels 1..K (0 is the background), with the class names.

    Label ``i + 1`` is category ``category_ids[i]``, named ``names[i]``; ids are sorted ascending. `to_dict` gives
    a JSON-safe form (lists, no int dict keys) for ``transferkit.json``; `from_dict` reads it back.

    Example:
        >>> cmap = CategoryMap((1, 3, 7), ("cat", "dog", "bird"))
        >>> cmap.category_to_label[7], cmap.label_to_category[2], cmap.num_classes
        (3, 3, 3)
        >>> CategoryMap.from_dict(json.loads(json.dumps(cmap.to_dict()))) == cmap
        True
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        ids, names = tuple(int(c) for c in self.category_ids), tuple(str(n) for n in self.names)
        if len(ids) != len(names):
            raise DataError(f"CategoryMap got {len(ids)} category ids but {len(names)} names; pass one name per id.")
        if not ids:
            raise DataError("CategoryMap needs at least one category.")
        if list(ids) != sorted(set(ids)):
            raise DataError(f"CategoryMap category ids must be unique and ascending, got {list(ids)}.")
        object.__setattr__(self, "category_ids", ids)
        object.__setattr__(self, "names", names)

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (a torchvision detector takes ``num_classes=K + 1``)."""
        return len(self.category_ids)

    @property
    def label_to_category(self) -> dict[int, int]:
        return {i + 1: c for i, c in enumerate(self.category_ids)}

    @property
    def category_to_label(self) -> dict[int, int]:
        return {c: i + 1 for i, c in enumerate(self.category_ids)}

    def to_dict(self) -> dict[str, list]:
        """``{"category_ids": [...], "class_names": [...]}``: JSON-safe; label i + 1 is entry i."""
        return {"category_ids": list(self.category_ids), "class_names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryMap:
        """The inverse of `to_dict`."""
        try:
            return cls(tuple(data["category_ids"]), tuple(data["class_names"]))
        except (KeyError, TypeError):
            raise DataError(
                f"A category map needs 'category_ids' and 'class_names' lists, got {dict(data)!r}."
            ) from None


@dataclass(frozen=True, eq=False)
class CocoSplit:
    """One split of a detection data set, checked and normalised.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        coco: the split's normalised COCO dict, the ground truth for COCOeval: ``images`` (``id``, ``file_name``,
            ``width``, ``height``), ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` [x, y, w, h]
            in pixels, ``area``, ``iscrowd``, with bad boxes already dropped or clipped) and ``categories`` (the
            training vocabulary, ascending ids). Other fields (segmentations, licenses) are left out.
        paths: the image file of each entry of ``coco["images"]``, in that order.
        annotations: the annotations of each image, in that order (the same dicts as in ``coco``); an empty list
            is a negative image.
        categories: the id <-> label map shared by all splits.
        origin: where the split came from, for messages.

    Example:
        >>> split = resolve_detection_data("data/boxes").train  # doctest: +SKIP
        >>> len(split), split.coco["images"][0]["id"], len(split.annotations[0])
        (90, 1, 3)
    """

    name: str
    coco: dict[str, Any] = field(repr=False)
    paths: list[str] = field(repr=False)
    annotations: list[list[dict[str, Any]]] = field(repr=False)
    categories: CategoryMap = field(repr=False)
    origin: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (
            f"CocoSplit({self.name!r}, images={len(self)}, boxes={len(self.coco['annotations'])}, "
            f"origin={self.origin!r})"
        )

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.coco["images"]]

    def build(
        self,
        transform: Callable | None = None,
        *,
        drop_crowd: bool | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_bad: bool = False,
    ) -> DetectionDataset:
        """A `DetectionDataset` over this split (see there for the arguments).

        Example:
            >>> ds = data.train.build(build_detection_transforms(train=True))  # doctest: +SKIP
        """
        return DetectionDataset(self, transform, drop_crowd=drop_crowd, max_pixels=max_pixels, skip_bad=skip_bad)

    def _take(self, idx: Sequence[int], name: str) -> CocoSplit:
        """The images at positions `idx` (with their annotations) as a split of its own, with a consistent dict."""
        images = [self.coco["images"][i] for i in idx]
        anns = [self.annotations[i] for i in idx]
        coco = {
            "images": images,
            "annotations": [a for per_image in anns for a in per_image],
            "categories": self.coco["categories"],
        }
        return CocoSplit(name, coco, [self.paths[i] for i in idx], anns, self.categories, self.origin)


@dataclass(frozen=True)
class DetectionData:
    """The resolved splits of an object-detection run.

    Attributes:
        categories: category ids <-> labels 1..K and the class names (ordered by category id).
        train, val: the training and validation splits (val carved out of train by image when not given).
        test: the test split, or None.
        val_from_train: True when `val` was carved out of the training data.

    Example:
        >>> data = resolve_detection_data("data/boxes")  # doctest: +SKIP
        >>> data.class_names, data.label_to_category
        (['cat', 'dog'], {1: 1, 2: 3})
    """

    categories: CategoryMap
    train: CocoSplit
    val: CocoSplit
    test: CocoSplit | None = None
    val_from_train: bool = False

    @property
    def class_names(self) -> list[str]:
        """Class names; ``class_names[label - 1]`` names label ``label``."""
        return list(self.categories.names)

    @property
    def label_to_category(self) -> dict[int, int]:
        return self.categories.label_to_category

    @property
    def category_to_label(self) -> dict[int, int]:
        return self.categories.category_to_label

    @property
    def splits(self) -> dict[str, CocoSplit]:
        """The present splits by name, e.g. ``{"train": ..., "val": ...}``."""
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out


# ----------------------------------------------------------------------------------------------------------------
# Dataset, transforms, collate
# ----------------------------------------------------------------------------------------------------------------
class DetectionDataset(Dataset):
    """The images of a `CocoSplit` with their boxes, as torchvision detectors take them.

    Each item is ``(image, target)`` after ``transform(image, target)`` (if given): without a transform the
    image is a uint8 ``(3, H, W)`` RGB tensor; `build_detection_transforms` ends with a float32 [0, 1] image,
    which is what torchvision detectors want (their ``GeneralizedRCNNTransform`` rejects uint8 and normalises
    inside). The target holds:

    - ``boxes``: ``tv_tensors.BoundingBoxes`` (N, 4), XYXY, float32, pixel coordinates, ``canvas_size=(H, W)``;
    - ``labels``: int64 (N,), in 1..K (see `CategoryMap`);
    - ``iscrowd``: bool (N,);
    - ``image_id``: the original COCO image id (int);
    - ``orig_size``: ``(H, W)`` of the decoded image, before any transform.

    Args:
        split: the split to serve.
        transform: a joint transform ``(image, target) -> (image, target)``, e.g. from `build_detection_transforms`.
        drop_crowd: leave crowd boxes out of the targets. None: for the train split only (a detector would learn
            them as ordinary objects; COCOeval still sees them through ``split.coco``).
        max_pixels: decoding refuses larger images (decompression-bomb guard).
        skip_bad: an image that fails to decode yields None (one warning per file) instead of raising;
            `collate_detection` leaves such items out.

    Example:
        >>> ds = DetectionDataset(data.train, build_detection_transforms(train=True))  # doctest: +SKIP
        >>> image, target = ds[0]
        >>> image.dtype, target["boxes"].shape, target["labels"].tolist()
        (torch.float32, torch.Size([2, 4]), [1, 3])
    """

    def __init__(
        self,
        split: CocoSplit,
        transform: Callable | None = None,
        *,
        drop_crowd: bool | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_bad: bool = False,
    ):
        self.transform = transform
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.drop_crowd = split.name == "train" if drop_crowd is None else bool(drop_crowd)
        self.paths = list(split.paths)
        self.image_ids = split.image_ids
        self.sizes = [(img["height"], img["width"]) for img in split.coco["images"]]
        to_label = split.categories.category_to_label
        # Arrays, not dicts: smaller to pickle into DataLoader workers, and no per-item parsing.
        self.boxes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.crowd: list[np.ndarray] = []
        for anns in split.annotations:
            if self.drop_crowd:
                anns = [a for a in anns if not a["iscrowd"]]
            xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
            self.boxes.append(xyxy)
            self.labels.append(np.asarray([to_label[a["category_id"]] for a in anns], dtype=np.int64))
            self.crowd.append(np.asarray([bool(a["iscrowd"]) for a in anns], dtype=bool))
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]] | None:
        path = self.paths[index]
        try:
            image = read_image_file(path, self.max_pixels)
        except DataError as e:
            if not self.skip_bad:
                raise
            if path not in self.skipped:
                self.skipped.append(path)
                warnings.warn(f"Skipped an undecodable image (skip_bad_files=True): {e}", UserWarning, stacklevel=2)
            return None
        h, w = image.shape[-2:]
        if (h, w) != self.sizes[index]:
            eh, ew = self.sizes[index]
            raise DataError(
                f"Image {path!r} decodes to {w}x{h} pixels, but its boxes were checked against {ew}x{eh}. Was the "
                "file replaced after the data was resolved? Resolve the data again."
            )
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(self.boxes[index].copy()), format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.from_numpy(self.labels[index].copy()),
            "iscrowd": torch.from_numpy(self.crowd[index].copy()),
            "image_id": self.image_ids[index],
            "orig_size": (h, w),
        }
        if self.transform is None:
            return image, target
        image, target = self.transform(tv_tensors.Image(image), target)
        if isinstance(image, tv_tensors.Image):  # hand the model a plain tensor
            image = image.as_subclass(torch.Tensor)
        return image, target


def collate_detection(batch: Sequence[Any]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Batches detection items of different sizes as ``(list of images, list of targets)``; None items are dropped.

    Example:
        >>> images, targets = collate_detection([ds[0], ds[1]])  # doctest: +SKIP
        >>> len(images), targets[0]["boxes"].shape
        (2, torch.Size([3, 4]))
    """
    items = [b for b in batch if b is not None]
    return [b[0] for b in items], [b[1] for b in items]


def _labels_and_flags(inputs: Any) -> tuple[torch.Tensor, ...] | None:
    """SanitizeBoundingBoxes' labels_getter: every per-box tensor of the target (labels, iscrowd), so that all
    stay aligned with the boxes; SanitizeBoundingBoxes' default finds ``labels`` only. A module-level function,
    so the transform pickles into DataLoader workers."""
    if isinstance(inputs, (tuple, list)):
        target = next((x for x in inputs if isinstance(x, Mapping)), None)
    else:
        target = inputs if isinstance(inputs, Mapping) else None
    if target is None:
        return None
    found = tuple(target[k] for k in ("labels", "iscrowd") if isinstance(target.get(k), torch.Tensor))
    return found or None


def build_detection_transforms(*, train: bool, preset: str | Callable = "default") -> Callable:
    """The joint ``(image, target) -> (image, target)`` transform of a detection split.

    Images come in as uint8 ``(3, H, W)`` and leave as float32 in [0, 1]: torchvision detectors take exactly
    that and resize and normalise inside (``GeneralizedRCNNTransform``). Nothing here resizes: evaluation images
    keep their original size, so the detector's boxes come back in original image coordinates.

    Presets (training; evaluation is only the float conversion):
        - ``"default"``: random horizontal flip, then ``SanitizeBoundingBoxes`` (drops boxes under 1 px with
          their labels and crowd flags).
        - ``"strong"``: torchvision's SSD reference recipe: photometric distortion, zoom-out, IoU crop, flip,
          then ``SanitizeBoundingBoxes`` (after the crop, which can cut boxes away).
        - ``"none"``: no augmentation (for data where mirroring changes the meaning); only the sanitising.
        - a callable: used as is, for training and evaluation.

    Example:
        >>> tf = build_detection_transforms(train=True)
        >>> image, target = tf(tv_tensors.Image(torch.zeros(3, 8, 8, dtype=torch.uint8)), {
        ...     "boxes": tv_tensors.BoundingBoxes([[0.0, 0.0, 4.0, 4.0]], format="XYXY", canvas_size=(8, 8)),
        ...     "labels": torch.tensor([1])})
        >>> image.dtype, target["boxes"].shape
        (torch.float32, torch.Size([1, 4]))
    """
    if callable(preset):
        return preset
    if preset not in DETECTION_PRESETS:
        raise ConfigError(f"Unknown detection transform preset {preset!r}; use one of {list(DETECTION_PRESETS)}.")
    to_float = v2.ToDtype(torch.float32, scale=True)  # converts the image only; boxes are float32 already
    if not train:
        return v2.Compose([to_float])
    sanitize = v2.SanitizeBoundingBoxes(labels_getter=_labels_and_flags)
    if preset == "default":
        ops = [v2.RandomHorizontalFlip(0.5), sanitize]
    elif preset == "strong":
        ops = [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: (123, 117, 104), "others": 0}),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(0.5),
            sanitize,
        ]
    else:
        ops = [sanitize]
    return v2.Compose([*ops, to_float])


# Colours of drawn boxes; a class keeps its colour across images (picked by a hash of its name).
_BOX_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def draw_detections(image: Any, prediction: Mapping[str, Any], *, width: int = 2, show_scores: bool = True):
    """The image with a prediction's boxes drawn on it, as a uint8 ``(H, W, 3)`` numpy array.

    Args:
        image: what was predicted on (a path, PIL image, ``(H, W, C)`` array or ``(C, H, W)`` tensor).
        prediction: one result of a detection ``predict``: ``{"boxes": [[x0, y0, x1, y1], ...], "labels": [...],
            "scores": [...]}`` in the image's pixels.
        width: line width in pixels.
        show_scores: write "label 0.93" at each box (else only the label).

    Example:
        >>> out = draw_detections(np.zeros((32, 48, 3), np.uint8), {"boxes": [[2, 2, 20, 20]], "labels": ["cat"],
        ...                       "scores": [0.9]})
        >>> out.shape, out[2, 10].tolist() != [0, 0, 0]
        ((32, 48, 3), True)
    """
    import zlib

    from torchvision.utils import draw_bounding_boxes

    from .imageio import load_image

    img = load_image(image)
    boxes = torch.as_tensor(prediction.get("boxes", []), dtype=torch.float32).reshape(-1, 4)
    names = [str(n) for n in prediction.get("labels", [])]
    scores = list(prediction.get("scores", [None] * len(names)))
    if not len(boxes) == len(names) == len(scores):
        raise DataError(
            f"draw_detections: the prediction has {len(boxes)} boxes, {len(names)} labels and {len(scores)} scores; "
            "pass one result of predict() unchanged."
        )
    if not len(boxes):
        return img.permute(1, 2, 0).numpy().copy()
    text = [f"{n} {s:.2f}" if show_scores and s is not None else n for n, s in zip(names, scores)]
    colours = [_BOX_COLOURS[zlib.crc32(n.encode()) % len(_BOX_COLOURS)] for n in names]
    drawn = draw_bounding_boxes(img, boxes, labels=text, colors=colours, width=width)
    return drawn.permute(1, 2, 0).numpy().copy()


def data_statistics(split: CocoSplit) -> dict[str, Any]:
    """Sizes of a split's images and (non-crowd) boxes, to derive the detector's image size and anchor sizes.

    Box size is ``sqrt(w * h)`` in pixels, the measure torchvision's anchor sizes use; ``box_size_rel`` divides
    it by the image's short side, so ``box_size_rel * min_size`` is the object size after the detector's resize.
    Percentile dicts are None when the split has no boxes.

    Returns:
        ``{"num_images", "num_boxes", "num_crowd", "num_negative_images", "boxes_per_class": {name: n},
        "image_short_side_median", "image_long_side_median", "box_size": {"p5", "p25", "p50", "p75", "p95"},
        "box_size_rel": {...}, "box_aspect": {...}}`` (aspect = h / w), all JSON-safe.

    Example:
        >>> data_statistics(data.train)["image_short_side_median"]  # doctest: +SKIP
        320.0
    """
    images = split.coco["images"]
    short = np.asarray([min(img["width"], img["height"]) for img in images], dtype=np.float64)
    long = np.asarray([max(img["width"], img["height"]) for img in images], dtype=np.float64)
    sizes, rel, aspect = [], [], []
    per_class = dict.fromkeys(split.categories.names, 0)
    name_of = dict(zip(split.categories.category_ids, split.categories.names))
    crowd = negatives = 0
    for s, anns in zip(short, split.annotations):
        boxes = [a for a in anns if not a["iscrowd"]]
        crowd += len(anns) - len(boxes)
        negatives += not boxes
        for a in boxes:
            w, h = a["bbox"][2], a["bbox"][3]
            sizes.append(math.sqrt(w * h))
            rel.append(math.sqrt(w * h) / s)
            aspect.append(h / w)
            per_class[name_of[a["category_id"]]] += 1

    def pct(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        q = np.percentile(np.asarray(values), [5, 25, 50, 75, 95])
        return {f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)}

    return {
        "num_images": len(images),
        "num_boxes": len(sizes),
        "num_crowd": crowd,
        "num_negative_images": negatives,
        "boxes_per_class": per_class,
        "image_short_side_median": float(np.median(short)) if len(short) else None,
        "image_long_side_median": float(np.median(long)) if len(long) else None,
        "box_size": pct(sizes),
        "box_size_rel": pct(rel),
        "box_aspect": pct(aspect),
    }


# ----------------------------------------------------------------------------------------------------------------
# Resolving user data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """One split as given: the parsed COCO object, where it came from, and the folders its images may be in."""

    coco: Any
    origin: str  # for messages: "COCO file '/x/a.json'" or "the train COCO dict"
    roots: list[str]


@dataclass
class _Parsed:
    """One split after the structural checks, before files and boxes are checked."""

    name: str
    origin: str
    roots: list[str]
    images: list[dict[str, Any]]  # id, file_name, width/height (None if not given), plus _path
    anns: list[dict[str, Any]]  # id, image_id, category_id, bbox, area (None if not given), iscrowd, plus _index
    categories: dict[int, str]
    ann_ids_ok: bool


def resolve_detection_data(
    data: Any,
    *,
    val_fraction: float = 0.1,
    seed: int = 42,
    bad_boxes: str = "drop",
    skip_bad_files: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> DetectionData:
    """Finds the images, boxes and splits in COCO-format `data` and checks them before any training starts.

    Accepted `data`:
        - a COCO JSON file; each ``images[].file_name`` is looked up relative to the JSON's folder, then to an
          ``images/`` folder beside it (absolute file names are used as they are);
        - a folder holding ``annotations.json`` (or a single ``*.json``) and the images (in ``images/`` or beside
          the JSON), or JSON files named after splits (``train.json``, ``val.json``, ...);
        - a folder of split folders (``train/``, ``val/``, ``test/`` or any name of the split table), each as above;
        - a dict of splits (``{"train": ..., "val": ..., "test": ...}``), each a JSON file, a folder, an in-memory
          COCO dict (with an optional ``"image_root"`` key: the folder its file names are relative to, else the
          current directory), or ``{"annotations": <JSON file or COCO dict>, "images": <image folder>}``.

    Categories come from the training split's ``categories``, ordered by id, and map to labels 1..K; a val/test
    category must agree with training (same id, same name). Images without annotations are negatives and kept.
    Missing ``area`` (-> w * h) and ``iscrowd`` (-> 0) are filled in, and annotation ids renumbered 1..N if any is
    missing or repeated. Without a val split, `val_fraction` of the training images (at least 1) are carved out at
    random with `seed`, by image.

    Every image file is checked up front (exists, whole, decodable header, at most `max_pixels`), and its size
    read (with the EXIF orientation applied, as decoding does); a ``width``/``height`` in the JSON that disagrees
    is an error, since the boxes would not fit the pixels.

    Args:
        data: the data, as above.
        val_fraction: share of the training images used for validation when no val split is given.
        seed: seed of that draw.
        bad_boxes: what to do with boxes of non-positive width or height, or that extend more than 1 px past their
            image: ``"drop"`` them (one warning with the count and examples), ``"clip"`` them to the image
            (dropping those that vanish), or raise (``"error"``). Smaller overshoots are clipped silently.
        skip_bad_files: leave out images whose file is missing or unreadable, with their boxes (one warning),
            instead of raising.
        max_pixels: images with more pixels are reported as bad (a guard against decompression bombs).

    Returns:
        A `DetectionData`.

    Raises:
        DataError: malformed JSON, missing keys, unknown image or category ids, duplicate ids, missing or corrupt
            image files, bad boxes (``bad_boxes="error"``), no images, or a training split without boxes.

    Example:
        >>> data = resolve_detection_data("data/boxes/annotations.json", val_fraction=0.2)  # doctest: +SKIP
        >>> data.class_names, len(data.train), len(data.val)
        (['circle', 'square'], 80, 20)
    """
    if bad_boxes not in BAD_BOX_POLICIES:
        raise ConfigError(f"bad_boxes={bad_boxes!r} is invalid; use one of {list(BAD_BOX_POLICIES)}.")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction!r} is invalid; pass a fraction in (0, 1), e.g. 0.1.")
    sources = {name: _read_source(spec, name) for name, spec in _split_specs(data).items()}
    parsed = {name: _parse(src, name) for name, src in sources.items()}
    categories = _vocabulary(parsed)

    _check_image_files(parsed, skip_bad_files, max_pixels)
    report: dict[str, list] = {"dropped": [], "clipped": [], "examples": []}
    splits = {name: _build_split(p, categories, bad_boxes, report) for name, p in parsed.items()}
    _warn_boxes(report, bad_boxes)

    _check_has_boxes(splits["train"])
    val_from_train = "val" not in splits
    if val_from_train:
        train = splits["train"]
        tr_idx, val_idx = random_split(len(train), val_fraction, seed)
        if not val_idx:
            raise DataError(
                f"Cannot carve a validation split out of {train.origin}: it has a single image. Add images, or "
                "pass a val split, e.g. data={'train': ..., 'val': ...}."
            )
        splits["val"] = train._take(val_idx, "val")
        splits["train"] = train._take(tr_idx, "train")
        _check_has_boxes(splits["train"], " after carving out the validation images")
    train = splits["train"]
    return DetectionData(
        categories=categories,
        train=train,
        val=splits["val"],
        test=splits.get("test"),
        val_from_train=val_from_train,
    )


def resolve_detection_split(
    data: Any,
    categories: CategoryMap,
    *,
    name: str = "test",
    bad_boxes: str = "drop",
    skip_bad_files: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> CocoSplit:
    """One labelled split for evaluating a trained detector, read against the categories it was trained on.

    `data` takes the forms of `resolve_detection_data`; where it holds several splits (split folders, split JSON
    files, a dict of splits) the test split is used, else val, else train. Its images, boxes and files are checked
    as there. A category the file lists under a trained id must carry the trained name, and every box must be of a
    trained category (the model cannot score others); categories listed but unused are ignored. Images without
    boxes are kept as negatives.

    Raises:
        DataError: as for `resolve_detection_data`, or boxes of a category the model was not trained on.

    Example:
        >>> split = resolve_detection_split("data/boxes_test", CategoryMap((1, 3), ("cat", "dog")))  # doctest: +SKIP
        >>> split.name, len(split)  # doctest: +SKIP
        ('test', 40)
    """
    if bad_boxes not in BAD_BOX_POLICIES:
        raise ConfigError(f"bad_boxes={bad_boxes!r} is invalid; use one of {list(BAD_BOX_POLICIES)}.")
    if isinstance(data, Mapping) and data and all(canonical_split(k) for k in data):
        specs = {canonical_split(k): v for k, v in data.items() if v is not None}
    else:
        specs = _split_specs(data)
    spec = next(specs[k] for k in ("test", "val", "train") if k in specs)
    parsed = _parse(_read_source(spec, name), name)
    trained = dict(zip(categories.category_ids, categories.names))
    for cid, cname in parsed.categories.items():
        if cid in trained and trained[cid] != cname:
            raise DataError(
                f"Category id {cid} is {cname!r} in {parsed.origin}, but the model was trained with id {cid} = "
                f"{trained[cid]!r}; use the training category ids and names."
            )
    unknown = sorted({a["category_id"] for a in parsed.anns} - set(trained))
    if unknown:
        cid = unknown[0]
        cname = parsed.categories[cid]
        known = ""
        if cname in categories.names:
            known = f" (the model knows {cname!r} as id {categories.category_ids[categories.names.index(cname)]})"
        raise DataError(
            f"{parsed.origin} has boxes of category {cid} ({cname!r}), which the model was not trained on{known}. "
            f"Its categories are {trained}; drop those boxes or map them to a trained id."
        )
    _check_image_files({name: parsed}, skip_bad_files, max_pixels)
    report: dict[str, list] = {"dropped": [], "clipped": [], "examples": []}
    split = _build_split(parsed, categories, bad_boxes, report)
    _warn_boxes(report, bad_boxes)
    return split


def _check_has_boxes(train: CocoSplit, when: str = "") -> None:
    if not any(not a["iscrowd"] for a in train.coco["annotations"]):
        raise DataError(
            f"The training split ({train.origin}) has no boxes to learn from{when}: {len(train)} images, "
            f"{len(train.coco['annotations'])} annotations, none of them a non-crowd box. Add annotated images."
        )


def _is_coco_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("images"), (list, tuple))


def _is_pair(obj: Any) -> bool:
    """``{"annotations": <file or dict>, "images" | "image_root": <folder>}``."""
    return (
        isinstance(obj, Mapping)
        and "annotations" in obj
        and isinstance(obj["annotations"], (str, os.PathLike, Mapping))
        and not _is_coco_dict(obj)
    )


def _split_specs(data: Any) -> dict[str, Any]:
    """Normalises `data` to {"train": spec, ["val": spec], ["test": spec]}."""
    if _is_coco_dict(data) or _is_pair(data):
        return {"train": data}
    if isinstance(data, Mapping):
        if not any(canonical_split(k) for k in data):  # with a split key, normalise_splits names the odd ones
            raise DataError(
                f"A dict passed as detection data must be a dict of splits ('train', 'val', 'test') or a COCO dict "
                f"with 'images', 'annotations' and 'categories'; got keys {sorted(map(str, data))[:8]}."
            )
        return normalise_splits(data, what="detection data")
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            folders = split_folders(path, inside=f"an {ANNOTATION_FILE} and an {IMAGE_FOLDER}/ folder")
            if folders:
                return folders
            if not (path / ANNOTATION_FILE).is_file():
                by_split = {canonical_split(p.stem): p for p in _json_files(path) if canonical_split(p.stem)}
                if "train" in by_split:
                    return by_split
            return {"train": path}
        if path.is_file():
            return {"train": path}
        raise DataError(f"Data path {str(path)!r} does not exist. Pass a COCO JSON file or a folder holding one.")
    raise DataError(
        f"Cannot use {type(data).__name__} as detection data; pass a COCO JSON file, a folder with "
        f"{ANNOTATION_FILE} and {IMAGE_FOLDER}/, a folder of split folders, or a dict of splits."
    )


def _json_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"Cannot read folder {str(folder)!r}: {e.strerror or e}.") from None


def _find_json(folder: Path) -> Path:
    if (folder / ANNOTATION_FILE).is_file():
        return folder / ANNOTATION_FILE
    found = _json_files(folder)
    if len(found) == 1:
        return found[0]
    where = os.path.abspath(folder)
    if not found:
        raise DataError(
            f"Folder {where!r} holds no COCO JSON file. Put the annotations in {where}/{ANNOTATION_FILE} and the "
            f"images in {where}/{IMAGE_FOLDER}/."
        )
    raise DataError(
        f"Folder {where!r} holds {len(found)} JSON files ({', '.join(p.name for p in found[:_MAX_LISTED])}) and no "
        f"{ANNOTATION_FILE}; rename the one to use to {ANNOTATION_FILE}, or pass the JSON file itself."
    )


def _load_json(path: Path) -> Any:
    where = os.path.abspath(path)
    try:
        with open(where, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(
            f"COCO file {where!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. Fix the file (a "
            "truncated copy or a trailing comma is the usual cause)."
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"COCO file {where!r} is not UTF-8 text ({e.reason}); save it as UTF-8 JSON.") from None
    except OSError as e:
        raise DataError(f"Cannot read COCO file {where!r}: {e.strerror or e}.") from None


def _file_source(path: Path, image_root: Any = None) -> _Source:
    path = Path(path)
    if path.is_dir():
        path = _find_json(path)
    elif not path.is_file():
        raise DataError(f"COCO file {str(path)!r} does not exist. Check the path.")
    base = os.path.dirname(os.path.abspath(path))
    roots = [os.path.abspath(image_root)] if image_root is not None else [base, os.path.join(base, IMAGE_FOLDER)]
    return _Source(_load_json(path), f"COCO file {os.path.abspath(path)!r}", roots)


def _read_source(spec: Any, split: str) -> _Source:
    if isinstance(spec, (str, os.PathLike)):
        return _file_source(Path(spec))
    if _is_coco_dict(spec):
        root = spec.get("image_root")
        return _Source(spec, f"the {split} COCO dict", [os.path.abspath(root if root is not None else ".")])
    if _is_pair(spec):
        root = spec.get("images", spec.get("image_root"))
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise DataError(f"The {split} split's 'images' must be an image folder, got {type(root).__name__}.")
        if root is not None and not os.path.isdir(root):
            raise DataError(f"Image folder {os.fspath(root)!r} of the {split} split does not exist. Check the path.")
        ann = spec["annotations"]
        if isinstance(ann, Mapping):
            return _Source(ann, f"the {split} COCO dict", [os.path.abspath(root if root is not None else ".")])
        return _file_source(Path(ann), image_root=root)
    raise DataError(
        f"Cannot use {type(spec).__name__} as the {split} split; pass a COCO JSON file, a folder, a COCO dict, or "
        "{'annotations': <JSON file>, 'images': <image folder>}."
    )


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _parse(src: _Source, name: str) -> _Parsed:
    """Structural checks of one COCO object: keys, ids, references. Boxes and files are checked later."""
    coco, origin = src.coco, src.origin
    if not isinstance(coco, Mapping):
        raise DataError(
            f"{origin} holds a {type(coco).__name__}, not a COCO object with 'images', 'annotations' and 'categories'."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in coco]
    if missing:
        raise DataError(
            f"{origin} has no {' or '.join(repr(k) for k in missing)} key (found {sorted(map(str, coco))[:8]}); a "
            "COCO detection file needs 'images', 'annotations' and 'categories' lists."
        )
    for key in _REQUIRED_KEYS:
        if not isinstance(coco[key], (list, tuple)):
            raise DataError(f"{origin}: {key!r} must be a list, got {type(coco[key]).__name__}.")

    categories: dict[int, str] = {}
    for i, cat in enumerate(coco["categories"]):
        cid = _int_id(cat.get("id")) if isinstance(cat, Mapping) else None
        if cid is None or not isinstance(cat.get("name"), str):
            raise DataError(
                f"{origin}: categories[{i}] = {cat!r} needs an integer 'id' and a string 'name', e.g. "
                '{"id": 1, "name": "cat"}.'
            )
        if cid in categories:
            raise DataError(f"{origin}: category id {cid} appears twice in 'categories'; give each an own id.")
        categories[cid] = cat["name"]
    if not categories:
        raise DataError(
            f'{origin}: \'categories\' is empty; list the object classes, e.g. [{{"id": 1, "name": "cat"}}].'
        )
    names: dict[str, int] = {}
    for cid, cname in sorted(categories.items()):
        if cname in names:
            raise DataError(
                f"{origin}: categories {names[cname]} and {cid} are both named {cname!r}; class names must be unique."
            )
        names[cname] = cid

    images: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    for i, img in enumerate(coco["images"]):
        iid = _int_id(img.get("id")) if isinstance(img, Mapping) else None
        fname = img.get("file_name") if isinstance(img, Mapping) else None
        if iid is None or not isinstance(fname, str) or not fname:
            raise DataError(
                f"{origin}: images[{i}] = {_short(img)} needs an integer 'id' and a 'file_name', e.g. "
                '{"id": 1, "file_name": "0001.jpg", "width": 640, "height": 480}.'
            )
        if iid in seen:
            raise DataError(
                f"{origin}: image id {iid} appears twice (images[{seen[iid]}] and images[{i}]); image ids must be "
                "unique."
            )
        seen[iid] = i
        dims = []
        for key in ("width", "height"):
            v = img.get(key)
            if v is not None and (_int_id(v) is None or _int_id(v) <= 0):
                raise DataError(f"{origin}: images[{i}] (id {iid}) has {key}={v!r}; it must be a positive integer.")
            dims.append(_int_id(v) if v is not None else None)
        images.append({"id": iid, "file_name": fname, "width": dims[0], "height": dims[1], "_index": i})
    if not images:
        raise DataError(f"{origin} lists no images; a detection data set needs images and their boxes.")

    anns: list[dict[str, Any]] = []
    ann_ids: set[int] = set()
    ann_ids_ok = True
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, Mapping):
            raise DataError(f"{origin}: annotations[{i}] is a {type(ann).__name__}, not an object.")
        label = f"annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")
        absent = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
        if absent:
            raise DataError(f"{origin}: {label} has no {' or '.join(map(repr, absent))}; every box needs all three.")
        iid, cid = _int_id(ann["image_id"]), _int_id(ann["category_id"])
        if iid is None or iid not in seen:
            raise DataError(
                f"{origin}: {label} points to image_id {ann['image_id']!r}, which is not in 'images'. Add the image "
                "or remove the annotation."
            )
        if cid is None or cid not in categories:
            raise DataError(
                f"{origin}: {label} has category_id {ann['category_id']!r}, which is not in 'categories' (ids "
                f"{sorted(categories)[:20]}). Add the category or fix the annotation."
            )
        bbox = ann["bbox"]
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        ):
            raise DataError(
                f"{origin}: {label} has bbox {bbox!r}; a COCO bbox is [x, y, width, height], 4 finite numbers in "
                "pixels."
            )
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):  # True/False compare equal to 1/0
            raise DataError(f"{origin}: {label} has iscrowd={crowd!r}; use 0 or 1.")
        area = ann.get("area")
        if area is not None and (
            isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0
        ):
            raise DataError(f"{origin}: {label} has area={area!r}; use a number >= 0 or leave it out (w * h is used).")
        aid = _int_id(ann.get("id"))
        if aid is None or aid in ann_ids:
            ann_ids_ok = False
        else:
            ann_ids.add(aid)
        anns.append(
            {
                "id": aid,
                "image_id": iid,
                "category_id": cid,
                "bbox": [float(v) for v in bbox],
                "area": None if area is None else float(area),
                "iscrowd": int(crowd),
                "_index": i,
            }
        )
    return _Parsed(name, origin, src.roots, images, anns, categories, ann_ids_ok)


def _short(obj: Any, limit: int = 120) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "..."


def _vocabulary(parsed: Mapping[str, _Parsed]) -> CategoryMap:
    """The training categories, checked against the other splits' categories."""
    train = parsed["train"]
    vocab = train.categories
    for name, p in parsed.items():
        if name == "train":
            continue
        for cid, cname in p.categories.items():
            if cid in vocab and vocab[cid] != cname:
                raise DataError(
                    f"Category id {cid} is {cname!r} in {p.origin} but {vocab[cid]!r} in the training data "
                    f"({train.origin}); every split must use the training categories."
                )
        used = {a["category_id"] for a in p.anns} - set(vocab)
        if used:
            cid = min(used)
            raise DataError(
                f"{p.origin} has boxes of category {cid} ({p.categories[cid]!r}), which the training data "
                f"({train.origin}) does not list in its categories. Add it there or drop those boxes."
            )
    ids = sorted(vocab)
    return CategoryMap(tuple(ids), tuple(vocab[c] for c in ids))


def _resolve_paths(p: _Parsed) -> list[tuple[str, str]]:
    """Sets each image's ``_path``; returns (file, reason) for the images whose file is missing."""
    missing = []
    for img in p.images:
        candidates = [os.path.join(root, img["file_name"]) for root in p.roots]
        img["_path"] = next((c for c in candidates if os.path.isfile(c)), None)
        if img["_path"] is None:
            looked = " or ".join(repr(r) for r in p.roots)
            missing.append((candidates[0], f"not found; images[{img['_index']}] of {p.origin}, looked in {looked}"))
    return missing


def _check_image_files(parsed: Mapping[str, _Parsed], skip: bool, max_pixels: int | None) -> None:
    bad = [m for p in parsed.values() for m in _resolve_paths(p)]
    present = [img["_path"] for p in parsed.values() for img in p.images if img["_path"] is not None]
    bad.extend(check_files(present, max_pixels))
    bad = list(dict(bad).items())  # a file named by two splits is reported once
    bad_paths = {path for path, _ in bad}
    sizes = _image_sizes([path for path in dict.fromkeys(present) if path not in bad_paths])
    for path, size in sizes.items():
        if size is None:
            bad.append((path, "unreadable image header"))
            bad_paths.add(path)
    if bad:
        if not skip:
            raise DataError(
                f"{len(bad)} image file(s) are missing, corrupt or not images:\n{bad_files_listing(bad, _MAX_LISTED)}"
                "\nFix the file names or the files, or pass skip_bad_files=True to leave those images (and their "
                "boxes) out."
            )
        for p in parsed.values():
            keep = [img for img in p.images if img["_path"] is not None and img["_path"] not in bad_paths]
            gone = {img["id"] for img in p.images} - {img["id"] for img in keep}
            p.images = keep
            p.anns = [a for a in p.anns if a["image_id"] not in gone]
            if not p.images:
                raise DataError(f"Every image of {p.origin} is missing or unreadable; the {p.name} split is empty.")
        warnings.warn(
            f"Skipped {len(bad)} image(s) with missing or unreadable files, and their boxes (skip_bad_files=True), "
            f"e.g. {bad[0][0]!r} ({bad[0][1]}).",
            UserWarning,
            stacklevel=3,
        )
    for p in parsed.values():
        for img in p.images:
            w, h = sizes[img["_path"]]
            if img["width"] is None or img["height"] is None:
                img["width"], img["height"] = w, h
            elif (img["width"], img["height"]) != (w, h):
                rotated = (img["width"], img["height"]) == (h, w)
                hint = (
                    " The file has an EXIF rotation, which decoding applies; annotate the rotated image, or save "
                    "the pixels upright without the EXIF tag."
                    if rotated
                    else " Was the image resized after annotating? The boxes must be in the file's pixel coordinates."
                )
                raise DataError(
                    f"{p.origin}: images[{img['_index']}] (id {img['id']}) says {img['width']}x{img['height']} but "
                    f"{img['_path']!r} is {w}x{h} pixels.{hint}"
                )


def _oriented_size(path: str) -> tuple[int, int] | None:
    """(width, height) as decoding returns it, EXIF orientation applied; read from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block: decoding ignores it too
                orientation = 1
    except Exception:
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _image_sizes(paths: Sequence[str]) -> dict[str, tuple[int, int] | None]:
    if len(paths) > 256:  # header reads are I/O bound, as in check_files
        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(paths, pool.map(_oriented_size, paths, chunksize=64)))
    return {p: _oriented_size(p) for p in paths}


def _build_split(p: _Parsed, categories: CategoryMap, policy: str, report: dict[str, list]) -> CocoSplit:
    """Checks the boxes of one split against its images and builds the normalised COCO dict."""
    by_id = {img["id"]: img for img in p.images}
    per_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in p.images}
    bad: list[str] = []
    n_dropped = n_clipped = 0
    next_id = 1
    for ann in p.anns:
        img = by_id[ann["image_id"]]
        W, H = img["width"], img["height"]
        x, y, w, h = ann["bbox"]
        x0, y0, x1, y1 = x, y, x + w, y + h
        clipped = [min(max(x0, 0.0), W), min(max(y0, 0.0), H), min(max(x1, 0.0), W), min(max(y1, 0.0), H)]
        vanished = clipped[2] <= clipped[0] or clipped[3] <= clipped[1]
        reason = None
        if w <= 0 or h <= 0:
            reason = "has a non-positive width or height"
        elif x0 < -EDGE_TOLERANCE or y0 < -EDGE_TOLERANCE or x1 > W + EDGE_TOLERANCE or y1 > H + EDGE_TOLERANCE:
            reason = "lies outside the image" if vanished else "extends past the image"
        elif vanished:  # within the tolerance of an edge, yet wholly beyond it (a 0.5 px box past the border)
            reason = "lies outside the image"
        if reason is not None:
            bad.append(reason)
            if len(report["examples"]) < 3:
                report["examples"].append(
                    f"{p.origin} annotations[{ann['_index']}] (image {img['file_name']!r}, {W}x{H}): bbox "
                    f"{[round(v, 2) for v in ann['bbox']]} {reason}"
                )
            if policy == "drop" or vanished:  # vanished also covers non-positive sizes: nothing to clip to
                n_dropped += 1
                continue
            n_clipped += 1  # policy "clip" ("error" raises below, after counting every bad box)
        x0, y0, x1, y1 = clipped
        bbox = [x0, y0, x1 - x0, y1 - y0]
        out = {
            "id": ann["id"] if p.ann_ids_ok else next_id,
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "bbox": bbox,
            # A given area is kept (it may be a mask's, which COCOeval's size ranges use); else the box's.
            "area": ann["area"] if ann["area"] is not None else bbox[2] * bbox[3],
            "iscrowd": ann["iscrowd"],
        }
        next_id += 1
        per_image[ann["image_id"]].append(out)
    if bad and policy == "error":
        raise DataError(
            f"{len(bad)} bad box(es) in {p.origin} (non-positive size, or more than {EDGE_TOLERANCE:g} px past "
            f"the image), e.g.\n  " + "\n  ".join(report["examples"]) + "\nFix them, or pass bad_boxes='drop' to "
            "leave them out or bad_boxes='clip' to clip them to the image."
        )
    report["dropped"].append((p.name, n_dropped))
    report["clipped"].append((p.name, n_clipped))
    images = [{k: img[k] for k in ("id", "file_name", "width", "height")} for img in p.images]
    anns = [per_image[img["id"]] for img in p.images]
    coco = {
        "images": images,
        "annotations": [a for per in anns for a in per],
        "categories": [{"id": c, "name": n} for c, n in zip(categories.category_ids, categories.names)],
    }
    return CocoSplit(p.name, coco, [img["_path"] for img in p.images], anns, categories, p.origin)


def _warn_boxes(report: dict[str, list], policy: str) -> None:
    dropped = sum(n for _, n in report["dropped"])
    clipped = sum(n for _, n in report["clipped"])
    if not dropped and not clipped:
        return
    where = ", ".join(f"{n} in {name}" for name, n in report["dropped"] if n)
    examples = "; ".join(report["examples"])
    if policy == "clip":
        msg = f"Clipped {clipped} box(es) to their image and dropped {dropped} with no area left (bad_boxes='clip')"
    else:
        msg = f"Dropped {dropped} bad box(es) ({where}; bad_boxes='drop')"
    warnings.warn(
        f"{msg}, e.g. {examples}. Pass bad_boxes='error' to fail on them instead.", UserWarning, stacklevel=3
    )
