"""Generated detection data for the tests: squares, circles and bars on a noisy background, as COCO JSON."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Tiny and fast: timm's test_resnet body, a 16-channel FPN, 44-52 px images, batches of 4.
FAST = dict(backbone="timm:test_resnet", batch_size=4, quiet=True, lr=1e-3, head_kwargs={"fpn_channels": 16})
# Non-contiguous category ids on purpose: they map to labels 1..3 and must come back unchanged.
CATEGORIES = [{"id": 1, "name": "square"}, {"id": 3, "name": "circle"}, {"id": 7, "name": "bar"}]
COLOURS = {1: (230, 40, 40), 3: (40, 230, 40), 7: (60, 60, 240)}
JSON = "annotations.json"


def write_shapes(folder, n=12, *, seed=0, first_id=1000, negatives=1, categories=CATEGORIES, json_name=JSON):
    """Writes `n` images (56-72 x 44-52 px) with 1-2 objects each (the last `negatives` with none) and their COCO
    JSON; returns the COCO dict. Image ids are first_id, first_id + 1, ...; boxes are exact (PIL draws w x h)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [c["id"] for c in categories]
    images, anns = [], []
    for k in range(n):
        w, h = 56 + 8 * (k % 3), 44 + 8 * (k % 2)
        img = Image.fromarray(rng.integers(0, 70, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        iid = first_id + k
        n_obj = 0 if k >= n - negatives else 1 + k % 2
        for j in range(n_obj):
            cat = ids[(k + j) % len(ids)]
            bw, bh = (16, 16) if cat != ids[-1] else (22, 10)
            x, y = 2 + 28 * j + int(rng.integers(0, 6)), 2 + int(rng.integers(0, h - bh - 3))
            box = [x, y, x + bw - 1, y + bh - 1]
            (draw.ellipse if cat == ids[1 % len(ids)] else draw.rectangle)(box, fill=COLOURS.get(cat, (200, 200, 40)))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        name = f"img_{k:02d}.png"
        img.save(folder / "images" / name)
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
    coco = {"images": images, "annotations": anns, "categories": [dict(c) for c in categories]}
    if json_name:
        (folder / json_name).write_text(json.dumps(coco))
    return coco


def write_coco(path, coco) -> Path:
    Path(path).write_text(json.dumps(coco))
    return Path(path)


def cocoeval(gt_path, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
