"""COCO detection data: layouts, category map, crowd and negatives, val carve, bad input, transforms, collate."""

import copy
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from transferkit.data.coco import (
    CategoryMap,
    DetectionDataset,
    build_detection_transforms,
    collate_detection,
    data_statistics,
    resolve_detection_data,
)
from transferkit.data.splits import random_split
from transferkit.errors import ConfigError, DataError

# Non-contiguous category ids, listed out of order on purpose: labels must follow the ids (1, 3, 7).
CATEGORIES = [{"id": 7, "name": "bar"}, {"id": 1, "name": "square"}, {"id": 3, "name": "circle"}]
FG = (230, 200, 40)


def _draw(draw, cat, x, y, w, h):
    box = [x, y, x + w - 1, y + h - 1]  # PIL's corners are inclusive: this fills exactly w x h pixels
    if cat == 3:
        draw.ellipse(box, fill=FG)
    else:
        draw.rectangle(box, fill=FG)


def write_coco(folder, n=6, *, negatives=1, image_dir="images", json_name="annotations.json", first_id=100, **kw):
    """Writes n images with squares/circles/bars and their COCO JSON; returns the COCO dict (ids first_id, +2, ...).

    Image k is (64 + 8 (k % 3)) x (48 + 4 (k % 2)); the last `negatives` images have no objects.
    """
    folder = Path(folder)
    (folder / image_dir).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k in range(n):
        w, h = 64 + 8 * (k % 3), 48 + 4 * (k % 2)
        img = Image.new("RGB", (w, h), (20, 20, 20))
        draw = ImageDraw.Draw(img)
        iid = first_id + 2 * k
        n_obj = 0 if k >= n - negatives else 1 + k % 3
        for j in range(n_obj):
            cat = (1, 3, 7)[(k + j) % 3]
            x, y = 2 + 20 * j, 3 + (k % 4) * 2
            bw, bh = (16, 16) if cat != 7 else (18, 8)
            _draw(draw, cat, x, y, bw, bh)
            anns.append(
                {"id": len(anns) + 1, "image_id": iid, "category_id": cat, "bbox": [x, y, bw, bh], "area": bw * bh}
            )
            anns[-1]["iscrowd"] = 0
        name = f"img_{k:02d}.png"
        img.save(folder / image_dir / name)
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
    coco = {"images": images, "annotations": anns, "categories": copy.deepcopy(CATEGORIES), **kw}
    if json_name:
        (folder / json_name).write_text(json.dumps(coco))
    return coco


def write_json(path, coco):
    Path(path).write_text(json.dumps(coco))
    return path


