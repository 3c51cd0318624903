"""Semantic-segmentation data: image/mask pairs, class names, colour maps, joint transforms, padding, overlays.

`resolve_segmentation_data` turns what a user passes as ``data`` (a folder with ``images/`` and ``masks/``, a
folder of split folders, a dict of splits, or a torch Dataset of ``(image, mask)`` pairs) into a
`SegmentationData`: the class names and, per split, a `SegmentationSource` that builds a `SegmentationDataset`
once the task knows its transforms. Everything a user can get wrong (unpaired files, size mismatches, mask values
outside the classes, colour masks without a colour map, unreadable files) is checked before training starts.

A mask is an ``(H, W)`` array of class ids. Single-channel PNGs (modes L, P, I;16) are read as ids: a palette
PNG gives its indices, not its colours. Colour masks (RGB/RGBA) are mapped to ids through ``palette=``.
Images go through `transferkit.data.imageio` like every other domain's images.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from ..errors import ConfigError, DataError
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .imageio import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    bad_files_listing,
    check_files,
    load_image,
    read_image_file,
    walk_images,
)
from .splits import normalise_splits, random_split, split_folders
from .transforms import _INTERPOLATIONS, _target_size

__all__ = [
    "SEGMENTATION_PRESETS",
    "MaskReader",
    "PadCollate",
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationSource",
    "SegmentationTransform",
    "build_segmentation_transforms",
    "colorize",
    "default_palette",
    "overlay",
    "pad_collate",
    "read_mask",
    "resolve_segmentation_data",
]

SEGMENTATION_PRESETS = ("default", "crop", "none")
IMAGES_DIR = "images"
MASKS_DIR = "masks"
CLASS_FILES = ("classes.txt", "labels.json")
_MAX_LISTED = 5  # files / values named in one error message
_LAYOUT = (
    "Semantic segmentation expects <folder>/images/<name>.<ext> and <folder>/masks/<name>.png (same names, the mask "
    "extension may differ), or split folders train/, val/, test/ that each hold images/ and masks/"
)


# ----------------------------------------------------------------------------------------------------------------
# Colour maps and mask decoding
# ----------------------------------------------------------------------------------------------------------------
def _rgb24(colour: Sequence[int]) -> int:
    r, g, b = (int(c) for c in colour[:3])
    return (r << 16) | (g << 8) | b


def _colour_text(key: int) -> str:
    return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})"


def _is_grey(key: int) -> bool:
    return key >> 16 == (key >> 8) & 255 == key & 255


def _parse_colour(value: Any, where: str) -> list[int]:
    """A colour (``[r, g, b]``, ``[r, g, b, a]``, or an int grey level) or a list of colours -> rgb24 keys."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= int(value) <= 255:
            raise ConfigError(f"palette entry {where}: grey level {value!r} is outside 0-255.")
        return [int(value) * 0x010101]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple, np.ndarray)) for v in value):
        return [k for v in value for k in _parse_colour(v, where)]  # several colours for one class
    if (
        isinstance(value, (list, tuple))
        and len(value) in (3, 4)
        and all(isinstance(c, (int, np.integer)) and 0 <= int(c) <= 255 for c in value)
    ):
        return [_rgb24(value)]  # an alpha component is accepted and ignored: masks are compared on RGB
    raise ConfigError(
        f"palette entry {where} has colour {value!r}; give [r, g, b] with values 0-255 (or an int grey level, or a "
        "list of such colours)."
    )


def _palette_entries(palette: Any, ignore_index: int) -> list[tuple[int | str, int]]:
    """(class id or name, rgb24) pairs of a user's colour map; ids equal to `ignore_index` mark ignored colours.

    Accepts ``{class: colour}`` (class = id or name), ``{colour_tuple: class}``, or a list of colours indexed by
    class id (None entries skipped).
    """
    entries: list[tuple[int | str, int]] = []
    if isinstance(palette, Mapping):
        items = list(palette.items())
        if items and all(isinstance(k, tuple) for k, _ in items):  # {(r, g, b): class}
            items = [(v, k) for k, v in items]
        for key, colour in items:
            cls = _class_key(key, "palette")
            entries += [(cls, k) for k in _parse_colour(colour, repr(key))]
    elif isinstance(palette, (list, tuple, np.ndarray)):
        for i, colour in enumerate(list(palette)):
            if colour is not None:
                entries += [(i, k) for k in _parse_colour(colour, f"[{i}]")]
    else:
        raise ConfigError(
            f"palette={palette!r} is not a colour map; pass {{class name or id: [r, g, b]}} or a list of [r, g, b] "
            "indexed by class id."
        )
    if not entries:
        raise ConfigError("palette= is empty; list the colour of every class, e.g. {'background': [0, 0, 0], ...}.")
    seen: dict[int, int | str] = {}
    for cls, key in entries:
        if key in seen and seen[key] != cls:
            raise ConfigError(f"palette maps colour {_colour_text(key)} to both {seen[key]!r} and {cls!r}; keep one.")
        seen[key] = cls
    return entries


