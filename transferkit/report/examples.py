"""Material for the report that only exists at the end of a run: the final evaluation's matrices, and examples
predicted with the final model (confused images, misclassified texts, fill-mask guesses, segmentation masks,
detection boxes), saved as small thumbnails under report/examples/ and described in report/data.json.

Everything here is duck-typed against the documented formats (datasets, metric objects, ``task.predict`` results)
and capped (a few examples, thumbnails of at most `THUMB` px, a time budget), so a report stays small and quick
whatever the data size.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

THUMB = 160  # longest side of an example thumbnail, px
MAX_EXAMPLES = 8  # examples per section
MAX_PAIRS = 3  # most-confused class pairs shown with images
PER_PAIR = 4  # images per confused pair
SCAN_LIMIT = 256  # items predicted at most to find examples
TEXT_SCAN_LIMIT = 512
TIME_BUDGET_S = 60.0  # wall time for predicting examples; the rest is skipped with a note
EXAMPLES_DIR = "examples"


def split_for_examples(outcome: Any, splits: Any) -> str | None:
    """'test' when the run has a test split and its final evaluation, else 'val' (None: neither)."""
    objects = getattr(outcome, "metric_objects", None) or {}
    for name in ("test", "val"):
        if name in objects or (splits is not None and getattr(splits, name, None) is not None):
            return name
    return None


def evaluation_material(outcome: Any) -> dict[str, Any]:
    """The final evaluation's matrices: classification confusion + per-class scores, segmentation pixel
    confusion; keyed by kind, from ``outcome.metric_objects["test" or "val"]``."""
    out: dict[str, Any] = {}
    objects = getattr(outcome, "metric_objects", None) or {}
    for split in ("test", "val"):
        m = objects.get(split)
        if m is None:
            continue
        if hasattr(m, "per_class") and hasattr(m, "confusion"):
            out.setdefault(
                "classification",
                {
                    "split": split,
                    "class_names": [str(n) for n in m.class_names],
                    "confusion": _matrix(m.confusion),
                    "per_class": [dict(r) for r in m.per_class()],
                },
            )
        elif hasattr(m, "confusion_matrix"):
            out.setdefault(
                "segmentation",
                {
                    "split": split,
                    "class_names": [str(n) for n in getattr(m, "class_names", [])],
                    "confusion": _matrix(m.confusion_matrix),
                    "ignore_index": int(getattr(m, "ignore_index", 255)),
                },
            )
    return out


def _matrix(value: Any) -> list[list[int]]:
    arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    return [[int(v) for v in row] for row in np.asarray(arr).reshape(arr.shape[0], -1)]


class Budget:
    """A wall-clock budget for predicting examples."""

    def __init__(self, seconds: float = TIME_BUDGET_S) -> None:
        self.end = time.perf_counter() + seconds

    @property
    def over(self) -> bool:
        return time.perf_counter() > self.end


def model_device(model: Any) -> Any:
    import torch

    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


def predict(task: Any, model: Any, inputs: Sequence[Any], batch_size: int = 16) -> list[dict[str, Any]]:
    """``task.predict`` with the model's device, leaving the model in the training mode it had."""
    was_training = bool(getattr(model, "training", False))
    try:
        return list(task.predict(model, list(inputs), model_device(model), batch_size))
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def save_thumbnail(image: Any, path: Path, size: int = THUMB) -> tuple[int, int]:
    """Saves `image` (anything `load_image` takes) as a PNG of at most `size` px; returns its (width, height)."""
    from PIL import Image

    from ..data.imageio import load_image

    arr = load_image(image).permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr))
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return img.size


def _spread(n: int, k: int) -> list[int]:
    """`k` indices spread evenly over range(n) (deterministic; every index when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


# ----------------------------------------------------------------------------------------------------------------
# Classification: most-confused pairs with example images
# ----------------------------------------------------------------------------------------------------------------
def confused_pairs(confusion: Sequence[Sequence[int]], k: int = MAX_PAIRS) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells as (true class, predicted class, count), count > 0.

    Example:
        >>> confused_pairs([[5, 2, 0], [0, 4, 1], [3, 0, 6]], k=2)
        [(2, 0, 3), (0, 1, 2)]
    """
    cells = [(int(c), t, p) for t, row in enumerate(confusion) for p, c in enumerate(row) if t != p and int(c) > 0]
    cells.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [(t, p, c) for c, t, p in cells[:k]]