def quiet_resolve(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean data must resolve without any warning
        return resolve_detection_data(*args, **kw)


# ----------------------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------------------
def test_json_file_with_images_folder(tmp_path):
    coco = write_coco(tmp_path, n=10)
    data = quiet_resolve(tmp_path / "annotations.json", val_fraction=0.2, seed=1)
    assert data.class_names == ["square", "circle", "bar"]  # ordered by category id 1, 3, 7
    assert data.label_to_category == {1: 1, 2: 3, 3: 7}
    assert data.category_to_label == {1: 1, 3: 2, 7: 3}
    assert data.val_from_train and data.test is None
    assert (len(data.train), len(data.val)) == (8, 2)
    assert sorted(data.train.image_ids + data.val.image_ids) == [img["id"] for img in coco["images"]]
    for split in data.splits.values():
        assert all(Path(p).is_file() and Path(p).parent.name == "images" for p in split.paths)
    # The map survives JSON (it goes into transferkit.json).
    assert CategoryMap.from_dict(json.loads(json.dumps(data.categories.to_dict()))) == data.categories


def test_file_names_relative_to_the_json_folder(tmp_path):
    coco = write_coco(tmp_path, n=4, image_dir="pics", json_name=None)
    for img in coco["images"]:
        img["file_name"] = "pics/" + img["file_name"]
    data = quiet_resolve(write_json(tmp_path / "boxes.json", coco))
    assert all(Path(p).parent == tmp_path / "pics" for p in data.train.paths + data.val.paths)


def test_folder_with_a_single_json(tmp_path):
    write_coco(tmp_path, n=4, json_name="_annotations.coco.json")
    data = quiet_resolve(tmp_path)
    assert len(data.train) + len(data.val) == 4


def test_folder_with_two_jsons_and_no_annotations_json_is_an_error(tmp_path):
    write_coco(tmp_path, n=3, json_name="a.json")
    write_json(tmp_path / "b.json", json.loads((tmp_path / "a.json").read_text()))
    with pytest.raises(DataError, match=r"2 JSON files .*annotations\.json"):
        resolve_detection_data(tmp_path)


def test_split_folders(tmp_path):
    write_coco(tmp_path / "train", n=5)
    write_coco(tmp_path / "valid", n=3, first_id=500)
    write_coco(tmp_path / "test", n=2, first_id=900)
    data = quiet_resolve(tmp_path)
    assert not data.val_from_train
    assert [len(s) for s in (data.train, data.val, data.test)] == [5, 3, 2]
    assert data.val.image_ids == [500, 502, 504]
    assert data.test.name == "test" and all("/test/images/" in p for p in data.test.paths)


def test_split_named_jsons_sharing_an_images_folder(tmp_path):
    coco = write_coco(tmp_path, n=6, json_name=None)
    train = {
        **coco,
        "images": coco["images"][:4],
        "annotations": [a for a in coco["annotations"] if a["image_id"] < 108],
    }
    val = {
        **coco,
        "images": coco["images"][4:],
        "annotations": [a for a in coco["annotations"] if a["image_id"] >= 108],
    }
    write_json(tmp_path / "train.json", train)
    write_json(tmp_path / "val.json", val)
    data = quiet_resolve(tmp_path)
    assert (len(data.train), len(data.val), data.val_from_train) == (4, 2, False)


def test_dict_of_splits_files_folders_and_in_memory_dicts(tmp_path):
    write_coco(tmp_path / "a", n=4)
    write_coco(tmp_path / "b", n=3, first_id=300)
    mem = write_coco(tmp_path / "c", n=2, first_id=700, json_name=None)
    mem2 = write_coco(tmp_path / "d", n=2, first_id=800, json_name=None)
    data = quiet_resolve(
        {
            "train": str(tmp_path / "a" / "annotations.json"),
            "validation": tmp_path / "b",
            "test": {**mem, "image_root": str(tmp_path / "c" / "images")},
        }
    )
    assert [len(s) for s in data.splits.values()] == [4, 3, 2]
    assert data.test.image_ids == [700, 702]
    # {"annotations": <dict or file>, "images": <folder>} and a bare COCO dict as the whole data.
    data = quiet_resolve({"train": tmp_path / "a", "val": {"annotations": mem2, "images": tmp_path / "d" / "images"}})
    assert data.val.image_ids == [800, 802]
    data = quiet_resolve(
        {"annotations": str(tmp_path / "a" / "annotations.json"), "images": tmp_path / "a" / "images"}
    )
    assert len(data.train) + len(data.val) == 4


def test_val_categories_must_agree_with_training(tmp_path):
    write_coco(tmp_path / "train", n=3)
    val = write_coco(tmp_path / "val", n=3, first_id=400)
    val["categories"][0]["name"] = "rod"  # id 7 renamed
    write_json(tmp_path / "val" / "annotations.json", val)
    with pytest.raises(DataError, match=r"Category id 7 is 'rod' .* but 'bar'"):
        resolve_detection_data(tmp_path)
    val["categories"] = [*CATEGORIES, {"id": 9, "name": "ring"}]
    val["annotations"][0]["category_id"] = 9
    write_json(tmp_path / "val" / "annotations.json", val)
    with pytest.raises(DataError, match=r"category 9 \('ring'\), which the training data"):
        resolve_detection_data(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Categories, negatives, crowd, filled fields, carve
# ----------------------------------------------------------------------------------------------------------------
def test_category_ids_round_trip_through_labels(tmp_path):
    coco = write_coco(tmp_path, n=6, negatives=0)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    ds = DetectionDataset(data.val)
    to_cat = data.label_to_category
    for i in range(len(ds)):
        _, target = ds[i]
        want = [a["category_id"] for a in coco["annotations"] if a["image_id"] == target["image_id"]]
        assert [to_cat[int(label)] for label in target["labels"]] == want
        assert set(target["labels"].tolist()) <= {1, 2, 3}
    assert {a["category_id"] for a in data.val.coco["annotations"]} == {1, 3, 7}  # GT keeps the original ids
    assert [c["id"] for c in data.val.coco["categories"]] == [1, 3, 7]


def test_dataset_items_and_negatives(tmp_path):
    coco = write_coco(tmp_path, n=4, negatives=2)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    assert data.val.image_ids == [100, 102, 104, 106]  # negatives kept
    assert [len(a) for a in data.val.annotations] == [1, 2, 0, 0]
    ds = DetectionDataset(data.val)
    image, target = ds[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 48, 64)
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.XYXY
    assert boxes.dtype == torch.float32 and tuple(boxes.canvas_size) == (48, 64)
    x, y, w, h = coco["annotations"][0]["bbox"]
    assert boxes.tolist() == [[x, y, x + w, y + h]]
    assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.bool
    assert target["image_id"] == 100 and target["orig_size"] == (48, 64)
    _, empty = ds[3]
    assert tuple(empty["boxes"].shape) == (0, 4) and tuple(empty["labels"].shape) == (0,)


def test_crowd_boxes_stay_in_ground_truth_but_not_in_training_targets(tmp_path):
    coco = write_coco(tmp_path, n=3, negatives=0, json_name=None)
    coco["annotations"][1]["iscrowd"] = 1  # image 102, first of its two boxes
    write_json(tmp_path / "annotations.json", coco)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    for split in (data.train, data.val):
        assert [a["iscrowd"] for a in split.coco["annotations"]] == [0, 1, 0, 0, 0, 0]
    _, train_target = DetectionDataset(data.train)[1]
    _, val_target = DetectionDataset(data.val)[1]
    assert len(train_target["boxes"]) == 1 and not train_target["iscrowd"].any()
    assert val_target["iscrowd"].tolist() == [True, False] and len(val_target["labels"]) == 2
    _, kept = data.train.build(drop_crowd=False)[1]
    assert kept["iscrowd"].tolist() == [True, False]
    stats = data_statistics(data.train)
    assert (stats["num_boxes"], stats["num_crowd"]) == (5, 1)


def test_missing_area_iscrowd_and_ids_are_filled(tmp_path):
    coco = write_coco(tmp_path, n=3, negatives=0, json_name=None)
    for a in coco["annotations"]:
        del a["iscrowd"], a["id"]
    del coco["annotations"][0]["area"]
    coco["annotations"][1]["area"] = 100.0  # a given area (e.g. a mask's) is kept
    data = quiet_resolve({"train": write_json(tmp_path / "a.json", coco), "val": tmp_path / "a.json"})
    anns = data.val.coco["annotations"]
    assert anns[0]["area"] == 16 * 16 and anns[1]["area"] == 100.0
    assert all(a["iscrowd"] == 0 for a in anns)
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))