def _class_key(key: Any, what: str) -> int | str:
    """An int class id (also from "3") or a class name."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str):
        text = key.strip()
        return int(text) if text.lstrip("+-").isdigit() else text
    raise ConfigError(f"{what} key {key!r} is neither a class id nor a class name.")


class MaskReader:
    """Reads masks (files, PIL images, arrays, tensors) as int64 ``(H, W)`` class-id arrays.

    Rules: palette PNGs (mode P) and 1-bit images are always read as their indices. Single-channel masks (L,
    I;16, I) are class ids, or, when a colour map is given that lists grey levels, looked up as grey levels (how
    binary 0/255 masks are read: ``palette={"background": 0, "object": 255}``). RGB(A) masks need the colour map
    (alpha is ignored); an RGB mask whose three channels are equal everywhere is read like a single-channel one.

    Args:
        colours: rgb24 colour key (``r << 16 | g << 8 | b``) -> class id (or `ignore_index`); None: no colour map.
        ignore_index: the id of pixels that take no part in the loss or the metrics.
        num_classes: when set, `convert` rejects ids outside ``0..num_classes-1`` that are not `ignore_index`.

    Example:
        >>> reader = MaskReader.from_palette({"background": [0, 0, 0], "road": [128, 64, 128]})
        >>> rgb = np.zeros((2, 2, 3), dtype=np.uint8)
        >>> rgb[0, 1] = (128, 64, 128)
        >>> reader.convert(rgb).tolist()
        [[0, 1], [0, 0]]
    """

    def __init__(
        self, colours: Mapping[int, int] | None = None, ignore_index: int = 255, num_classes: int | None = None
    ) -> None:
        self.colours = dict(colours) if colours else None
        self.ignore_index = int(ignore_index)
        self.num_classes = num_classes
        if self.colours:
            order = np.argsort(np.fromiter(self.colours, dtype=np.int64, count=len(self.colours)))
            self._keys = np.fromiter(self.colours, dtype=np.int64, count=len(self.colours))[order]
            self._ids = np.fromiter(self.colours.values(), dtype=np.int64, count=len(self.colours))[order]
            self._has_grey = any(_is_grey(k) for k in self.colours)
        else:
            self._keys = self._ids = None
            self._has_grey = False

    @classmethod
    def from_palette(
        cls,
        palette: Any = None,
        classes: Sequence[str] | None = None,
        *,
        ignore_index: int = 255,
        num_classes: int | None = None,
    ) -> MaskReader:
        """A reader for a user's colour map (see `resolve_segmentation_data`); class names in it need `classes`,
        unless every key is a name, in which case their order defines the ids."""
        if palette is None:
            return cls(None, ignore_index, num_classes)
        entries = _palette_entries(palette, ignore_index)
        names = list(classes) if classes is not None else _palette_names(entries, ignore_index)
        index = {n: i for i, n in enumerate(names or [])}
        colours: dict[int, int] = {}
        for key, rgb in entries:
            if isinstance(key, str):
                if key not in index:
                    known = ", ".join(map(repr, names[:20])) if names else "none"
                    raise ConfigError(
                        f"palette names class {key!r}, which is not a class (classes: {known}). Use the class names "
                        f"or ids, or map the colour to {ignore_index} (ignore_index) to leave it out of training."
                    )
                key = index[key]
            elif names is not None and key != ignore_index and not 0 <= key < len(names):
                raise ConfigError(
                    f"palette maps colour {_colour_text(rgb)} to class id {key}, but there are {len(names)} classes "
                    f"(ids 0..{len(names) - 1}); use an id in range, or {ignore_index} (ignore_index) to ignore it."
                )
            colours[rgb] = key
        return cls(colours, ignore_index, num_classes)

    def with_num_classes(self, num_classes: int) -> MaskReader:
        return MaskReader(self.colours, self.ignore_index, num_classes)

    def class_colours(self, num_classes: int) -> list[tuple[int, int, int]]:
        """The colour of each class id: the (first) colour the colour map gives it, else `default_palette`'s."""
        out = [tuple(c) for c in default_palette(max(num_classes, 1)).tolist()][:num_classes]
        done: set[int] = set()
        for key, cls in (self.colours or {}).items():
            if 0 <= cls < num_classes and cls not in done:
                out[cls] = (key >> 16, (key >> 8) & 255, key & 255)
                done.add(cls)
        return out  # type: ignore[return-value]

    def state(self) -> dict[str, Any]:
        """JSON-able state (for an output folder's transferkit.json)."""
        colours = (
            None if not self.colours else [[k >> 16, (k >> 8) & 255, k & 255, v] for k, v in self.colours.items()]
        )
        return {"ignore_index": self.ignore_index, "num_classes": self.num_classes, "colours": colours}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MaskReader:
        colours = {_rgb24(c[:3]): int(c[3]) for c in state.get("colours") or []}
        return cls(colours or None, int(state.get("ignore_index", 255)), state.get("num_classes"))

    # --- decoding -------------------------------------------------------------------------------------------
    def read(self, path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
        """The class ids of one mask file, int64 ``(H, W)``.

        Raises:
            DataError: an unreadable file, a colour mask without a colour map, a colour or grey level the map
                lacks, or (with `num_classes`) an id outside the classes.
        """
        path = os.fspath(path)
        arr, kind = _decode_mask_file(path, max_pixels)
        return self._to_ids(arr, kind, f"Mask {path!r}")

    def convert(self, mask: Any, where: str = "mask") -> np.ndarray:
        """Any mask a user's Dataset may yield (path, PIL image, ndarray or tensor ``(H, W)``, ``(1, H, W)``,
        ``(H, W, 3)``) -> int64 ``(H, W)`` class ids."""
        if isinstance(mask, (str, os.PathLike)):
            return self.read(mask)
        if hasattr(mask, "mode") and hasattr(mask, "convert"):  # PIL image
            arr, kind = _pil_mask_array(mask)
            return self._to_ids(arr, kind, where)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        if not isinstance(mask, np.ndarray):
            raise DataError(
                f"{where} is a {type(mask).__name__}; a mask must be a file path, a PIL image, or an (H, W) array or "
                "tensor of class ids."
            )
        arr = mask
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        elif arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)  # a CHW colour mask
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            return self._to_ids(np.asarray(arr[..., :3]), "colour", where)
        if arr.ndim != 2:
            raise DataError(
                f"{where} has shape {tuple(arr.shape)}; a mask must be (H, W) class ids (or (H, W, 3) RGB)."
            )
        return self._to_ids(arr, "index", where)

    def _to_ids(self, arr: np.ndarray, kind: str, where: str) -> np.ndarray:
        if kind == "colour":
            if arr.dtype != np.uint8:
                arr = _integral(arr, where).clip(0, 255).astype(np.uint8)
            if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
                arr, kind = arr[..., 0], "grey"  # a grey mask saved as RGB
            elif self.colours is None:
                raise DataError(
                    f"{where} is a colour (RGB) mask, but no colour map was given. Pass palette= mapping colours to "
                    "classes, e.g. palette={'background': [0, 0, 0], 'road': [128, 64, 128]} (map a colour to "
                    f"{self.ignore_index} to ignore it), or save the masks as single-channel PNGs of class ids "
                    "(mode L or P)."
                )
            else:
                keys = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
                return self._checked(self._lookup(keys, where, "colour"), where)
        if kind == "grey" and self._has_grey:
            ids = _integral(arr, where)
            if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
                raise DataError(f"{where} has grey levels outside 0-255, which palette= cannot map.")
            return self._checked(self._lookup(ids.astype(np.int64) * 0x010101, where, "grey level"), where)
        return self._checked(_integral(arr, where), where)

    def _lookup(self, keys: np.ndarray, where: str, what: str) -> np.ndarray:
        # searchsorted over the few known colours: O(pixels * log colours), no sort of the pixels themselves.
        flat = keys.reshape(-1)
        pos = np.minimum(np.searchsorted(self._keys, flat), len(self._keys) - 1)
        ok = self._keys[pos] == flat
        if not ok.all():
            unknown, counts = np.unique(flat[~ok], return_counts=True)
            order = np.argsort(-counts)[:_MAX_LISTED]
            if what == "colour":
                listed = ", ".join(f"{_colour_text(int(unknown[i]))} ({counts[i]} px)" for i in order)
            else:
                listed = ", ".join(f"{int(unknown[i]) & 255} ({counts[i]} px)" for i in order)
            more = f" and {len(unknown) - len(order)} more" if len(unknown) > len(order) else ""
            hint = (
                " palette= applies to single-channel masks too (as grey levels); if these values are class ids, "
                "don't pass palette=, or save such masks as palette PNGs (mode P)."
                if what == "grey level"
                else ""
            )
            raise DataError(
                f"{where} has {what}(s) {listed}{more} that palette= does not list. Add them to palette= (map a "
                f"colour to {self.ignore_index} = ignore_index to leave its pixels out).{hint}"
            )
        return self._ids[pos].reshape(keys.shape)

    def _checked(self, ids: np.ndarray, where: str) -> np.ndarray:
        ids = ids.astype(np.int64, copy=False)
        if self.num_classes is not None:
            bad = _bad_values(distinct_values(ids), self.num_classes, self.ignore_index)
            if bad.size:
                raise DataError(_values_message([(where, bad)], self.num_classes, self.ignore_index, None))
        return ids


def _integral(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64)
    raise DataError(f"{where} has dtype {arr.dtype} with non-integer values; a mask holds integer class ids.")