def _image_items(ds: Any) -> tuple[int, Callable[[int], tuple[Any, int, str]]] | None:
    """(length, item(i) -> (raw image for predict, class id, display name)) of an image-classification dataset."""
    if hasattr(ds, "paths") and hasattr(ds, "targets"):
        paths, targets = list(ds.paths), list(ds.targets)
        return len(paths), lambda i: (paths[i], int(targets[i]), os.path.basename(str(paths[i])))
    if hasattr(ds, "dataset") and hasattr(ds, "label_map"):  # UserImageDataset
        indices = list(ds.indices) if getattr(ds, "indices", None) is not None else None

        def item(i: int) -> tuple[Any, int, str]:
            j = indices[i] if indices is not None else i
            raw = ds.dataset[j]
            return raw[0], int(ds.label_map(raw[1])), f"item {j}"

        return len(ds), item
    return None


def image_confusions(
    task: Any, model: Any, ds: Any, material: dict[str, Any], folder: Path, budget: Budget
) -> dict[str, Any]:
    """Example images of the most-confused pairs, predicted again with the final model."""
    names = [str(n) for n in material["class_names"]]
    pairs = confused_pairs(material["confusion"])
    result: dict[str, Any] = {"kind": "image-confusions", "split": material["split"], "pairs": [], "notes": []}
    if not pairs:
        result["notes"].append(f"No misclassified images in the {material['split']} split.")
        return result
    items = _image_items(ds)
    if items is None:
        result["notes"].append(f"The {material['split']} dataset ({type(ds).__name__}) gives no raw images to show.")
        return result
    n, item = items
    wanted = {(t, p): [] for t, p, _ in pairs}
    true_classes = {t for t, _, _ in pairs}
    candidates = []
    for i in range(min(n, 4 * SCAN_LIMIT)):  # reading targets may decode a user's images: bounded too
        if len(candidates) >= SCAN_LIMIT:
            break
        raw, target, label = item(i)
        if target in true_classes:
            candidates.append((i, raw, target, label))
    for start in range(0, len(candidates), 32):
        if budget.over:
            result["notes"].append("Example search stopped at the time budget.")
            break
        chunk = candidates[start : start + 32]
        for (i, raw, target, label), res in zip(chunk, predict(task, model, [c[1] for c in chunk], 32)):
            pred = _class_index(res.get("label"), names)
            slot = wanted.get((target, pred))
            if slot is None or len(slot) >= PER_PAIR:
                continue
            file = f"{EXAMPLES_DIR}/confusion_{target}_{pred}_{len(slot)}.png"
            save_thumbnail(raw, folder / file)
            probs = {str(k): float(v) for k, v in (res.get("probs") or {}).items()}
            slot.append(
                {
                    "file": file,
                    "name": label,
                    "index": i,
                    "score": float(res.get("score", 0.0)),
                    "p_true": probs.get(names[target]),
                }
            )
        if all(len(v) >= PER_PAIR for v in wanted.values()):
            break
    for t, p, count in pairs:
        result["pairs"].append({"true": names[t], "pred": names[p], "count": count, "examples": wanted[(t, p)]})
    return result