def test_seeded_val_carve_by_image(tmp_path):
    coco = write_coco(tmp_path, n=20, negatives=4)
    all_ids = [img["id"] for img in coco["images"]]
    a = quiet_resolve(tmp_path, val_fraction=0.25, seed=3)
    b = quiet_resolve(tmp_path, val_fraction=0.25, seed=3)
    c = quiet_resolve(tmp_path, val_fraction=0.25, seed=4)
    assert a.val.image_ids == b.val.image_ids != c.val.image_ids
    _, val_idx = random_split(20, 0.25, seed=3)
    assert a.val.image_ids == [all_ids[i] for i in val_idx]
    assert len(a.val) == 5 and sorted(a.train.image_ids + a.val.image_ids) == all_ids
    for split in (a.train, a.val):  # each split's COCO dict is consistent with its images
        ids = set(split.image_ids)
        assert {ann["image_id"] for ann in split.coco["annotations"]} <= ids
        assert [ann for per in split.annotations for ann in per] == split.coco["annotations"]
        assert len(split.paths) == len(split.coco["images"])
    n_boxes = sum(len(s.coco["annotations"]) for s in (a.train, a.val))
    assert n_boxes == len(coco["annotations"])


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------
def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"annotations\.json' is not valid JSON: .* line 2, column 12"):
        resolve_detection_data(path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    coco = write_coco(tmp_path, n=2, json_name=None)
    del coco[key]
    with pytest.raises(DataError, match=rf"a\.json' has no '{key}' key"):
        resolve_detection_data(write_json(tmp_path / "a.json", coco))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda c: c["annotations"][0].update(image_id=999), r"annotations\[0\] \(id 1\) points to image_id 999"),
        (
            lambda c: c["annotations"][1].update(category_id=5),
            r"annotations\[1\] \(id 2\) has category_id 5, .*not in",
        ),
        (lambda c: c["images"][1].update(id=100), r"image id 100 appears twice \(images\[0\] and images\[1\]\)"),
        (lambda c: c.update(images=[], annotations=[]), r"lists no images"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 1\) has bbox \[1, 2, 3\]"),
        (lambda c: c["images"][0].update(width=50), r"images\[0\] \(id 100\) says 50x48 but .*img_00\.png' is 64x48"),
        (lambda c: c["categories"].append({"id": 1, "name": "x"}), r"category id 1 appears twice"),
    ],
)
def test_bad_annotations_name_the_file_and_place(tmp_path, edit, pattern):
    coco = write_coco(tmp_path, n=3, json_name=None)
    edit(coco)
    path = write_json(tmp_path / "bad.json", coco)
    with pytest.raises(DataError, match=pattern) as info:
        resolve_detection_data(path)
    assert str(path) in str(info.value)