def _decode_mask_file(path: str, max_pixels: int | None) -> tuple[np.ndarray, str]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if max_pixels is not None and img.size[0] * img.size[1] > max_pixels:
                raise DataError(
                    f"Mask {path!r} is {img.size[0]}x{img.size[1]} pixels, more than max_image_pixels={max_pixels:,} "
                    "(a guard against decompression bombs). Resize it, or raise max_image_pixels if it is real."
                )
            return _pil_mask_array(img)
    except DataError:
        raise
    except OSError as e:
        if isinstance(e, FileNotFoundError) or not os.path.isfile(path):
            raise DataError(f"Mask file {path!r} does not exist or cannot be read. Check the path.") from None
        raise DataError(f"Cannot decode mask {path!r} ({type(e).__name__}: {e}); replace or delete it.") from None
    except Exception as e:  # PIL raises SyntaxError, ValueError... on broken files
        raise DataError(f"Cannot decode mask {path!r} ({type(e).__name__}: {e}); replace or delete it.") from None


def _pil_mask_array(img: Any) -> tuple[np.ndarray, str]:
    """(array, kind): "index" (P, 1: never through the colour map), "grey" (L, I;16, I, F) or "colour" (RGB)."""
    mode = img.mode
    if mode in ("P", "PA", "1"):
        arr = np.asarray(img)
        return (arr[..., 0] if arr.ndim == 3 else arr), "index"  # PA: drop alpha
    if mode in ("L", "LA") or mode.startswith("I") or mode == "F":
        arr = np.asarray(img)
        return (arr[..., 0] if arr.ndim == 3 else arr), "grey"
    if mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img)[..., :3], "colour"