def _class_index(label: Any, names: list[str]) -> int | None:
    try:
        return names.index(str(label))
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------------------------
# Text classification: misclassified texts
# ----------------------------------------------------------------------------------------------------------------
def text_mistakes(task: Any, model: Any, ds: Any, split: str, budget: Budget) -> dict[str, Any]:
    """The most confident mistakes among the first `TEXT_SCAN_LIMIT` texts of `ds` (a TokenizedTextDataset).

    The dataset holds token ids only, so each text is decoded with the task's tokenizer and predicted again from
    the decoded text; an example is marked exact when re-tokenising the decoded text gives the ids evaluation saw.
    """
    tok = task.tokenizer
    names = [str(n) for n in task.labels]
    max_len = getattr(task, "max_length", None)
    result: dict[str, Any] = {"kind": "text-mistakes", "split": split, "items": [], "notes": []}
    labels = getattr(ds, "labels", None)
    if labels is None or not hasattr(ds, "input_ids"):
        result["notes"].append(f"The {split} dataset ({type(ds).__name__}) holds no labelled token ids.")
        return result
    n = min(len(ds), TEXT_SCAN_LIMIT)
    types = getattr(ds, "token_type_ids", None)
    inputs, ids_list = [], []
    for i in range(n):
        ids = ds.input_ids[i].tolist()
        ids_list.append(ids)
        if types is not None:
            tt = types[i].tolist()
            first = [x for x, t in zip(ids, tt) if t == 0]
            second = [x for x, t in zip(ids, tt) if t == 1]
            inputs.append(
                (tok.decode(first, skip_special_tokens=True).strip(), tok.decode(second, skip_special_tokens=True))
            )
        else:
            inputs.append(tok.decode(ids, skip_special_tokens=True).strip())
    found, scanned = [], 0
    for start in range(0, n, 64):
        if budget.over:
            result["notes"].append(f"Stopped at the time budget after {scanned} texts.")
            break
        chunk = inputs[start : start + 64]
        for k, res in enumerate(predict(task, model, chunk, 64)):
            i = start + k
            target = names[int(labels[i])]
            if str(res.get("label")) != target:
                probs = {str(a): float(b) for a, b in (res.get("probs") or {}).items()}
                found.append((float(res.get("score", 0.0)), i, str(res.get("label")), target, probs.get(target)))
        scanned += len(chunk)
    found.sort(key=lambda x: (-x[0], x[1]))
    for score, i, pred, target, p_true in found[:MAX_EXAMPLES]:
        text = inputs[i]
        pair = None
        if isinstance(text, tuple):
            text, pair = text
        try:
            enc = tok(text, pair, truncation=True if pair is None else "longest_first", max_length=max_len)
            exact = list(enc["input_ids"]) == ids_list[i]
        except Exception:  # noqa: BLE001 - a tokenizer that cannot re-encode: just not marked exact
            exact = False
        result["items"].append(
            {
                "index": i,
                "text": _clip(text, 400),
                "pair": _clip(pair, 200) if pair is not None else None,
                "true": target,
                "pred": pred,
                "score": score,
                "p_true": p_true,
                "tokens": len(ids_list[i]),
                "truncated": bool(max_len and len(ids_list[i]) >= max_len),
                "exact": exact,
            }
        )
    result["scanned"] = scanned
    result["mistakes"] = len(found)
    result["max_length"] = max_len
    return result


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ----------------------------------------------------------------------------------------------------------------
# Masked-LM: fill-mask on held-out blocks
# ----------------------------------------------------------------------------------------------------------------
def fill_mask_examples(task: Any, model: Any, ds: Any, seed: int = 0, k: int = 6) -> dict[str, Any]:
    """Masks one whole word in a window of each of `k` held-out blocks and asks the model for it."""
    tok = task.tokenizer
    result: dict[str, Any] = {"kind": "fill-mask", "items": [], "notes": []}
    blocks = getattr(ds, "blocks", None)
    if blocks is None or tok is None or tok.mask_token is None:
        result["notes"].append("No held-out token blocks (or no mask token) to build fill-mask examples from.")
        return result
    special = set(tok.all_special_ids)
    rng = random.Random(seed)
    texts, answers = [], []
    for b in _spread(int(blocks.shape[0]), k):
        ids = blocks[b].tolist()
        tokens = tok.convert_ids_to_tokens(ids)
        # a segment between special tokens (one document's text), and a whole word inside it
        candidates = [
            p
            for p in range(len(ids))
            if ids[p] not in special
            and _is_word(tokens[p])
            and not (p + 1 < len(ids) and str(tokens[p + 1]).startswith("##"))
        ]
        if not candidates:
            continue
        p = rng.choice(candidates[len(candidates) // 4 : max(len(candidates) // 4 + 1, 3 * len(candidates) // 4)])
        lo, hi = p, p
        while lo > 0 and ids[lo - 1] not in special and p - lo < 16:
            lo -= 1
        while hi + 1 < len(ids) and ids[hi + 1] not in special and hi - p < 16:
            hi += 1
        while lo < p and str(tokens[lo]).startswith("##"):  # start on a word boundary
            lo += 1
        window = [tok.mask_token if j == p else tokens[j] for j in range(lo, hi + 1)]
        text = tok.convert_tokens_to_string(window)
        cut_left = lo > 0 and ids[lo - 1] not in special
        cut_right = hi + 1 < len(ids) and ids[hi + 1] not in special
        texts.append(text)
        answers.append((tok.convert_tokens_to_string([tokens[p]]).strip(), cut_left, cut_right))
    if not texts:
        result["notes"].append("The held-out blocks hold no whole words to mask.")
        return result
    for text, (answer, cut_left, cut_right), res in zip(texts, answers, predict(task, model, texts, 8)):
        preds = res.get("predictions") or []
        first = preds[0] if preds else []
        top = [{"token": str(t.get("token")), "score": float(t.get("score", 0.0))} for t in first]
        clean = [_strip_marker(t["token"]) for t in top]
        result["items"].append(
            {
                "text": ("… " if cut_left else "") + text + (" …" if cut_right else ""),
                "answer": answer,
                "top": top,
                "rank": clean.index(answer) + 1 if answer in clean else None,
            }
        )
    result["mask_token"] = tok.mask_token
    return result


def _is_word(token: Any) -> bool:
    core = _strip_marker(str(token))
    return len(core) >= 2 and core.isalpha() and not str(token).startswith("##")


def _strip_marker(token: str) -> str:
    return token.lstrip("Ġ▁").strip()


# ----------------------------------------------------------------------------------------------------------------
# Segmentation: image / target / prediction
# ----------------------------------------------------------------------------------------------------------------
def save_mask(mask: np.ndarray, path: Path, size: tuple[int, int]) -> None:
    """Saves class ids as a grey PNG (16-bit when ids exceed 255), resized with nearest neighbour to `size`
    (width, height)."""
    from PIL import Image

    arr = np.asarray(mask)
    img = Image.fromarray(arr.astype(np.uint8)) if arr.max(initial=0) <= 255 else Image.fromarray(arr.astype(np.int32))
    img = img.resize(size, Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


def _raw_segmentation(ds: Any) -> Any:
    """The dataset without its transform: original images (uint8) and masks (class ids)."""
    raw = copy.copy(ds)
    if hasattr(raw, "transform"):
        raw.transform = None
    return raw


def segmentation_examples(
    task: Any, model: Any, ds: Any, split: str, folder: Path, num_classes: int, ignore_index: int, k: int = 6
) -> dict[str, Any]:
    """A few images of `split` with their target and predicted masks (as thumbnails) and per-image accuracy."""
    from PIL import Image

    result: dict[str, Any] = {"kind": "segmentation", "split": split, "items": [], "notes": []}
    raw = _raw_segmentation(ds)
    picks = _spread(len(raw), k)
    pairs = getattr(raw, "pairs", None)
    indices = getattr(raw, "indices", None)
    images, masks, inputs, names = [], [], [], []
    for i in picks:
        image, mask = raw[i]
        image = image.detach().cpu() if hasattr(image, "detach") else image
        mask = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
        images.append(image)
        masks.append(mask)
        if pairs is not None:
            j = indices[i] if indices is not None else i
            inputs.append(pairs[j][0])
            names.append(os.path.basename(str(pairs[j][0])))
        else:
            arr = image.permute(1, 2, 0).numpy() if hasattr(image, "permute") else np.asarray(image)
            inputs.append(Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))))
            names.append(f"item {i}")
    results = predict(task, model, inputs, 4)
    for n, (image, mask, res, name) in enumerate(zip(images, masks, results, names)):
        pred = np.asarray(res["mask"].detach().cpu().numpy() if hasattr(res["mask"], "detach") else res["mask"])
        if pred.shape != mask.shape:
            result["notes"].append(f"{name}: the predicted mask is {pred.shape}, the target {mask.shape}; resized.")
            resized = Image.fromarray(pred.astype(np.int32)).resize(mask.shape[::-1], Image.Resampling.NEAREST)
            pred = np.asarray(resized)
        counted = mask != ignore_index
        acc = float((pred[counted] == mask[counted]).mean()) if counted.any() else None
        ious = []
        for c in range(num_classes):
            t, p = (mask == c) & counted, (pred == c) & counted
            union = int((t | p).sum())
            if union:
                ious.append(int((t & p).sum()) / union)
        base = f"{EXAMPLES_DIR}/seg_{n}"
        w, h = save_thumbnail(image, folder / f"{base}_image.png")
        save_mask(mask, folder / f"{base}_target.png", (w, h))
        save_mask(pred, folder / f"{base}_pred.png", (w, h))
        result["items"].append(
            {
                "name": name,
                "image": f"{base}_image.png",
                "target": f"{base}_target.png",
                "pred": f"{base}_pred.png",
                "pixel_accuracy": acc,
                "miou": float(np.mean(ious)) if ious else None,
                "size": [int(mask.shape[0]), int(mask.shape[1])],
            }
        )
    reader = getattr(ds, "reader", None)
    if reader is not None and hasattr(reader, "class_colours"):
        with contextlib.suppress(Exception):  # default colours then
            result["palette"] = [list(map(int, c)) for c in reader.class_colours(num_classes)]
    result["ignore_index"] = ignore_index
    return result


