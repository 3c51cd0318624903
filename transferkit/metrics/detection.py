"""COCO box metrics (mAP) for object detection, scored by COCOeval from pycocotools or faster-coco-eval.

Each process keeps its images' detections as compact rows (x, y, w, h, score, category id; at most a detector's
100 per image); `sync` gathers them as Python objects, and `compute` runs COCOeval once on all of them against the
split's ground truth. The results list it scored is what `artifacts` writes, so anyone can re-score the file.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import Metrics, gather_objects

__all__ = ["COCO_BACKENDS", "DetectionMetrics", "evaluate_coco", "resolve_coco_backend"]

COCO_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
# COCOeval.stats positions: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
_STATS = {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}
# Written results are rounded (0.01 px, 1e-6 score): float32 detector outputs are no more precise than that, and
# the file shrinks ~2x. The rounded rows are what COCOeval scores, so the file reproduces the metrics exactly.
_BOX_DECIMALS = 2
_SCORE_DECIMALS = 6


def resolve_coco_backend(backend: str = "auto") -> str:
    """``"auto"`` -> ``"faster_coco_eval"`` when it can be imported, else ``"pycocotools"``.

    Both give identical numbers; faster-coco-eval is ~2x faster (an optional install).

    Raises:
        ConfigError: an unknown name, or a named backend that is not installed.

    Example:
        >>> resolve_coco_backend("pycocotools")
        'pycocotools'
    """
    name = str(backend).strip().lower().replace("-", "_")
    if name not in COCO_BACKENDS:
        raise ConfigError(f"Unknown COCO evaluation backend {backend!r}; use one of {list(COCO_BACKENDS)}.")
    if name in ("auto", "faster_coco_eval"):
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            if name == "faster_coco_eval":
                raise ConfigError(
                    "coco_backend='faster_coco_eval' needs the faster-coco-eval package: pip install faster-coco-eval "
                    "(or use 'pycocotools')."
                ) from None
        else:
            return "faster_coco_eval"
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        raise ConfigError("COCO evaluation needs pycocotools (pip install pycocotools) or faster-coco-eval.") from None
    return "pycocotools"


class DetectionMetrics(Metrics):
    """COCO bbox mAP of one split: streaming per-image records in, COCOeval numbers out.

    `update` takes a list of per-image records ``{"image_id": int, "boxes": (N, 4) xyxy in original image pixels,
    "scores": (N,), "labels": (N,) labels 1..K}`` (tensors or arrays). An image seen twice (a distributed sampler
    pads the last batch with repeats) keeps its first record; an image id not in the ground truth is an error.

    `compute` returns ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small``, ``map_medium``,
    ``map_large``, ``mar_100`` as COCOeval's ``stats`` give them, and ``ap_<class name>`` per class (AP@[.5:.95]:
    the mean of ``precision[:, :, k, 0, 2]`` over entries > -1). COCO's convention for "nothing to score" is
    kept: a value is -1.0 where the split has no (non-crowd) ground-truth box of that class or size range, and
    such classes do not count towards ``map``. No detections at all score 0 where there is ground truth.

    Args:
        ground_truth: the split's COCO dict (``CocoSplit.coco``); missing ``area``/``iscrowd``/``id`` are filled.
        label_to_category: label -> COCO category id (`CategoryMap.label_to_category`; string keys, as after a
            JSON round trip, are accepted).
        class_names: ``class_names[label - 1]`` names label ``label``.
        backend: ``"auto"``, ``"pycocotools"`` or ``"faster_coco_eval"`` (see `resolve_coco_backend`).
        split: the split's name, used in the artifact's file name.

    Example:
        >>> m = DetectionMetrics(split.coco, {1: 1, 2: 3}, ["cat", "dog"])  # doctest: +SKIP
        >>> m.update([{"image_id": 1, "boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"]}])
        >>> m.sync(accelerator); m.compute()["map"]
        0.41
    """

    def __init__(
        self,
        ground_truth: Mapping[str, Any],
        label_to_category: Mapping[Any, Any],
        class_names: Sequence[str],
        *,
        backend: str = "auto",
        split: str = "val",
    ) -> None:
        self.backend = resolve_coco_backend(backend)
        self.split = split
        mapping = {int(k): int(v) for k, v in label_to_category.items()}
        if sorted(mapping) != list(range(1, len(mapping) + 1)):
            raise ConfigError(f"label_to_category must map the labels 1..K, got labels {sorted(mapping)}.")
        if len(class_names) != len(mapping):
            raise ConfigError(
                f"Got {len(class_names)} class names for {len(mapping)} labels; pass one name per label (label "
                "i is class_names[i - 1])."
            )
        if len(set(class_names)) != len(class_names):
            raise ConfigError(f"Class names must be unique (they become ap_<name> keys), got {list(class_names)}.")
        self._gt = _normalise_ground_truth(ground_truth, mapping, class_names)
        self._order = {img["id"]: i for i, img in enumerate(self._gt["images"])}
        self._lut = np.zeros(len(mapping) + 1, dtype=np.int64)  # label -> category id (index 0 unused)
        for label, cat in mapping.items():
            self._lut[label] = cat
        self._names = {mapping[i + 1]: str(n) for i, n in enumerate(class_names)}
        self._records: dict[int, np.ndarray] = {}  # image id -> rows (x, y, w, h, score, category id)

    def update(self, outputs: Sequence[Mapping[str, Any]]) -> None:
        """Adds the detections of a batch of images (this process's share)."""
        if isinstance(outputs, Mapping):
            outputs = [outputs]
        unknown = []
        for rec in outputs:
            image_id = int(rec["image_id"])
            if image_id not in self._order:
                unknown.append(image_id)
                continue
            if image_id not in self._records:
                self._records[image_id] = self._rows(rec, image_id)
        if unknown:
            raise DataError(
                f"Detections for image id(s) {sorted(set(unknown))[:10]} that are not in the {self.split} ground "
                "truth; evaluate the split's own images (their COCO image ids) against its COCO dict."
            )

    def _rows(self, rec: Mapping[str, Any], image_id: int) -> np.ndarray:
        boxes = _array(rec["boxes"], np.float64)
        scores = _array(rec["scores"], np.float64).reshape(-1)
        labels = _array(rec["labels"], np.int64).reshape(-1)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(labels):
            raise DataError(
                f"Detections of image {image_id}: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)} and labels "
                f"{tuple(labels.shape)} must be (N, 4), (N,) and (N,)."
            )
        if len(labels) and (labels.min() < 1 or labels.max() >= len(self._lut)):
            raise DataError(
                f"Detections of image {image_id} have labels {sorted(set(labels.tolist()))[:10]}; expected 1.."
                f"{len(self._lut) - 1} (0 is the background)."
            )
        rows = np.empty((len(boxes), 6), dtype=np.float64)
        rows[:, :2] = boxes[:, :2]
        rows[:, 2:4] = boxes[:, 2:] - boxes[:, :2]  # xyxy -> COCO xywh
        rows[:, :4] = np.round(rows[:, :4], _BOX_DECIMALS)
        rows[:, 4] = np.round(scores, _SCORE_DECIMALS)
        rows[:, 5] = self._lut[labels]
        return rows

    def sync(self, accelerator: Any) -> None:
        """Gathers every process's records (first record per image wins, as in `update`)."""
        merged: dict[int, np.ndarray] = {}
        for image_id, rows in gather_objects(list(self._records.items()), accelerator):
            merged.setdefault(int(image_id), rows)
        self._records = merged

    def results(self) -> list[dict[str, Any]]:
        """The COCO results list (``image_id``, ``category_id``, ``bbox`` xywh, ``score``), in ground-truth image
        order, so that one process and many produce the same list."""
        out = []
        for image_id in sorted(self._records, key=self._order.__getitem__):
            for x, y, w, h, score, cat in self._records[image_id].tolist():
                out.append({"image_id": image_id, "category_id": int(cat), "bbox": [x, y, w, h], "score": score})
        return out

    def compute(self) -> dict[str, float]:
        stats, precision, cat_ids = evaluate_coco(self._gt, self.results(), backend=self.backend)
        out = {name: float(stats[i]) for name, i in _STATS.items()}
        for k, cat in enumerate(cat_ids):
            if cat not in self._names:
                continue
            p = precision[:, :, k, 0, 2]  # IoU thresholds x recall points, area "all", 100 detections
            valid = p[p > -1]
            out[f"ap_{self._names[cat]}"] = float(valid.mean()) if valid.size else -1.0
        return out

    def artifacts(self) -> dict[str, Any]:
        """``{"predictions_<split>.json": the results list exactly as scored}``."""
        return {f"predictions_{self.split}.json": self.results()}


def _array(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64 if dtype is np.float64 else torch.int64).numpy()
    return np.asarray(value, dtype=dtype)


def _normalise_ground_truth(
    gt: Mapping[str, Any], mapping: Mapping[int, int], class_names: Sequence[str]
) -> dict[str, Any]:
    """A copy of `gt` that both backends take: area, iscrowd and unique ids filled, every mapped category listed."""
    missing = [k for k in ("images", "annotations") if k not in gt]
    if missing:
        raise DataError(
            f"The ground truth given to DetectionMetrics has no {missing} key; pass the split's COCO dict."
        )
    images = [{"id": int(img["id"]), **{k: v for k, v in img.items() if k != "id"}} for img in gt["images"]]
    anns = []
    ids = [a.get("id") for a in gt["annotations"]]
    renumber = None in ids or len(set(ids)) != len(ids)  # pycocotools indexes annotations by id
    for i, a in enumerate(gt["annotations"]):
        x, y, w, h = (float(v) for v in a["bbox"])
        anns.append(
            {
                **a,
                "id": i + 1 if renumber else a["id"],
                "bbox": [x, y, w, h],
                "area": float(a["area"]) if a.get("area") is not None else w * h,
                "iscrowd": int(a.get("iscrowd", 0)),
            }
        )
    cats = [dict(c) for c in gt.get("categories", [])]
    listed = {int(c["id"]) for c in cats}
    # A class with no ground-truth entry would make COCOeval drop its detections unseen; listed, it scores -1.
    cats += [{"id": cat, "name": str(class_names[label - 1])} for label, cat in mapping.items() if cat not in listed]
    return {"images": images, "annotations": anns, "categories": sorted(cats, key=lambda c: int(c["id"]))}


def evaluate_coco(
    ground_truth: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Runs COCOeval (bbox) quietly: ``(stats[12], precision[T, R, K, A, M], category ids of K)``.

    An empty `results` list is scored as no detections (pycocotools' ``loadRes([])`` raises IndexError).

    Example:
        >>> stats, precision, cat_ids = evaluate_coco(split.coco, results)  # doctest: +SKIP
        >>> float(stats[0])  # AP@[.5:.95]
        0.52
    """
    backend = resolve_coco_backend(backend)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    # Fresh dicts: both libraries add fields to the annotations they are given (ignore, area, segmentation).
    dataset = {
        "images": [dict(img) for img in ground_truth["images"]],
        "annotations": [dict(a) for a in ground_truth["annotations"]],
        "categories": [dict(c) for c in ground_truth["categories"]],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints every step
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if results:
            dt = gt.loadRes([{**r, "bbox": list(r["bbox"])} for r in results])
        else:
            dt = COCO()
            dt.dataset = {"images": list(dataset["images"]), "categories": dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return (
        np.asarray(evaluator.stats, dtype=np.float64),
        evaluator.eval["precision"],
        [int(c) for c in evaluator.params.catIds],
    )