def test_training_split_without_boxes(tmp_path):
    write_coco(tmp_path, n=3, negatives=3)
    with pytest.raises(DataError, match=r"training split .* has no boxes to learn from"):
        resolve_detection_data(tmp_path)
    coco = write_coco(tmp_path / "crowd", n=3, negatives=1, json_name=None)
    for a in coco["annotations"]:
        a["iscrowd"] = 1  # crowd boxes alone teach nothing
    with pytest.raises(DataError, match=r"none of them a non-crowd box"):
        resolve_detection_data(write_json(tmp_path / "crowd" / "annotations.json", coco))


def test_missing_and_corrupt_image_files(tmp_path):
    write_coco(tmp_path, n=6)
    (tmp_path / "images" / "img_01.png").unlink()  # 2 boxes
    (tmp_path / "images" / "img_02.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # 3 boxes
    with pytest.raises(DataError, match=r"2 image file\(s\) are missing, corrupt") as info:
        resolve_detection_data(tmp_path)
    assert "img_01.png (not found" in str(info.value) and "img_02.png" in str(info.value)
    with pytest.warns(UserWarning, match=r"Skipped 2 image\(s\)") as record:
        data = resolve_detection_data({"train": tmp_path, "val": tmp_path}, skip_bad_files=True)
    assert len(record) == 1  # one warning for both splits
    assert data.val.image_ids == [100, 106, 108, 110]
    assert len(data.val.coco["annotations"]) == 1 + 1 + 2


def test_bad_boxes_drop_clip_error(tmp_path):
    coco = write_coco(tmp_path, n=3, negatives=0, json_name=None)  # image 100: 64x48, one box
    coco["annotations"][0]["bbox"] = [50, 40, 30, 20]  # extends past the 64x48 image
    coco["annotations"][1]["bbox"] = [5, 5, 0, 10]  # zero width
    coco["annotations"][2]["bbox"] = [60.5, 3, 12.0, 10]  # 0.5 px past the 72 px wide image 102: silently clipped
    coco["annotations"][3]["bbox"] = [10, 10, 10.0, 9.5]  # fine
    path = write_json(tmp_path / "a.json", coco)
    n = len(coco["annotations"])

    splits = {"train": path, "val": path}
    with pytest.warns(
        UserWarning, match=r"Dropped 4 bad box\(es\) \(2 in train, 2 in val.*e\.g\..*extends past"
    ) as record:
        data = resolve_detection_data(splits, bad_boxes="drop")
    assert len(record) == 1
    kept = data.val.coco["annotations"]
    assert len(kept) == n - 2 and [a["id"] for a in kept] == [3, 4, 5, 6]
    assert [60.5, 3.0, 11.5, 10.0] in [a["bbox"] for a in kept]

    with pytest.warns(UserWarning, match=r"Clipped 2 box\(es\) .* dropped 2 with no area left") as record:
        data = resolve_detection_data(splits, bad_boxes="clip")
    assert len(record) == 1
    kept = {a["id"]: a for a in data.val.coco["annotations"]}
    assert sorted(kept) == [1, 3, 4, 5, 6] and kept[1]["bbox"] == [50.0, 40.0, 14.0, 8.0]
    assert kept[1]["area"] == 256  # a given area is kept

    with pytest.raises(DataError, match=r"(?s)2 bad box\(es\) in COCO file .*a\.json.*annotations\[1\]") as info:
        resolve_detection_data(path, bad_boxes="error")
    assert "bad_boxes='drop'" in str(info.value)
    with pytest.raises(ConfigError, match="bad_boxes='fix'"):
        resolve_detection_data(path, bad_boxes="fix")


def test_unknown_data_and_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_detection_data(tmp_path / "nope.json")
    with pytest.raises(DataError, match="holds no COCO JSON file"):
        resolve_detection_data({"train": tmp_path})
    with pytest.raises(DataError, match="Unknown split 'holdout'"):
        resolve_detection_data({"train": tmp_path, "holdout": tmp_path})


# ----------------------------------------------------------------------------------------------------------------
# Transforms, collate, statistics
# ----------------------------------------------------------------------------------------------------------------
def _pixel_box(image):
    """XYXY box of the foreground pixels of a float [0, 1] image (FG's red channel is bright, background dark)."""
    ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_train_flip_keeps_boxes_on_their_pixels(tmp_path):
    write_coco(tmp_path, n=1, negatives=0)  # one 64x48 image with one 16x16 square at (2, 3)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    ds = DetectionDataset(data.train, build_detection_transforms(train=True))
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        image, target = ds[0]
        assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
        box = target["boxes"].tolist()[0]
        assert _pixel_box(image) == box
        seen.add(tuple(box))
    assert seen == {(2.0, 3.0, 18.0, 19.0), (64 - 18.0, 3.0, 64 - 2.0, 19.0)}  # both outcomes, mirrored exactly


def test_sanitize_drops_degenerate_boxes_with_their_labels_and_flags():
    tf = build_detection_transforms(train=True)
    torch.manual_seed(0)
    for _ in range(6):
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                [[1, 1, 9, 9], [4, 4, 4.5, 8], [10, 2, 20, 12]], format="XYXY", canvas_size=(16, 24)
            ),
            "labels": torch.tensor([1, 2, 3]),
            "iscrowd": torch.tensor([False, True, False]),
            "image_id": 5,
        }
        _, out = tf(tv_tensors.Image(torch.zeros(3, 16, 24, dtype=torch.uint8)), target)
        assert out["labels"].tolist() == [1, 3] and out["iscrowd"].tolist() == [False, False]
        assert len(out["boxes"]) == 2 and out["image_id"] == 5