# ----------------------------------------------------------------------------------------------------------------
# Detection: ground-truth and predicted boxes
# ----------------------------------------------------------------------------------------------------------------
def detection_examples(
    task: Any, model: Any, ds: Any, split: str, folder: Path, class_names: Sequence[str], k: int = 6
) -> dict[str, Any]:
    """A few images of `split` with their ground-truth and predicted boxes, scaled to the thumbnails."""
    result: dict[str, Any] = {"kind": "detection", "split": split, "items": [], "notes": []}
    paths = getattr(ds, "paths", None)
    if paths is None:
        result["notes"].append(f"The {split} dataset ({type(ds).__name__}) has no image paths to show.")
        return result
    gt_boxes = getattr(ds, "boxes", None)
    gt_labels = getattr(ds, "labels", None)
    with_boxes = [i for i in range(len(paths)) if gt_boxes is None or len(gt_boxes[i])]
    picks = [with_boxes[i] for i in _spread(len(with_boxes), k)] if with_boxes else _spread(len(paths), k)
    results = predict(task, model, [paths[i] for i in picks], 4)
    names = [str(n) for n in class_names]
    if gt_labels is not None and names and names[0].lower() in ("background", "__background__"):
        top = max((int(np.max(lab)) for lab in gt_labels if len(lab)), default=0)
        if top == len(names) - 1:  # names include the background at index 0: label i is names[i]
            names = names[1:]
    for n, (i, res) in enumerate(zip(picks, results)):
        from ..data.imageio import load_image

        file = f"{EXAMPLES_DIR}/det_{n}.png"
        image = load_image(paths[i])
        orig_h, orig_w = int(image.shape[1]), int(image.shape[2])
        w, h = save_thumbnail(image, folder / file)
        scale = w / orig_w if orig_w else 1.0
        gts = []
        if gt_boxes is not None:
            for box, lab in zip(np.asarray(gt_boxes[i]).reshape(-1, 4), np.asarray(gt_labels[i]).reshape(-1)):
                name = names[int(lab) - 1] if 1 <= int(lab) <= len(names) else str(int(lab))
                gts.append({"box": [round(float(v) * scale, 1) for v in box], "label": name})
        preds = sorted(
            zip(res.get("boxes", []), res.get("labels", []), res.get("scores", [])), key=lambda x: -float(x[2])
        )[:20]
        result["items"].append(
            {
                "name": os.path.basename(str(paths[i])),
                "file": file,
                "size": [int(orig_h), int(orig_w)],
                "ground_truth": gts,
                "predictions": [
                    {"box": [round(float(v) * scale, 1) for v in box], "label": str(lab), "score": float(s)}
                    for box, lab, s in preds
                ],
            }
        )
    return result