def read_mask(
    path: str | os.PathLike,
    palette: Any = None,
    *,
    classes: Sequence[str] | None = None,
    ignore_index: int = 255,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Reads one mask file as int64 ``(H, W)`` class ids (rules in `MaskReader`).

    Example:
        >>> read_mask("data/masks/001.png").shape  # doctest: +SKIP
        (240, 320)
    """
    return MaskReader.from_palette(palette, classes, ignore_index=ignore_index).read(path, max_pixels)


def distinct_values(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (a bincount when they are small and non-negative: no sort)."""
    flat = arr.reshape(-1)
    if flat.size == 0:
        return flat[:0].astype(np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 1 << 16:
        return np.flatnonzero(np.bincount(flat, minlength=hi + 1)).astype(np.int64)
    return np.unique(flat).astype(np.int64)


def _bad_values(values: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    return values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]


def _values_message(
    offenders: list[tuple[str, np.ndarray]], num_classes: int, ignore_index: int, class_source: str | None
) -> str:
    listed = "\n".join(f"  {where}: {v[:10].tolist()}" for where, v in offenders[:_MAX_LISTED])
    more = f"\n  ... and {len(offenders) - _MAX_LISTED} more" if len(offenders) > _MAX_LISTED else ""
    source = f" ({class_source})" if class_source else ""
    jpeg = any(str(w).lower().rstrip("'\"").endswith((".jpg", ".jpeg")) for w, _ in offenders)
    hint = " JPEG compression changes pixel values: save masks as PNG." if jpeg else ""
    return (
        f"{len(offenders)} mask(s) hold values outside the {num_classes} classes (ids 0..{num_classes - 1}){source} "
        f"that are not ignore_index={ignore_index}:\n{listed}{more}\nList every class in classes.txt or "
        f"classes=[...], or set those pixels to {ignore_index} to ignore them.{hint}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------
class SegmentationDataset(Dataset):
    """Image/mask pairs; yields ``(image, mask)``: a uint8 ``(3, H, W)`` RGB tensor and an int64 ``(H, W)`` tensor,
    passed through `transform(image, mask)` when given (e.g. from `build_segmentation_transforms`).

    The transform receives ``torchvision.tv_tensors.Image`` / ``Mask`` objects, so torchvision v2 transforms
    move both together and resize the mask with nearest neighbour; it returns plain tensors.

    Args:
        items: ``(image path, mask path)`` pairs, or a map-style Dataset of ``(image, mask)`` pairs (image as for
            `load_image`; mask a path, PIL image, array or tensor).
        transform: joint transform ``(image, mask) -> (image, mask)``; None keeps the uint8 image.
        reader: how masks become class ids (colour map, ignore_index, class count); default: ids as stored.
        indices: for a Dataset, the items that belong to this split (None: all).
        max_pixels: images with more pixels are refused (decompression-bomb guard).

    Example:
        >>> ds = SegmentationDataset([("images/a.jpg", "masks/a.png")])  # doctest: +SKIP
        >>> image, mask = ds[0]  # uint8 (3, H, W), int64 (H, W)  # doctest: +SKIP
    """

    def __init__(
        self,
        items: Sequence[tuple[str | os.PathLike, str | os.PathLike]] | Dataset,
        transform: Callable | None = None,
        *,
        reader: MaskReader | None = None,
        indices: Sequence[int] | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        self.is_files = _is_path_pairs(items) or (isinstance(items, (list, tuple)) and not items)
        if self.is_files:
            self.pairs = [(os.fspath(i), os.fspath(m)) for i, m in items]
            self.dataset = None
        else:
            self.pairs = None
            self.dataset = items
        self.transform = transform
        self.reader = reader if reader is not None else MaskReader()
        self.indices = list(indices) if indices is not None else None
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        if self.indices is not None:
            return len(self.indices)
        return len(self.pairs) if self.is_files else len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[index] if self.indices is not None else index
        if self.is_files:
            image_path, mask_path = self.pairs[j]
            image = read_image_file(image_path, self.max_pixels)
            mask = self.reader.read(mask_path, self.max_pixels)
            where = f"mask {mask_path!r} (image {image_path!r})"
        else:
            raw_image, raw_mask = _unpack_pair(self.dataset[j], j, self.dataset)
            where = f"item {j} of {type(self.dataset).__name__}"
            image = load_image(raw_image, self.max_pixels)
            mask = self.reader.convert(raw_mask, f"The mask of {where}")
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise DataError(
                f"The {where} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is "
                f"{image.shape[1]}x{image.shape[2]}; a mask must have its image's size."
            )
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))
        if self.transform is None:
            return image, mask_t
        return _apply_joint(self.transform, image, mask_t)


def _apply_joint(transform: Callable, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(transform, SegmentationTransform):
        return transform(image, mask)
    from torchvision import tv_tensors

    out = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ConfigError(
            f"A segmentation transform must return (image, mask); {type(transform).__name__} returned "
            f"{type(out).__name__}."
        )
    return _plain(out[0]), _plain(out[1]).long()


def _plain(t: Any) -> Any:
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else t


def _unpack_pair(item: Any, j: int, dataset: Any) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    if isinstance(item, Mapping) and "image" in item and "mask" in item:
        return item["image"], item["mask"]
    raise DataError(
        f"Item {j} of {type(dataset).__name__} is a {type(item).__name__}; semantic segmentation needs each item to "
        "be an (image, mask) pair (or a dict with 'image' and 'mask')."
    )


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SegmentationSource:
    """One split's items before transforms: file pairs, or (items of) a user's Dataset.

    Attributes:
        pairs: ``(image path, mask path)`` pairs (file sources), else None.
        dataset: the user's Dataset of ``(image, mask)`` pairs (dataset sources), else None.
        indices: for dataset sources, the items of `dataset` in this split (None: all).
        origin: where the split came from, for messages.
        reader: how this split's masks become class ids.
    """

    pairs: list[tuple[str, str]] | None = field(default=None, repr=False)
    dataset: Any = field(default=None, repr=False)
    indices: list[int] | None = field(default=None, repr=False)
    origin: str = ""
    reader: MaskReader = field(default_factory=MaskReader, repr=False)

    def __len__(self) -> int:
        if self.pairs is not None:
            return len(self.pairs)
        return len(self.indices) if self.indices is not None else len(self.dataset)

    def __repr__(self) -> str:
        kind = "files" if self.pairs is not None else "dataset"
        return f"SegmentationSource({kind}, n={len(self)}, origin={self.origin!r})"

    def build(self, transform: Callable | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Dataset:
        """A `SegmentationDataset` of ``transform(image, mask)`` pairs.

        Example:
            >>> ds = data.train.build(build_segmentation_transforms(cfg, train=True))  # doctest: +SKIP
        """
        items = self.pairs if self.pairs is not None else self.dataset
        return SegmentationDataset(items, transform, reader=self.reader, indices=self.indices, max_pixels=max_pixels)

    def _take(self, idx: Sequence[int]) -> SegmentationSource:
        if self.pairs is not None:
            return SegmentationSource(pairs=[self.pairs[i] for i in idx], origin=self.origin, reader=self.reader)
        base = self.indices if self.indices is not None else range(len(self.dataset))
        return SegmentationSource(
            dataset=self.dataset, indices=[base[i] for i in idx], origin=self.origin, reader=self.reader
        )


@dataclass(frozen=True)
class SegmentationData:
    """The resolved splits of a semantic-segmentation run.

    Attributes:
        classes: class names; a mask value is an index into this list.
        train, val: sources of the training and validation splits (val carved out of train when not given).
        test: source of the test split, or None.
        reader: the mask reader (colour map, `ignore_index`, class count) shared by the splits.
        val_from_train: True when `val` was carved out of the training images.
        class_source: where the class names came from (``"classes.txt"``, ``"classes="``, ``"inferred"``, ...).

    Example:
        >>> data = resolve_segmentation_data("data/roads")  # doctest: +SKIP
        >>> data.classes, {name: len(s) for name, s in data.splits.items()}  # doctest: +SKIP
        (['background', 'road'], {'train': 90, 'val': 10})
    """

    classes: list[str]
    train: SegmentationSource
    val: SegmentationSource
    reader: MaskReader
    test: SegmentationSource | None = None
    val_from_train: bool = False
    class_source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ignore_index(self) -> int:
        return self.reader.ignore_index

    @property
    def splits(self) -> dict[str, SegmentationSource]:
        """The present splits by name, e.g. ``{"train": ..., "val": ...}``."""
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out


# ----------------------------------------------------------------------------------------------------------------
# Resolving user data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Split:
    origin: str
    pairs: list[tuple[str, str]] | None = None
    dataset: Any = None
    values: list[np.ndarray] | None = None  # distinct mask values per pair (file splits, after the scan)


def resolve_segmentation_data(
    data: Any,
    *,
    val_fraction: float = 0.1,
    seed: int = 42,
    classes: Sequence[str] | Mapping[Any, str] | None = None,
    palette: Any = None,
    ignore_index: int = 255,
    skip_bad_files: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> SegmentationData:
    """Finds the image/mask pairs, class names and splits in `data` and checks them before any training starts.

    Accepted `data`:
        - a folder holding ``images/`` and ``masks/`` whose files share names up to the extension
          (``images/a.jpg`` pairs with ``masks/a.png``; subfolders pair by relative path);
        - a folder of split folders ``train/``, ``val/``, ``test/`` (or any name of the split table:
          ``valid/``, ``validation/``, ``dev/``, ``testing/``...), each with ``images/`` and ``masks/``;
        - a dict mapping split names to such folders, to lists of ``(image path, mask path)`` pairs, or to
          Datasets;
        - a map-style torch Dataset yielding ``(image, mask)`` pairs (image as for `load_image`; mask a path,
          PIL image, ``(H, W)`` array/tensor of class ids, or ``(H, W, 3)`` colours).

    Class names, in order of precedence: `classes`; a ``classes.txt`` (one name per line, line i = class i) or
    ``labels.json`` (a list of names, or a dict id -> name) in the data folder (for split folders: in the folder
    above them, or in the train folder); the names of a name-keyed `palette`; a Dataset's ``classes``
    attribute. Failing all of these, the classes are ``"0", "1", ..., "K-1"`` where **K = the largest mask value
    in the training masks, not counting `ignore_index`, + 1** (or one more than the largest class id of
    `palette`, if larger): a class that never occurs in training but appears in val/test masks then needs a
    class file. Finding K of a Dataset means reading all its training items once.

    Masks: single-channel PNGs of class ids (modes L, P, I;16); palette PNGs are read as their indices, not
    their colours. RGB(A) masks need `palette`, a colour -> class map: ``{class name or id: [r, g, b]}``,
    ``{(r, g, b): class}``, or a list of colours indexed by class id. A colour mapped to `ignore_index` (e.g.
    ``{255: [224, 224, 192]}`` for a 'void' colour) is ignored; any other unlisted colour is an error. With
    `palette`, single-channel masks are looked up as grey levels (ints): ``palette={"background": 0, "object":
    255}`` reads binary 0/255 masks, which would otherwise be read as 0 = background, 255 = ignored.

    Checks (each a DataError naming the files and the fix): images without masks and masks without images;
    empty folders; unreadable files (header check; `skip_bad_files` drops the pairs instead, with one warning);
    colour masks without `palette` and colours it lacks; image/mask size mismatches; mask values outside the
    classes that are not `ignore_index`; fewer than two classes in the training masks. Every mask file is read
    once for these checks (masks are small; a bincount per mask).

    Without a val split, ``round(val_fraction * n)`` training images (at least 1) are carved out at random
    (seeded, by image: an image holds several classes, so no stratification).

    Args:
        data: the data, as above.
        val_fraction: share of the training images used for validation when no val split is given.
        seed: seed of that draw.
        classes: fixed class names (a list, or a dict id -> name); overrides class files.
        palette: colour map for colour (or grey-level) masks, as above.
        ignore_index: mask value of pixels that take no part in the loss or metrics.
        skip_bad_files: leave out pairs whose image or mask is unreadable, with one warning, instead of raising.
        max_pixels: images and masks with more pixels are reported as bad (decompression-bomb guard).

    Returns:
        A `SegmentationData` with ``classes`` and the ``train``, ``val`` and (optional) ``test`` sources.

    Raises:
        DataError: any of the checks above, a missing path, or an unusable Dataset.
        ConfigError: a malformed `palette` or `classes`, or `val_fraction` outside (0, 1).

    Example:
        >>> colours = {"background": [0, 0, 0], "road": [128, 64, 128]}
        >>> data = resolve_segmentation_data("data/roads", palette=colours)  # doctest: +SKIP
        >>> data.classes, len(data.train), len(data.val)  # doctest: +SKIP
        (['background', 'road'], 90, 10)
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction!r} is invalid; pass a fraction in (0, 1), e.g. 0.1.")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ConfigError(f"ignore_index={ignore_index!r} must be an int (e.g. 255).")
    ignore_index = int(ignore_index)
    specs, class_dirs = _split_specs(data)
    raw = {name: _read_split(spec, name) for name, spec in specs.items()}
    _check_readable(raw, skip_bad_files, max_pixels)

    # Class names (they resolve palette names), then the one reader every split shares.
    names, class_source = _given_classes(classes, ignore_index), "classes="
    if names is None:
        names, class_source = _class_file_names(class_dirs, ignore_index)
    if names is None and palette is not None:
        names, class_source = _palette_names(_palette_entries(palette, ignore_index), ignore_index), "palette="
    if names is None and raw["train"].dataset is not None:
        ds_classes = getattr(raw["train"].dataset, "classes", None)
        if isinstance(ds_classes, (list, tuple)) and ds_classes and all(isinstance(c, str) for c in ds_classes):
            names, class_source = list(ds_classes), f"{raw['train'].origin}.classes"
    reader = MaskReader.from_palette(palette, names, ignore_index=ignore_index)

    _scan_masks(raw, reader, max_pixels)
    if names is None:
        if raw["train"].dataset is not None:  # no class names anywhere: read the Dataset once to find K
            raw["train"].values = _scan_dataset(raw["train"], reader)
        top = max((int(v[v != ignore_index].max(initial=-1)) for v in raw["train"].values), default=-1)
        if reader.colours:
            top = max(top, max((c for c in reader.colours.values() if c != ignore_index), default=-1))
        names, class_source = [str(i) for i in range(top + 1)], "inferred from the training masks' largest value"
    num_classes = len(names)
    reader = reader.with_num_classes(num_classes)

    _check_mask_values(raw, num_classes, ignore_index, class_source)
    _check_enough_classes(raw["train"], names, ignore_index)

    sources = {
        name: SegmentationSource(pairs=s.pairs, dataset=s.dataset, origin=s.origin, reader=reader)
        for name, s in raw.items()
    }
    val_from_train = "val" not in sources
    if val_from_train:
        tr_idx, val_idx = random_split(len(sources["train"]), val_fraction, seed)
        if not val_idx:
            raise DataError(
                f"Cannot carve a validation split out of {raw['train'].origin}: it holds a single image. Add images, "
                "or pass a val split, e.g. data={'train': ..., 'val': ...}."
            )
        sources["val"] = sources["train"]._take(val_idx)
        sources["train"] = sources["train"]._take(tr_idx)
    return SegmentationData(
        classes=list(names),
        train=sources["train"],
        val=sources["val"],
        reader=reader,
        test=sources.get("test"),
        val_from_train=val_from_train,
        class_source=class_source,
    )


def read_labelled_masks(
    data: Any,
    classes: Sequence[str],
    *,
    palette: Any = None,
    ignore_index: int = 255,
    skip_bad_files: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    role: str = "evaluation",
) -> SegmentationSource:
    """One labelled image/mask set (a folder with images/ and masks/, a list of pairs or a Dataset) read against a
    trained model's `classes`, e.g. to evaluate it on new data. Messages call it the `role` data, not a split.

    Example:
        >>> source = read_labelled_masks("data/roads_test", ["background", "road"])  # doctest: +SKIP
    """
    raw = {role: _read_split(data, role)}
    _check_readable(raw, skip_bad_files, max_pixels)
    names = _given_classes(list(classes), ignore_index)
    reader = MaskReader.from_palette(palette, names, ignore_index=ignore_index)
    _scan_masks(raw, reader, max_pixels)
    reader = reader.with_num_classes(len(names))
    _check_mask_values(raw, len(names), ignore_index, "the model's classes")
    split = raw[role]
    return SegmentationSource(pairs=split.pairs, dataset=split.dataset, origin=split.origin, reader=reader)


def _check_mask_values(raw: dict[str, _Split], num_classes: int, ignore_index: int, class_source: str) -> None:
    """Raises naming the masks with values that are neither a class id nor `ignore_index`."""
    offenders = []
    for split in raw.values():
        if split.values is None:
            continue
        wheres = (
            [repr(m) for _, m in split.pairs]
            if split.pairs
            else [f"item {i} of {split.origin}" for i in range(len(split.values))]
        )
        for where, vals in zip(wheres, split.values):
            bad = _bad_values(vals, num_classes, ignore_index)
            if bad.size:
                offenders.append((where, bad))
    if offenders:
        raise DataError(_values_message(offenders, num_classes, ignore_index, class_source))


def _split_specs(data: Any) -> tuple[dict[str, Any], list[Path]]:
    """{"train": spec, ["val": spec], ["test": spec]} and the folders to search for class files, in order."""
    if isinstance(data, Mapping):
        specs = normalise_splits(data)
        train = specs["train"]
        dirs = [Path(train), Path(train).parent] if isinstance(train, (str, os.PathLike)) else []
        return specs, dirs
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            split_dirs = split_folders(path, inside="images/ and masks/")
            if split_dirs:
                return dict(split_dirs), [path, split_dirs["train"]]
            return {"train": path}, [path]
        if path.is_file():
            raise DataError(f"Data path {str(path)!r} is a file. {_LAYOUT}.")
        raise DataError(f"Data path {str(path)!r} does not exist. Pass an existing folder. {_LAYOUT}.")
    return {"train": data}, []


def _read_split(spec: Any, split: str) -> _Split:
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return _read_folder(path, split)
        if path.exists():
            raise DataError(f"{split} data {str(path)!r} is a file, not a folder. {_LAYOUT}.")
        raise DataError(f"{split} data path {str(path)!r} does not exist. Pass an existing folder.")
    if isinstance(spec, IterableDataset):
        raise DataError(
            f"{split} data is an IterableDataset ({type(spec).__name__}); pass a map-style Dataset with __len__ and "
            "__getitem__ returning (image, mask)."
        )
    if _is_path_pairs(spec):  # a list of (image path, mask path), as SegmentationSource.pairs holds them
        pairs = [(os.path.abspath(i), os.path.abspath(m)) for i, m in spec]
        missing = [p for pair in pairs for p in pair if not os.path.isfile(p)]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) of the {split} (image, mask) pairs do not exist, e.g. {_listing(missing)}. "
                "Fix the paths."
            )
        return _Split(origin=f"{split} list of {len(pairs)} (image, mask) pairs", pairs=pairs)
    if hasattr(spec, "__getitem__") and hasattr(spec, "__len__") and not isinstance(spec, (str, bytes, Mapping)):
        if len(spec) == 0:
            raise DataError(f"The {split} Dataset {type(spec).__name__} is empty; it needs (image, mask) items.")
        return _Split(origin=f"{split} Dataset {type(spec).__name__}", dataset=spec)
    raise DataError(
        f"Cannot use {type(spec).__name__} as {split} data; pass a folder with images/ and masks/, a dict of splits, "
        "or a torch Dataset of (image, mask) pairs."
    )


def _is_path_pairs(spec: Any) -> bool:
    return (
        isinstance(spec, (list, tuple))
        and len(spec) > 0
        and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(f, (str, os.PathLike)) for f in p)
            for p in spec
        )
    )


def _read_folder(root: Path, split: str) -> _Split:
    root_s = os.path.abspath(root)
    images_dir, masks_dir = os.path.join(root_s, IMAGES_DIR), os.path.join(root_s, MASKS_DIR)
    missing = [d for d in (IMAGES_DIR, MASKS_DIR) if not os.path.isdir(os.path.join(root_s, d))]
    if missing:
        raise DataError(
            f"The {split} folder {root_s!r} has no {' or '.join(m + '/' for m in missing)} subfolder. {_LAYOUT}."
        )
    images = _by_stem(images_dir, "image")
    masks = _by_stem(masks_dir, "mask")
    exts = " ".join(IMAGE_EXTENSIONS)
    for what, found, folder in (("images", images, images_dir), ("masks", masks, masks_dir)):
        if not found:
            raise DataError(f"Folder {folder!r} holds no {what} (accepted extensions: {exts}). {_LAYOUT}.")
    lonely_images = [images[s] for s in images if s not in masks]
    lonely_masks = [masks[s] for s in masks if s not in images]
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"{len(lonely_images)} image(s) without a mask, e.g. {_listing(lonely_images)}")
        if lonely_masks:
            parts.append(f"{len(lonely_masks)} mask(s) without an image, e.g. {_listing(lonely_masks)}")
        raise DataError(
            f"In the {split} folder {root_s!r}: {'; '.join(parts)}. Every image needs a mask with the same name "
            "(up to the extension) in masks/, and every mask an image in images/: add or remove those files."
        )
    return _Split(origin=f"folder {root_s!r}", pairs=[(images[s], masks[s]) for s in sorted(images)])


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(repr(p) for p in paths[:_MAX_LISTED])
    return shown + (", ..." if len(paths) > _MAX_LISTED else "")


def _by_stem(folder: str, what: str) -> dict[str, str]:
    """Relative path without extension -> file; two files with one stem (a.jpg, a.png) are ambiguous."""
    out: dict[str, str] = {}
    for path in walk_images(folder):
        stem = PurePath(os.path.relpath(path, folder)).with_suffix("").as_posix()
        if stem in out:
            raise DataError(
                f"Two {what} files share the name {stem!r}: {out[stem]!r} and {path!r}; files pair by name, so keep "
                "one of them."
            )
        out[stem] = path
    return out


def _check_readable(raw: dict[str, _Split], skip: bool, max_pixels: int | None) -> None:
    files = [p for s in raw.values() if s.pairs for pair in s.pairs for p in pair]
    bad = check_files(files, max_pixels)
    if not bad:
        return
    if not skip:
        raise DataError(
            f"{len(bad)} image or mask file(s) are corrupt or not images:\n{bad_files_listing(bad, _MAX_LISTED)}\n"
            "Delete or replace them, or pass skip_bad_files=True to leave their image/mask pairs out."
        )
    bad_set = {p for p, _ in bad}
    dropped = 0
    for name, split in raw.items():
        if split.pairs is None:
            continue
        keep = [pair for pair in split.pairs if pair[0] not in bad_set and pair[1] not in bad_set]
        dropped += len(split.pairs) - len(keep)
        if not keep:
            raise DataError(
                f"Every image/mask pair of the {name} split ({split.origin}) is unreadable; add readable files."
            )
        split.pairs = keep
    warnings.warn(
        f"Left out {dropped} image/mask pair(s) with {len(bad)} unreadable file(s) (skip_bad_files=True), e.g. "
        f"{bad[0][0]!r} ({bad[0][1]}).",
        UserWarning,
        stacklevel=3,
    )


def _image_hw(path: str) -> tuple[int, int]:
    """(height, width) of an image as decoded: header size, transposed by an EXIF rotation (as the decoders do)."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # broken EXIF: the decoders ignore it too
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _scan_pair(pair: tuple[str, str], reader: MaskReader, max_pixels: int | None) -> tuple[np.ndarray, tuple, tuple]:
    ids = reader.read(pair[1], max_pixels)
    return distinct_values(ids), tuple(ids.shape), _image_hw(pair[0])


def _scan_masks(raw: dict[str, _Split], reader: MaskReader, max_pixels: int | None) -> None:
    """Reads every mask file once: its distinct values (kept per pair) and its size against its image's."""
    mismatched: list[str] = []
    for split in raw.values():
        if split.pairs is None:
            continue
        if len(split.pairs) > 64:  # PIL decodes with the GIL released: threads overlap I/O and zlib
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                scans = list(pool.map(lambda p: _scan_pair(p, reader, max_pixels), split.pairs, chunksize=16))
        else:
            scans = [_scan_pair(p, reader, max_pixels) for p in split.pairs]
        split.values = [v for v, _, _ in scans]
        for (image, mask), (_, mask_hw, image_hw) in zip(split.pairs, scans):
            if mask_hw != image_hw:
                note = " (transposed: an EXIF rotation of the image?)" if mask_hw == image_hw[::-1] else ""
                mismatched.append(
                    f"  {mask!r} is {mask_hw[0]}x{mask_hw[1]}, its image {image!r} {image_hw[0]}x{image_hw[1]}{note}"
                )
    if mismatched:
        more = f"\n  ... and {len(mismatched) - _MAX_LISTED} more" if len(mismatched) > _MAX_LISTED else ""
        raise DataError(
            f"{len(mismatched)} mask(s) differ in size (height x width) from their image:\n"
            + "\n".join(mismatched[:_MAX_LISTED])
            + f"{more}\nA mask must have its image's exact size: re-export those masks (or images) at matching sizes."
        )


def _scan_dataset(split: _Split, reader: MaskReader) -> list[np.ndarray]:
    ds = split.dataset
    out = []
    for j in range(len(ds)):
        image, mask = _unpack_pair(ds[j], j, ds)
        where = f"item {j} of {split.origin}"
        ids = reader.convert(mask, f"The mask of {where}")
        hw = tuple(load_image(image).shape[1:])
        if tuple(ids.shape) != hw:
            raise DataError(
                f"The mask of {where} is {ids.shape[0]}x{ids.shape[1]} (HxW) but its image is {hw[0]}x{hw[1]}; a "
                "mask must have its image's size."
            )
        out.append(distinct_values(ids))
    return out


def _check_enough_classes(train: _Split, names: list[str], ignore_index: int) -> None:
    if train.values is None:  # a Dataset with known classes: its masks are checked as they are read
        return
    present = np.unique(np.concatenate(train.values)) if train.values else np.array([], dtype=np.int64)
    has_ignore = bool((present == ignore_index).any())
    present = present[present != ignore_index]
    if len(names) >= 2 and present.size >= 2:
        return
    found = ", ".join(str(int(v)) for v in present) or "none"
    hint = ""
    if has_ignore:
        hint = (
            f" Pixels of value {ignore_index} are ignore_index: binary masks saved as 0/255 need "
            f"palette={{'background': 0, 'object': {ignore_index}}} (or masks of 0/1)."
        )
    if len(names) < 2:
        raise DataError(
            f"The training masks of {train.origin} hold {len(names)} class(es) (values: {found}); segmentation needs "
            f"at least 2 (e.g. background and object).{hint}"
        )
    raise DataError(
        f"The training masks of {train.origin} hold only class value(s) {found} of the {len(names)} classes; the "
        f"model cannot learn the others. Check the masks.{hint}"
    )


# --- class names ----------------------------------------------------------------------------------------------
def _names_from_mapping(mapping: Mapping[Any, Any], ignore_index: int, where: str) -> list[str]:
    """{id: name} (or {name: id}) -> names by id; ids absent from the map get their number as name."""
    items = list(mapping.items())
    if (
        items
        and all(isinstance(v, int) and not isinstance(v, bool) for _, v in items)
        and not all(str(k).strip().lstrip("+-").isdigit() for k, _ in items)
    ):
        items = [(v, k) for k, v in items]  # {name: id}
    by_id: dict[int, str] = {}
    for key, name in items:
        cid = _class_key(key, where)
        if not isinstance(cid, int) or cid < 0:
            raise DataError(f"{where} maps {key!r} to {name!r}; keys must be class ids 0, 1, ... (or use a list).")
        if cid != ignore_index:  # e.g. {"255": "void"}: the ignored value, not a class
            by_id[cid] = str(name)
    if not by_id:
        raise DataError(f"{where} lists no classes.")
    return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]


def _checked_names(names: list[str], where: str) -> list[str]:
    names = [str(n).strip() for n in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"{where} lists class name(s) {dupes[:_MAX_LISTED]} more than once; class names must be unique."
        )
    if not names:
        raise DataError(f"{where} lists no classes.")
    return names


def _given_classes(classes: Any, ignore_index: int) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        return _checked_names(_names_from_mapping(classes, ignore_index, "classes="), "classes=")
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(f"classes={classes!r} must be a list of class names (or a dict id -> name).")
    return _checked_names(list(classes), "classes=")


def _read_classes_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read class file {str(path)!r} ({e}); save it as UTF-8 text, one name per line."
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if empty:
        raise DataError(
            f"Line {empty[0]} of {str(path)!r} is empty; line i names class i - 1, so every line must name a class."
        )
    return _checked_names(lines, repr(str(path)))


def _read_labels_json(path: Path, ignore_index: int) -> list[str]:
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"Cannot read {str(path)!r} as JSON ({e}); fix the file.") from None
    where = repr(str(path))
    if isinstance(content, Mapping):
        return _checked_names(_names_from_mapping(content, ignore_index, where), where)
    if isinstance(content, list) and all(isinstance(n, (str, int)) for n in content):
        return _checked_names([str(n) for n in content], where)
    raise DataError(f"{where} must hold a list of class names or a dict id -> name, not {type(content).__name__}.")


def _class_file_names(dirs: Sequence[Path], ignore_index: int) -> tuple[list[str] | None, str]:
    for d in dirs:
        found = {}
        if (d / "classes.txt").is_file():
            found["classes.txt"] = _read_classes_txt(d / "classes.txt")
        if (d / "labels.json").is_file():
            found["labels.json"] = _read_labels_json(d / "labels.json", ignore_index)
        if len(found) == 2 and found["classes.txt"] != found["labels.json"]:
            raise DataError(
                f"{str(d)!r} holds both classes.txt {found['classes.txt'][:10]} and labels.json "
                f"{found['labels.json'][:10]}, which disagree; keep one."
            )
        if found:
            name = next(iter(found))
            return found[name], str(d / name)
    return None, ""


def _palette_names(entries: list[tuple[int | str, int]], ignore_index: int) -> list[str] | None:
    """Class names defined by a palette whose keys are all names (their first-seen order gives the ids)."""
    keys = [k for k, _ in entries if k != ignore_index]
    if keys and all(isinstance(k, str) for k in keys):
        return list(dict.fromkeys(keys))
    if any(isinstance(k, str) for k in keys):
        raise ConfigError(
            "palette mixes class ids and class names; use one kind, or pass classes=[...] so names can be resolved."
        )
    return None


# ----------------------------------------------------------------------------------------------------------------
# Joint transforms and batching
# ----------------------------------------------------------------------------------------------------------------
class SegmentationTransform:
    """A joint ``(image, mask) -> (image, mask)`` transform: geometric steps on both (torchvision v2 with
    tv_tensors, so the mask is moved with the image and resized with nearest neighbour), then float conversion
    and normalisation of the image. With `keep_mask_size` the mask is returned as it came in.

    Built by `build_segmentation_transforms`; picklable, so it works in DataLoader workers.
    """

    def __init__(
        self, geometric: Callable | None, mean: Sequence[float], std: Sequence[float], keep_mask_size: bool = False
    ) -> None:
        from torchvision.transforms import v2

        self.geometric = geometric
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
        self.keep_mask_size = keep_mask_size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        img, msk = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.geometric is not None:
            out = self.geometric(img, msk)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ConfigError(
                    f"A segmentation transform must return (image, mask); {type(self.geometric).__name__} returned "
                    f"{type(out).__name__}."
                )
            img, msk = out
        if not isinstance(img, tv_tensors.Image):  # a user callable that returned a plain tensor
            img = tv_tensors.Image(img)
        img = self.normalize(img)
        out_mask = mask if self.keep_mask_size else msk
        return _plain(img), _plain(out_mask).long()

    def __repr__(self) -> str:
        return f"SegmentationTransform(geometric={self.geometric!r}, keep_mask_size={self.keep_mask_size})"


def build_segmentation_transforms(
    data_config: Mapping[str, Any] | None,
    *,
    train: bool,
    size: int | tuple[int, int] | None = None,
    preset: str | Callable = "default",
    keep_mask_size: bool = False,
) -> SegmentationTransform:
    """Builds the joint transform from a uint8 image + int64 mask to a normalised float32 model input + mask.

    Presets (the geometric part; the float conversion and the backbone's normalisation always follow):
        - ``"default"``: resize the whole image and mask to the target size (no crop: nothing of the label is
          cut away; DESIGN.md field notes); training adds a random horizontal flip.
        - ``"crop"``: training uses RandomResizedCrop (scale 0.25-1) + flip, which can cut small objects out of
          the label; evaluation still resizes the whole image (a center crop would drop labelled pixels from the
          metrics).
        - ``"none"``: resize only, also for training (for data where mirroring changes the meaning).
        - a callable ``(Image, Mask) -> (Image, Mask)`` on tv_tensors, e.g. a ``v2.Compose``: used as is for the
          geometric part; it returns uint8 (or float in [0, 1]) images, which are then normalised with the
          backbone's mean/std. Fill padded mask pixels with the ignore index (``fill={tv_tensors.Mask: 255}``).

    Masks are always resized with nearest neighbour (v2 does so for ``tv_tensors.Mask``), so they stay integer
    and `ignore_index` values survive.

    Args:
        data_config: the backbone's data config ``{"input_size": (3, H, W), "mean", "std", "interpolation"}``;
            missing keys fall back to 224 px, ImageNet mean/std and bilinear.
        train: training (random augmentation) or evaluation (deterministic) transform.
        size: overrides the config's input size; an int gives a square, a tuple is ``(height, width)``.
        preset: ``"default"``, ``"crop"``, ``"none"`` or a callable.
        keep_mask_size: evaluation only: the image is resized for the model but the mask keeps its original
            size, so metrics can be computed at the original resolution (batch with `pad_collate`).

    Returns:
        A `SegmentationTransform`: ``(uint8 (3, H, W), int64 (H, W)) -> (float32 (3, h, w), int64 (h, w))``.

    Raises:
        ConfigError: an unknown preset, a bad size, or `keep_mask_size` for training.

    Example:
        >>> cfg = {"input_size": (3, 64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        >>> tf = build_segmentation_transforms(cfg, train=False)
        >>> image, mask = tf(torch.zeros(3, 100, 80, dtype=torch.uint8), torch.zeros(100, 80, dtype=torch.long))
        >>> tuple(image.shape), tuple(mask.shape)
        ((3, 64, 64), (64, 64))
    """
    from torchvision.transforms import v2

    if keep_mask_size and train:
        raise ConfigError("keep_mask_size=True is for evaluation; training needs masks resized with their images.")
    cfg = dict(data_config or {})
    mean = tuple(float(m) for m in cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(float(s) for s in cfg.get("std") or IMAGENET_STD)
    if callable(preset):
        return SegmentationTransform(preset, mean, std, keep_mask_size)
    if preset not in SEGMENTATION_PRESETS:
        raise ConfigError(
            f"Unknown segmentation transform preset {preset!r}; choose one of {SEGMENTATION_PRESETS} or pass a "
            "callable."
        )
    hw = list(_target_size(size if size is not None else cfg.get("input_size")))
    interp = _INTERPOLATIONS.get(str(cfg.get("interpolation") or "bilinear").lower(), v2.InterpolationMode.BILINEAR)
    if train and preset == "crop":
        steps: list[Callable] = [v2.RandomResizedCrop(hw, scale=(0.25, 1.0), interpolation=interp, antialias=True)]
    else:
        steps = [v2.Resize(hw, interpolation=interp, antialias=True)]
    if train and preset in ("default", "crop"):
        steps.append(v2.RandomHorizontalFlip())
    return SegmentationTransform(v2.Compose(steps), mean, std, keep_mask_size)


class PadCollate:
    """Batches ``(image, mask)`` pairs whose sizes may differ: pads images with 0 and masks with `ignore_index`
    (bottom and right) to the largest height and width in the batch.

    Returns ``(images (B, 3, H, W), masks (B, H, W) int64, sizes (B, 2) int64)`` where ``sizes[i]`` is the
    original ``(height, width)`` of mask i. Padded mask pixels are ignored by the loss and the metrics.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = int(ignore_index)

    def __call__(
        self, batch: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = [b[0] for b in batch]
        masks = [torch.as_tensor(b[1]) for b in batch]
        sizes = torch.tensor([tuple(m.shape[-2:]) for m in masks], dtype=torch.long).reshape(-1, 2)
        if len({tuple(i.shape) for i in images}) == 1:
            image_batch = torch.stack(images)
        else:  # images at their own sizes too (e.g. no resize): pad them like the masks
            h = max(i.shape[-2] for i in images)
            w = max(i.shape[-1] for i in images)
            image_batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
            for k, img in enumerate(images):
                image_batch[k, :, : img.shape[-2], : img.shape[-1]] = img
        h, w = (int(v) for v in sizes.max(0).values) if len(masks) else (0, 0)
        mask_batch = torch.full((len(masks), h, w), self.ignore_index, dtype=torch.long)
        for k, m in enumerate(masks):
            mask_batch[k, : m.shape[-2], : m.shape[-1]] = m
        return image_batch, mask_batch, sizes


def pad_collate(ignore_index: int = 255) -> PadCollate:
    """A collate function that pads masks of different sizes with `ignore_index` (see `PadCollate`).

    Example:
        >>> collate = pad_collate(255)
        >>> batch = [(torch.zeros(3, 8, 8), torch.zeros(4, 5)), (torch.zeros(3, 8, 8), torch.zeros(6, 3))]
        >>> x, y, sizes = collate(batch)
        >>> tuple(y.shape), sizes.tolist(), int(y[0, 5, 0])
        ((2, 6, 5), [[4, 5], [6, 3]], 255)
    """
    return PadCollate(ignore_index)


# ----------------------------------------------------------------------------------------------------------------
# Drawing masks
# ----------------------------------------------------------------------------------------------------------------
def default_palette(n: int = 256) -> np.ndarray:
    """`n` distinct colours, ``(n, 3)`` uint8: the PASCAL VOC colour map (0 black, 1 dark red, 2 green, ...,
    255 beige for VOC's ignored pixels).

    Example:
        >>> default_palette(3).tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    ids = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for j in range(8):  # spread the id's bits over the high bits of r, g and b
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << (7 - j)
        c >>= 3
    return out.astype(np.uint8)


def _palette_table(palette: Any, size: int) -> np.ndarray:
    table = default_palette(size)
    if palette is None:
        return table
    if isinstance(palette, Mapping):
        items = [(int(k), v) for k, v in palette.items()]
    else:
        items = list(enumerate(palette.tolist() if isinstance(palette, np.ndarray) else palette))
    for cid, colour in items:
        if 0 <= cid < size and colour is not None:
            table[cid] = np.asarray(colour, dtype=np.int64)[:3].clip(0, 255)
    return table


def colorize(mask: np.ndarray | torch.Tensor, palette: Any = None) -> np.ndarray:
    """Paints a class-id mask: ``(H, W)`` ids -> ``(H, W, 3)`` uint8 RGB.

    Args:
        mask: class ids (non-negative ints), numpy array or tensor.
        palette: colours by class id: a list / ``(K, 3)`` array of ``[r, g, b]``, or a dict ``{id: [r, g, b]}``
            (e.g. ``MaskReader.class_colours(K)`` to paint in the dataset's own colours). Ids it lacks, and every
            id when None, get `default_palette` colours.

    Example:
        >>> colorize(np.array([[0, 1], [2, 255]])).tolist()[0]
        [[0, 0, 0], [128, 0, 0]]
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    arr = _integral(arr, "colorize: mask")
    if arr.ndim != 2:
        raise DataError(f"colorize: expected an (H, W) mask of class ids, got shape {tuple(arr.shape)}.")
    if arr.size and arr.min() < 0:
        raise DataError(f"colorize: mask values must be non-negative class ids, found {int(arr.min())}.")
    table = _palette_table(palette, max(256, int(arr.max(initial=0)) + 1))
    return table[arr]


def overlay(
    image: Any,
    mask: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    *,
    palette: Any = None,
    background: int | None = 0,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blends a coloured mask over its image: ``(H, W, 3)`` uint8.

    Args:
        image: anything `load_image` accepts (path, PIL image, HWC array, CHW tensor), of the mask's size.
        mask: ``(H, W)`` class ids, e.g. a prediction's ``"mask"``.
        alpha: opacity of the mask colours, in [0, 1].
        palette: colours by class id (see `colorize`).
        background: class left untinted (None: tint every class).
        ignore_index: value left untinted (None: tint it too).

    Example:
        >>> overlay(np.zeros((2, 2, 3), np.uint8), np.array([[0, 1], [1, 0]]), alpha=1.0)[0, 1].tolist()
        [128, 0, 0]
    """
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha={alpha!r} must be in [0, 1].")
    img = load_image(image).permute(1, 2, 0).numpy()
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.shape != img.shape[:2]:
        raise DataError(
            f"overlay: the mask is {arr.shape} but the image is {img.shape[:2]} (HxW); resize the mask to the image "
            "(nearest neighbour) first."
        )
    skip = np.zeros(arr.shape, dtype=bool)
    for value in (background, ignore_index):
        if value is not None:
            skip |= arr == value
    colours = colorize(np.where(skip, 0, arr), palette).astype(np.float32)
    blend = img.astype(np.float32) * (1 - alpha) + colours * alpha
    return np.where(skip[..., None], img, blend.round().clip(0, 255).astype(np.uint8))
