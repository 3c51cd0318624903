"""Semantic-segmentation data layer: layouts, class names, mask modes and colour maps, up-front checks, the val
carve, joint transforms, padding collate, overlays."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from transferkit.data.masks import (
    MaskReader,
    SegmentationDataset,
    build_segmentation_transforms,
    colorize,
    default_palette,
    overlay,
    pad_collate,
    read_mask,
    resolve_segmentation_data,
)
from transferkit.errors import ConfigError, DataError

CFG = {"input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
H, W = 24, 32
# Image colour of each class, so that a test can see whether image and mask still line up after a transform.
CLASS_RGB = {0: (20, 20, 20), 1: (230, 30, 30), 2: (30, 230, 30), 255: (128, 128, 128)}
ROAD_PALETTE = {"background": [0, 0, 0], "road": [128, 64, 128], "car": [0, 0, 142], 255: [255, 255, 255]}


# --- helpers ------------------------------------------------------------------------------------------------------
def shapes_mask(seed: int = 0, h: int = H, w: int = W, void: bool = True) -> np.ndarray:
    """Background 0, a square of class 1, a disc of class 2, and (void) a few ignored 255 pixels."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    m[y0 : y0 + h // 3, x0 : x0 + w // 3] = 1
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = int(rng.integers(h // 3, h - h // 4)), int(rng.integers(w // 2, w - w // 5)), min(h, w) // 5
    m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    if void:
        m[0, :3] = 255
    return m


def image_for(mask: np.ndarray) -> np.ndarray:
    img = np.zeros((*mask.shape, 3), np.uint8)
    for value, rgb in CLASS_RGB.items():
        img[mask == value] = rgb
    return img


def save_mask(path: Path, mask: np.ndarray, mode: str = "L", palette: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
        img.putpalette(palette or default_palette(256).reshape(-1).tolist())
    elif mode == "I;16":
        img = Image.fromarray(mask.astype(np.uint16))
    else:
        img = Image.fromarray(mask.astype(np.uint8))
    img.save(path)
    return path


def make_data(
    root: Path, n: int = 6, image_ext: str = ".jpg", start: int = 0, mode: str = "L", size: tuple[int, int] = (H, W)
) -> Path:
    """root/images/NNN<image_ext> + root/masks/NNN.png, n pairs of shape images."""
    for i in range(start, start + n):
        m = shapes_mask(i, *size)
        save_image(root / "images" / f"{i:03d}{image_ext}", m)
        save_mask(root / "masks" / f"{i:03d}.png", m, mode)
    return root


def save_image(path: Path, mask: np.ndarray) -> Path:
    """The shape image whose colours follow `mask`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(mask)).save(path)
    return path


def save_rgb_mask(path: Path, ids: np.ndarray, colours: dict[int, list[int]]) -> Path:
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    for cid, colour in colours.items():
        rgb[ids == cid] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def stems(pairs) -> list[str]:
    return [Path(i).stem for i, _ in pairs]


class PairDataset(Dataset):
    """(HWC uint8 array, int64 tensor mask) pairs; counts item reads."""

    def __init__(self, n: int = 5, bad_item: int | None = None, classes: list[str] | None = None):
        self.masks = [shapes_mask(i) for i in range(n)]
        if bad_item is not None:
            self.masks[bad_item] = self.masks[bad_item].copy()
            self.masks[bad_item][5, 5] = 9
        if classes is not None:
            self.classes = classes
        self.reads = 0

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i):
        self.reads += 1
        m = self.masks[i]
        return image_for(m), torch.from_numpy(m.astype(np.int64))


# --- layouts --------------------------------------------------------------------------------------------------
def test_images_and_masks_folder_pairs_by_stem_and_infers_classes(tmp_path):
    root = make_data(tmp_path / "d", n=10, image_ext=".jpg")
    data = resolve_segmentation_data(root, val_fraction=0.2, seed=1)
    assert data.classes == ["0", "1", "2"]  # K = max value (2) + 1; 255 is ignore_index
    assert "inferred" in data.class_source
    assert data.val_from_train and len(data.train) == 8 and len(data.val) == 2
    pairs = data.train.pairs + data.val.pairs
    assert sorted(stems(pairs)) == [f"{i:03d}" for i in range(10)]
    for image, mask in pairs:  # .jpg image paired with the .png mask of the same stem
        assert image.endswith(".jpg") and mask.endswith(".png") and Path(image).stem == Path(mask).stem
    image, mask = data.train.build()[0]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    mask_file = data.train.pairs[0][1]
    assert torch.equal(mask, torch.from_numpy(np.asarray(Image.open(mask_file)).astype(np.int64)))


def test_val_carve_is_seeded_and_by_image(tmp_path):
    root = make_data(tmp_path / "d", n=20)
    a = resolve_segmentation_data(root, val_fraction=0.25, seed=3)
    b = resolve_segmentation_data(root, val_fraction=0.25, seed=3)
    c = resolve_segmentation_data(root, val_fraction=0.25, seed=4)
    assert a.val.pairs == b.val.pairs and len(a.val) == 5
    assert sorted(stems(a.val.pairs)) != sorted(stems(c.val.pairs))
    assert not set(stems(a.val.pairs)) & set(stems(a.train.pairs))  # whole images, never split within one


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_split_folders_with_classes_txt_at_the_root(tmp_path, val_name):
    root = tmp_path / "d"
    make_data(root / "train", n=4)
    make_data(root / val_name, n=2, start=10)
    make_data(root / "test", n=3, start=20, image_ext=".png")
    (root / "classes.txt").write_text("background\nsquare\ndisc\n\n")
    data = resolve_segmentation_data(root)
    assert data.classes == ["background", "square", "disc"]
    assert not data.val_from_train
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    assert stems(data.val.pairs) == ["010", "011"]
    assert data.class_source.endswith("classes.txt")


def test_dict_of_splits_with_labels_json_dict_in_the_parent(tmp_path):
    make_data(tmp_path / "tr", n=4)
    make_data(tmp_path / "va", n=2, start=4)
    (tmp_path / "labels.json").write_text(json.dumps({"0": "bg", "1": "square", "2": "disc", "255": "void"}))
    data = resolve_segmentation_data({"train": tmp_path / "tr", "valid": str(tmp_path / "va")})
    assert data.classes == ["bg", "square", "disc"]  # the ignore_index entry is not a class
    assert stems(data.val.pairs) == ["004", "005"]


def test_lists_of_path_pairs_are_read_as_files(tmp_path):
    root = make_data(tmp_path / "d", n=4)
    pairs = [(root / "images" / f"{i:03d}.jpg", str(root / "masks" / f"{i:03d}.png")) for i in range(4)]
    data = resolve_segmentation_data({"train": pairs[:3], "val": pairs[3:]}, classes=["bg", "square", "disc"])
    assert stems(data.train.pairs) == ["000", "001", "002"] and stems(data.val.pairs) == ["003"]
    assert data.val.build()[0][1].shape == (H, W)
    with pytest.raises(DataError, match=r"1 file\(s\) of the train .* do not exist.*nope\.png"):
        resolve_segmentation_data([(pairs[0][0], root / "masks" / "nope.png")])


def test_labels_json_list_and_classes_argument_takes_precedence(tmp_path):
    root = make_data(tmp_path / "d", n=4)
    (root / "labels.json").write_text(json.dumps(["bg", "square", "disc"]))
    assert resolve_segmentation_data(root).classes == ["bg", "square", "disc"]
    data = resolve_segmentation_data(root, classes=["a", "b", "c", "d"])
    assert data.classes == ["a", "b", "c", "d"] and data.class_source == "classes="


def test_disagreeing_class_files_raise(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    (root / "labels.json").write_text(json.dumps(["bg", "square", "disc"]))
    (root / "classes.txt").write_text("bg\nsquare\nround\n")
    with pytest.raises(DataError, match="disagree"):
        resolve_segmentation_data(root)


def test_classes_txt_with_an_empty_line_in_the_middle_raises(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    (root / "classes.txt").write_text("bg\n\nsquare\ndisc\n")
    with pytest.raises(DataError, match=r"Line 2 of .*classes\.txt"):
        resolve_segmentation_data(root)


def test_user_dataset_of_pairs_is_scanned_for_the_class_count(tmp_path):
    ds = PairDataset(n=5)
    data = resolve_segmentation_data({"train": ds}, val_fraction=0.2)
    assert data.classes == ["0", "1", "2"] and ds.reads == 5  # read once to find K
    assert len(data.train) == 4 and data.val.dataset is ds
    assert sorted(data.train.indices + data.val.indices) == list(range(5))
    image, mask = data.val.build()[0]
    assert image.shape == (3, H, W) and image.dtype == torch.uint8 and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(ds.masks[data.val.indices[0]].astype(np.int64)))


def test_user_dataset_with_classes_is_not_read_and_checked_lazily():
    ds = PairDataset(n=4, bad_item=2, classes=["bg", "square", "disc"])
    data = resolve_segmentation_data(ds, val_fraction=0.25, seed=0)
    assert data.classes == ["bg", "square", "disc"] and ds.reads == 0
    built = SegmentationDataset(ds, reader=data.reader)
    built[0]
    with pytest.raises(DataError, match=r"item 2 of PairDataset.*\[9\]"):
        built[2]


# --- mask modes and colour maps ---------------------------------------------------------------------------------
def test_palette_png_is_read_as_indices_not_colours(tmp_path):
    m = shapes_mask(0)
    colours = [0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (252 * 3) + [255, 255, 255]
    path = save_mask(tmp_path / "p.png", m, mode="P", palette=colours)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_mask(path), m)
    # and a colour map passed for other (RGB) masks does not re-map palette PNGs
    np.testing.assert_array_equal(read_mask(path, palette=[[0, 0, 0], [1, 2, 3], [4, 5, 6]]), m)


def test_16_bit_masks_are_read_as_indices(tmp_path):
    m = shapes_mask(1).astype(np.uint16)
    m[3, 3] = 300
    path = save_mask(tmp_path / "m16.png", m, mode="I;16")
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_mask(path), m)


def test_rgb_masks_with_a_named_palette_and_a_void_colour(tmp_path):
    root = tmp_path / "d"
    rgb = {0: [0, 0, 0], 1: [128, 64, 128], 2: [0, 0, 142], 255: [255, 255, 255]}
    for i in range(4):
        m = shapes_mask(i)
        save_image(root / "images" / f"{i}.png", m)
        save_rgb_mask(root / "masks" / f"{i}.png", m, rgb)
    data = resolve_segmentation_data(root, palette=ROAD_PALETTE, val_fraction=0.25)
    assert data.classes == ["background", "road", "car"] and data.class_source == "palette="
    pair = data.train.pairs[0]
    expected = shapes_mask(int(Path(pair[1]).stem))
    _, mask = data.train.build()[0]
    np.testing.assert_array_equal(mask.numpy(), expected)  # the white 'void' colour became 255
    assert (mask == 255).sum() == 3
    # a list indexed by class id cannot map white to 255, so white is unknown there; {colour: class} can
    listed = MaskReader.from_palette([[0, 0, 0], [128, 64, 128], [0, 0, 142]])
    with pytest.raises(DataError, match=r"\(255, 255, 255\) \(3 px\)"):
        listed.read(pair[1])
    reversed_map = MaskReader.from_palette({(0, 0, 0): 0, (128, 64, 128): 1, (0, 0, 142): 2, (255, 255, 255): 255})
    np.testing.assert_array_equal(reversed_map.read(pair[1]), expected)


def test_palette_class_out_of_range_or_unknown_name_raises():
    with pytest.raises(ConfigError, match=r"class id 5, but there are 3 classes"):
        MaskReader.from_palette({5: [1, 2, 3]}, ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"'void', which is not a class"):
        MaskReader.from_palette({"a": [0, 0, 0], "void": [9, 9, 9]}, ["a", "b"])


def test_rgb_mask_without_a_palette_raises_naming_the_file(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    save_rgb_mask(root / "masks" / "001.png", shapes_mask(1), {1: [128, 64, 128], 2: [0, 0, 142]})
    with pytest.raises(DataError, match=r"001\.png.* colour \(RGB\) mask.*palette="):
        resolve_segmentation_data(root)


def test_grey_rgb_mask_is_read_as_indices(tmp_path):
    m = shapes_mask(2)
    path = tmp_path / "grey.png"
    Image.fromarray(np.repeat(m[..., None], 3, axis=2)).save(path)
    np.testing.assert_array_equal(read_mask(path), m)


def test_colour_missing_from_the_palette_raises_naming_file_and_colour(tmp_path):
    root = tmp_path / "d"
    m = shapes_mask(0)
    save_image(root / "images" / "a.png", m)
    save_rgb_mask(root / "masks" / "a.png", m, {1: [128, 64, 128], 2: [250, 170, 30]})
    with pytest.raises(DataError, match=r"a\.png.*\(250, 170, 30\)"):
        resolve_segmentation_data({"train": root, "val": root}, palette=ROAD_PALETTE)


def test_binary_0_255_masks_get_a_hint_and_read_through_grey_levels(tmp_path):
    root = tmp_path / "d"
    for i in range(3):
        m = (shapes_mask(i, void=False) > 0).astype(np.uint8) * 255
        save_image(root / "images" / f"{i}.png", np.zeros_like(m))
        save_mask(root / "masks" / f"{i}.png", m)
    with pytest.raises(DataError, match=r"0/255 need palette=\{'background': 0, 'object': 255\}"):
        resolve_segmentation_data(root)
    data = resolve_segmentation_data(root, palette={"background": 0, "object": 255})
    assert data.classes == ["background", "object"]
    _, mask = data.train.build()[0]
    assert set(mask.unique().tolist()) == {0, 1}


# --- up-front checks ----------------------------------------------------------------------------------------------
def test_images_without_masks_and_masks_without_images_are_listed_and_counted(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    for i in range(7):
        save_image(root / "images" / f"lonely{i}.png", shapes_mask(0))
    save_mask(root / "masks" / "orphan.png", shapes_mask(0))
    with pytest.raises(DataError) as err:
        resolve_segmentation_data(root)
    msg = str(err.value)
    assert "7 image(s) without a mask" in msg and "lonely0.png" in msg and "lonely6.png" not in msg
    assert "1 mask(s) without an image" in msg and "orphan.png" in msg


def test_image_mask_size_mismatch_names_both_files(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    save_mask(root / "masks" / "002.png", shapes_mask(2, h=H + 1))
    with pytest.raises(
        DataError, match=r"(?s)1 mask\(s\) differ in size.*002\.png' is 25x32, its image .*002\.jpg' 24x32"
    ):
        resolve_segmentation_data(root)


def test_mask_values_outside_the_classes_name_the_file_and_values(tmp_path):
    root = make_data(tmp_path / "d", n=3)
    bad = shapes_mask(1)
    bad[2, 2], bad[4, 4] = 3, 7
    save_mask(root / "masks" / "001.png", bad)
    (root / "classes.txt").write_text("bg\nsquare\ndisc\n")
    with pytest.raises(DataError, match=r"(?s)1 mask\(s\) hold values outside the 3 classes.*001\.png'?: \[3, 7\]"):
        resolve_segmentation_data(root)


def test_val_mask_value_beyond_the_inferred_classes_asks_for_a_class_file(tmp_path):
    make_data(tmp_path / "tr", n=3)
    val = make_data(tmp_path / "va", n=1, start=5)
    m = shapes_mask(5)
    m[1, 1] = 4
    save_mask(val / "masks" / "005.png", m)
    with pytest.raises(DataError, match=r"(?s)005\.png'?: \[4\].*classes\.txt"):
        resolve_segmentation_data({"train": tmp_path / "tr", "val": val})


def test_missing_and_empty_folders_raise(tmp_path):
    (tmp_path / "a" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no masks/ subfolder"):
        resolve_segmentation_data(tmp_path / "a")
    (tmp_path / "a" / "masks").mkdir()
    with pytest.raises(DataError, match=r"images'? holds no images"):
        resolve_segmentation_data(tmp_path / "a")
    with pytest.raises(DataError, match="does not exist"):
        resolve_segmentation_data(tmp_path / "nope")


def test_unreadable_image_raises_or_is_skipped_with_one_warning(tmp_path):
    root = make_data(tmp_path / "d", n=5)
    (root / "images" / "003.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"003\.jpg"):
        resolve_segmentation_data(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = resolve_segmentation_data(root, skip_bad_files=True)
    assert len([w for w in caught if "skip_bad_files" in str(w.message)]) == 1
    assert sorted(stems(data.train.pairs + data.val.pairs)) == ["000", "001", "002", "004"]


def test_training_masks_with_a_single_class_raise(tmp_path):
    root = tmp_path / "d"
    for i in range(2):
        m = np.zeros((H, W), np.uint8)
        save_image(root / "images" / f"{i}.png", m)
        save_mask(root / "masks" / f"{i}.png", m)
    with pytest.raises(DataError, match=r"hold 1 class\(es\) \(values: 0\)"):
        resolve_segmentation_data(root)


# --- joint transforms -----------------------------------------------------------------------------------------------
def tensors(mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(image_for(mask)).permute(2, 0, 1).contiguous(), torch.from_numpy(mask.astype(np.int64))


def red_of(image: torch.Tensor, mask: torch.Tensor, cls: int) -> float:
    return float(image[0][mask == cls].mean())


def test_flip_moves_image_and_mask_together():
    m = np.zeros((H, W), np.uint8)
    m[:, :8] = 1  # class 1 on the left edge only
    image, mask = tensors(m)
    flip = build_segmentation_transforms(CFG, train=True, preset=v2.RandomHorizontalFlip(p=1.0))
    out_image, out_mask = flip(image, mask)
    assert out_mask[10, W - 1] == 1 and out_mask[10, 0] == 0  # a known pixel moved to the other edge
    expected_red = (230 / 255 - 0.5) / 0.25  # class 1 is red, normalised with CFG's mean/std
    assert out_image[0, 10, W - 1] == pytest.approx(expected_red, abs=1e-5)
    assert out_image[0, 10, 0] == pytest.approx((20 / 255 - 0.5) / 0.25, abs=1e-5)


def test_default_training_transform_keeps_alignment_whether_or_not_it_flips():
    image, mask = tensors(shapes_mask(3))
    tf = build_segmentation_transforms(CFG, train=True)
    torch.manual_seed(0)
    columns = set()
    for _ in range(12):
        out_image, out_mask = tf(image, mask)
        assert out_image.shape == (3, 16, 16) and out_image.dtype == torch.float32
        assert red_of(out_image, out_mask, 1) > red_of(out_image, out_mask, 0) + 2  # red pixels are class 1
        columns.add(int(torch.nonzero(out_mask == 1)[:, 1].float().mean() < 8))
    assert columns == {0, 1}  # both orientations were seen


def test_resize_keeps_masks_integer_and_ignore_index():
    image, mask = tensors(shapes_mask(4))
    for preset in ("default", "crop", "none"):
        out_image, out_mask = build_segmentation_transforms(CFG, train=False, size=(13, 17), preset=preset)(
            image, mask
        )
        assert out_image.shape == (3, 13, 17) and out_mask.shape == (13, 17)
        assert out_mask.dtype == torch.int64 and type(out_mask) is torch.Tensor
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 255}
    big = torch.full((H, W), 255, dtype=torch.long)
    big[H // 2 :] = 1
    _, out_mask = build_segmentation_transforms(CFG, train=False, size=7)(image, big)
    assert set(out_mask.unique().tolist()) == {1, 255}
    torch.manual_seed(1)
    _, crop_mask = build_segmentation_transforms(CFG, train=True, preset="crop")(image, mask)
    assert crop_mask.shape == (16, 16) and set(crop_mask.unique().tolist()) <= {0, 1, 2, 255}


def test_none_preset_never_flips_and_bad_options_raise():
    image, mask = tensors(shapes_mask(5))
    tf = build_segmentation_transforms(CFG, train=True, preset="none")
    torch.manual_seed(0)
    first = tf(image, mask)[1]
    assert all(torch.equal(tf(image, mask)[1], first) for _ in range(6))
    with pytest.raises(ConfigError, match="Unknown segmentation transform preset"):
        build_segmentation_transforms(CFG, train=True, preset="flip-everything")
    with pytest.raises(ConfigError, match="keep_mask_size"):
        build_segmentation_transforms(CFG, train=True, keep_mask_size=True)


def test_keep_mask_size_and_pad_collate(tmp_path):
    root = tmp_path / "d"
    make_data(root, n=1, start=0, image_ext=".png")
    make_data(root, n=1, start=1, image_ext=".png", size=(20, 12))
    data = resolve_segmentation_data({"train": root, "val": root})
    ds = data.val.build(build_segmentation_transforms(CFG, train=False, keep_mask_size=True))
    (img0, mask0), (img1, mask1) = ds[0], ds[1]
    assert img0.shape == img1.shape == (3, 16, 16)
    assert mask0.shape == (H, W) and mask1.shape == (20, 12)  # masks stay at the original size
    images, masks, sizes = next(iter(DataLoader(ds, batch_size=2, collate_fn=pad_collate(255))))
    assert images.shape == (2, 3, 16, 16) and masks.shape == (2, H, W) and masks.dtype == torch.int64
    assert sizes.tolist() == [[H, W], [20, 12]]
    assert torch.equal(masks[1, :20, :12], mask1)
    assert (masks[1, 20:] == 255).all() and (masks[1, :, 12:] == 255).all()
    assert torch.equal(masks[0], mask0)


def test_pad_collate_pads_images_of_different_sizes_too():
    batch = [(torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)), (torch.ones(3, 6, 2), torch.ones(6, 2))]
    images, masks, sizes = pad_collate(ignore_index=-1)(batch)
    assert images.shape == (2, 3, 6, 5) and images[0, :, 4:].abs().sum() == 0 and images[1, :, :, 2:].sum() == 0
    assert masks[0, 5, 0] == -1 and masks[1, 5, 1] == 1 and sizes.tolist() == [[4, 5], [6, 2]]


# --- drawing --------------------------------------------------------------------------------------------------------
def test_colorize_and_overlay():
    mask = np.array([[0, 1], [2, 255]])
    painted = colorize(mask)
    assert painted.dtype == np.uint8 and painted.shape == (2, 2, 3)
    assert painted[0, 1].tolist() == [128, 0, 0] and painted[1, 0].tolist() == [0, 128, 0]
    assert painted[1, 1].tolist() == [224, 224, 192]  # VOC's colour of ignored pixels
    assert colorize(mask, palette=[[1, 2, 3], [4, 5, 6]])[0, 1].tolist() == [4, 5, 6]
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, mask, alpha=0.5, palette={1: [200, 0, 0], 2: [0, 0, 200]})
    assert blended[0, 1].tolist() == [150, 50, 50] and blended[1, 0].tolist() == [50, 50, 150]
    assert blended[0, 0].tolist() == [100, 100, 100] and blended[1, 1].tolist() == [100, 100, 100]
    with pytest.raises(DataError, match="resize the mask"):
        overlay(image, np.zeros((3, 3), int))


def test_mask_reader_state_round_trips(tmp_path):
    reader = MaskReader.from_palette(ROAD_PALETTE, ignore_index=255, num_classes=3)
    again = MaskReader.from_state(json.loads(json.dumps(reader.state())))
    m = shapes_mask(6)
    path = save_rgb_mask(tmp_path / "m.png", m, {1: [128, 64, 128], 2: [0, 0, 142], 255: [255, 255, 255]})
    np.testing.assert_array_equal(again.read(path), m)
    assert again.class_colours(3) == [(0, 0, 0), (128, 64, 128), (0, 0, 142)]