def test_eval_transform_changes_nothing_but_the_dtype(tmp_path):
    write_coco(tmp_path, n=2, negatives=0)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    raw = DetectionDataset(data.val)[1]
    image, target = DetectionDataset(data.val, build_detection_transforms(train=False))[1]
    assert type(image) is torch.Tensor and image.dtype == torch.float32
    assert torch.allclose(image, raw[0].float() / 255, atol=1e-6)
    assert torch.equal(target["boxes"], raw[1]["boxes"]) and target["orig_size"] == (52, 72)


def test_strong_preset_keeps_boxes_valid(tmp_path):
    write_coco(tmp_path, n=4, negatives=1)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    ds = DetectionDataset(data.train, build_detection_transforms(train=True, preset="strong"))
    torch.manual_seed(0)
    for i in list(range(len(ds))) * 3:
        image, target = ds[i]
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert tuple(boxes.canvas_size) == (h, w) and len(boxes) == len(target["labels"]) == len(target["iscrowd"])
        if len(boxes):
            assert (boxes[:, 2:] - boxes[:, :2] >= 1).all() and boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
    with pytest.raises(ConfigError, match="Unknown detection transform preset 'mosaic'"):
        build_detection_transforms(train=True, preset="mosaic")


def test_collate_and_loader_with_variable_sizes(tmp_path):
    write_coco(tmp_path, n=4, negatives=1)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    ds = data.val.build(build_detection_transforms(train=False))
    pickle.loads(pickle.dumps(ds))  # DataLoader workers receive it pickled
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_detection)))
    assert [tuple(i.shape) for i in images] == [(3, 48, 64), (3, 52, 72), (3, 48, 80)]
    assert [t["image_id"] for t in targets] == [100, 102, 104]
    images, targets = collate_detection([ds[0], None, ds[3]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == 106


def test_data_statistics(tmp_path):
    write_coco(tmp_path, n=6, negatives=1)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    stats = data_statistics(data.train)
    assert stats["num_images"] == 6 and stats["num_negative_images"] == 1
    assert stats["image_short_side_median"] == 50.0  # heights 48, 52, 48, 52, 48, 52
    sizes = [np.sqrt(a["bbox"][2] * a["bbox"][3]) for a in data.train.coco["annotations"]]
    assert stats["num_boxes"] == len(sizes) == sum(stats["boxes_per_class"].values())
    assert stats["box_size"]["p50"] == pytest.approx(float(np.median(sizes)))
    assert stats["box_size"]["p5"] <= stats["box_size"]["p95"]
    assert stats["boxes_per_class"] == {"square": 3, "circle": 3, "bar": 3}
    json.dumps(stats)


def test_batches_feed_a_torchvision_detector(tmp_path):
    """The targets are what torchvision detectors take (float [0, 1] images, XYXY boxes, int64 labels 1..K), and
    eval images at their original size give detections in original coordinates."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    write_coco(tmp_path, n=4, negatives=1)
    data = quiet_resolve({"train": tmp_path, "val": tmp_path})
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    torch.manual_seed(0)
    model = FasterRCNN(
        backbone,
        num_classes=data.categories.num_classes + 1,
        rpn_anchor_generator=AnchorGenerator(((16,),), ((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        min_size=64,
        max_size=96,
        box_score_thresh=0.0,
    )
    train = DataLoader(
        data.train.build(build_detection_transforms(train=True)), batch_size=4, collate_fn=collate_detection
    )
    images, targets = next(iter(train))
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    images, targets = collate_detection([data.val.build(build_detection_transforms(train=False))[2]])
    with torch.no_grad():
        (out,) = model(images)
    h, w = targets[0]["orig_size"]
    assert len(out["boxes"]) and out["boxes"][:, 2].max() <= w and out["boxes"][:, 3].max() <= h
    with pytest.raises(TypeError, match="floating"):  # why the transforms end with a float conversion
        model([DetectionDataset(data.val)[0][0]])
