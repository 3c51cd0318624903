"""Image-classification data: find the images and labels of each split, check them up front, decode them fast.

`resolve_image_data` turns what a user passes as ``data`` (an ImageFolder directory, a directory of split
folders, an ``image,label`` CSV, a dict of splits, or a torch Dataset) into an `ImageData`: the class names and,
per split, an `ImageSource` that builds a Dataset once the task knows its transforms. Every image yields a uint8
``(3, H, W)`` RGB tensor, which is what `transferkit.data.transforms.build_transforms` expects.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset

from ..errors import DataError
from .imageio import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    bad_files_listing,
    check_files,
    is_image_name,
    load_image,
    read_image_file,
    walk_images,
)
from .labels import sort_label_names
from .splits import normalise_splits, split_folders, stratified_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImageFileDataset",
    "ImageSource",
    "UserImageDataset",
    "load_image",
    "resolve_image_data",
]

_MAX_LISTED = 5  # bad files / missing rows named in one error message


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageSource:
    """Where one split's items come from, before transforms: image files, or a user's Dataset.

    Attributes:
        targets: class id of each item (index into `ImageData.labels`), in item order.
        paths: image file paths (file sources), else None.
        dataset: the user's Dataset (dataset sources), else None.
        indices: for dataset sources, the items of `dataset` that belong to this split (None: all).
        origin: where the split came from, for messages (a folder, a CSV, or a Dataset's type name).
        label_map: for dataset sources, maps the Dataset's raw labels to class ids.
    """

    targets: list[int] = field(repr=False)
    paths: list[str] | None = field(default=None, repr=False)
    dataset: Any = field(default=None, repr=False)
    indices: list[int] | None = field(default=None, repr=False)
    origin: str = ""
    label_map: Callable[[Any], int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        kind = "files" if self.paths is not None else "dataset"
        return f"ImageSource({kind}, n={len(self)}, origin={self.origin!r})"

    def build(
        self, transform: Callable | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS, skip_bad: bool = False
    ) -> Dataset:
        """A Dataset of ``(transform(image), class_id)`` pairs; the image is a uint8 ``(3, H, W)`` RGB tensor.

        With `skip_bad`, an image file that fails to decode yields None (with a warning naming it) instead of
        raising; the task's collate function leaves such items out of the batch.

        Example:
            >>> ds = data.train.build(build_transforms(cfg, train=True))  # doctest: +SKIP
        """
        if self.paths is not None:
            return ImageFileDataset(self.paths, self.targets, transform, max_pixels=max_pixels, skip_bad=skip_bad)
        return UserImageDataset(self.dataset, self.label_map, indices=self.indices, transform=transform)

    def _take(self, idx: list[int]) -> ImageSource:
        """The items at positions `idx` of this source (used to carve validation out of train)."""
        targets = [self.targets[i] for i in idx]
        if self.paths is not None:
            return ImageSource(targets, paths=[self.paths[i] for i in idx], origin=self.origin)
        base = self.indices if self.indices is not None else range(len(self.targets))
        indices = [base[i] for i in idx]
        return ImageSource(
            targets, dataset=self.dataset, indices=indices, origin=self.origin, label_map=self.label_map
        )


@dataclass(frozen=True)
class ImageData:
    """The resolved splits of an image-classification run.

    Attributes:
        labels: class names; a class id is an index into this list. Sorted (numerically when every name is an
            integer), except that a Dataset's own ``classes`` order is kept.
        train, val: sources of the training and validation splits (val is carved out of train when not given).
        test: source of the test split, or None.
        val_from_train: True when `val` was carved out of the training data.

    Example:
        >>> data = resolve_image_data("data/pets")  # doctest: +SKIP
        >>> {name: len(src) for name, src in data.splits.items()}
        {'train': 180, 'val': 20}
    """

    labels: list[str]
    train: ImageSource
    val: ImageSource
    test: ImageSource | None = None
    val_from_train: bool = False
    label_type: str = "str"  # "int" when the user's labels were ints (a Dataset without class names)

    @property
    def splits(self) -> dict[str, ImageSource]:
        """The present splits by name, e.g. ``{"train": ..., "val": ...}``."""
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------
class ImageFileDataset(Dataset):
    """Image files with integer targets; yields ``(transform(image), target)`` with image a uint8 (3, H, W) tensor.

    JPEG is decoded by torchvision.io straight to RGB; other formats through PIL (see imageio).

    Args:
        paths: image file paths.
        targets: class id of each path.
        transform: applied to the uint8 tensor (e.g. from `build_transforms`); None returns the tensor as is.

    Example:
        >>> ds = ImageFileDataset(["cat.jpg", "dog.png"], [0, 1], transform=None)  # doctest: +SKIP
        >>> image, target = ds[0]  # uint8 tensor (3, H, W), 0
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        targets: Sequence[int],
        transform: Callable | None = None,
        *,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_bad: bool = False,
    ):
        if len(paths) != len(targets):
            raise DataError(f"ImageFileDataset got {len(paths)} paths but {len(targets)} targets; pass one per path.")
        self.paths = [os.fspath(p) for p in paths]
        self.targets = [int(t) for t in targets]
        self.transform = transform
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # files that failed to decode (this process; workers keep their own)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
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
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class _LabelMap:
    """Maps a Dataset's raw label (int, str, 0-d tensor, numpy scalar) to a class id of `labels`."""

    def __init__(self, labels: Sequence[str], classes: Sequence[Any] | None, origin: str, fixed: bool = False):
        self.ids = {name: i for i, name in enumerate(labels)}
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.origin = origin
        self.fixed = fixed

    def name(self, raw: Any) -> str:
        raw = _plain_label(raw, self.origin)
        if isinstance(raw, str):
            return raw
        if self.classes is not None and 0 <= raw < len(self.classes):
            return self.classes[raw]
        return str(raw)

    def __call__(self, raw: Any) -> int:
        name = self.name(raw)
        try:
            return self.ids[name]
        except KeyError:
            raise DataError(_unknown_label_message(name, self.origin, list(self.ids), self.fixed)) from None


class UserImageDataset(Dataset):
    """Wraps a user's map-style Dataset of ``(image, label)`` pairs for training.

    Images may be PIL images, (H, W, C) numpy arrays, (C, H, W) uint8 or float tensors, or file paths; each
    becomes a uint8 (3, H, W) RGB tensor before `transform`. Labels (int or str) become class ids via
    `label_map` (built by `resolve_image_data`).

    Args:
        dataset: the user's Dataset.
        label_map: callable mapping a raw label to a class id.
        indices: the items of `dataset` to use (None: all of them).
        transform: applied to the uint8 tensor.

    Example:
        >>> data = resolve_image_data(my_dataset)  # doctest: +SKIP
        >>> ds = data.train.build(transform)  # a UserImageDataset over the training indices
    """

    def __init__(
        self,
        dataset: Any,
        label_map: Callable[[Any], int],
        *,
        indices: Sequence[int] | None = None,
        transform: Callable | None = None,
    ):
        self.dataset = dataset
        self.label_map = label_map
        self.indices = list(indices) if indices is not None else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        j = self.indices[index] if self.indices is not None else index
        image, label = _unpack(self.dataset[j], j, self.dataset)
        image = load_image(image)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.label_map(label)


def _unpack(item: Any, j: int, dataset: Any) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(
        f"Item {j} of {type(dataset).__name__} is a {type(item).__name__}; image classification needs each item "
        "to be an (image, label) pair."
    )


def _plain_label(raw: Any, origin: str) -> int | str:
    if isinstance(raw, (torch.Tensor, np.ndarray, np.generic)):
        size = raw.numel() if isinstance(raw, torch.Tensor) else raw.size
        if size != 1:
            raise DataError(
                f"A label in {origin} is an array of shape {tuple(raw.shape)}; labels must be single ints or strings "
                "(class ids, not one-hot vectors)."
            )
        raw = raw.item()
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    raise DataError(f"Label {raw!r} in {origin} is a {type(raw).__name__}; labels must be ints or strings.")


# ----------------------------------------------------------------------------------------------------------------
# Resolving user data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Split:
    """One split as read, before class ids exist: label names plus files or a dataset."""

    names: list[str]
    origin: str
    paths: list[str] | None = None
    dataset: Any = None
    raw_labels: list[int | str] | None = None  # a Dataset's labels as given
    classes: list[str] | None = None  # a Dataset's own class names (their order defines its int labels)
    class_dirs: dict[str, str] = field(default_factory=dict)  # class name -> folder, for messages


def resolve_image_data(
    data: Any,
    *,
    val_fraction: float = 0.1,
    seed: int = 42,
    skip_bad_files: bool = False,
    labels: Sequence[str] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> ImageData:
    """Finds the images, labels and splits in `data` and checks them before any training starts.

    Accepted `data`:
        - a folder in ImageFolder layout: ``root/<class>/<image>`` (class folders may nest subfolders);
        - a folder of split folders ``train/``, ``val/`` (or ``valid/``, ``validation/``) and ``test/``, each
          in ImageFolder layout (recognised by a ``train`` folder);
        - a CSV file with ``image`` and ``label`` columns, image paths relative to the CSV's folder;
        - a dict mapping ``"train"``, ``"val"`` (``"valid"``, ``"validation"``), ``"test"`` to any of the above
          or to a Dataset;
        - a map-style torch Dataset of ``(image, label)`` pairs (image: PIL, HWC ndarray, CHW tensor or path;
          label: int or str). Class names come from ``dataset.classes`` if present, else the sorted distinct
          labels; labels are read from ``targets``/``labels``/``samples`` when the dataset has them, so its
          images are not decoded just to find the classes. A torchvision ``ImageFolder`` without transforms is
          read as its files (torchvision.io decoding, header checks).

    Class names come from the training split (or from `labels`); a val/test label that training lacks is an
    error. Without a val
    split, `val_fraction` of each class (at least 1 image of each class with 2 or more) is carved out of train
    with a seeded, stratified draw. Every image file's header is checked up front (magic bytes, PIL for rarer
    formats), so a corrupt or non-image file fails now rather than mid-epoch.

    Args:
        data: the data, as above.
        val_fraction: share of each training class used for validation when no val split is given.
        seed: seed of that draw.
        skip_bad_files: drop files whose header is unreadable (one warning with the count) instead of raising.
        labels: fixed class names (e.g. a trained model's, to evaluate it on new data): class ids index this
            list, every split's labels must be among them, and the training split may hold fewer classes.
        max_pixels: images with more pixels are reported as bad (a guard against decompression bombs).

    Returns:
        An `ImageData` with ``labels`` and the ``train``, ``val`` and (optional) ``test`` sources.

    Raises:
        DataError: missing paths, no images, an empty class folder, fewer than 2 classes, bad CSV columns or
            rows, labels missing from train, or unreadable image files.

    Example:
        >>> data = resolve_image_data("data/pets", val_fraction=0.2)  # doctest: +SKIP
        >>> data.labels, len(data.train), len(data.val)
        (['cat', 'dog'], 160, 40)
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction!r} is invalid; pass a fraction in (0, 1), e.g. 0.1.")
    specs = _split_specs(data)
    raw = {name: _read_split(spec, name) for name, spec in specs.items()}
    _check_image_files(raw, skip_bad_files, max_pixels)

    train = raw["train"]
    fixed = labels is not None
    if fixed:
        labels = [str(n) for n in labels]
        present = set(labels)
    else:
        labels = train.classes if train.classes is not None else sort_label_names(set(train.names))
        present = set(train.names)
    if len(present) < 2:
        found = ", ".join(repr(n) for n in sorted(present)) or "none"
        if fixed:
            raise DataError(f"labels={labels!r} names {len(present)} class(es); classification needs at least 2.")
        raise DataError(
            f"Training data {train.origin} has {len(present)} class(es) ({found}); classification needs at least 2. "
            "Add a folder (or CSV rows) for each class."
        )
    sources = {name: _to_source(split, labels, name, fixed) for name, split in raw.items()}

    val_from_train = "val" not in sources
    if val_from_train:
        tr_idx, val_idx = stratified_split(sources["train"].targets, val_fraction, seed)
        if not val_idx:
            raise DataError(
                f"Cannot carve a validation split out of {train.origin}: no class has 2 or more images. Add images, "
                "or pass a val split, e.g. data={'train': ..., 'val': ...}."
            )
        sources["val"] = sources["train"]._take(val_idx)
        sources["train"] = sources["train"]._take(tr_idx)
    return ImageData(
        labels=list(labels),
        train=sources["train"],
        val=sources["val"],
        test=sources.get("test"),
        val_from_train=val_from_train,
        label_type=_label_type(train, fixed),
    )


def read_labelled_images(
    data: Any,
    labels: Sequence[str],
    *,
    role: str = "evaluation",
    skip_bad_files: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> ImageSource:
    """One labelled image set (a class-subfolder folder, a CSV or a Dataset) read against a trained model's
    class names `labels`, e.g. to evaluate it on new data. Messages call it the `role` data, not a split.

    Example:
        >>> source = read_labelled_images("data/pets_test", ["cat", "dog"])  # doctest: +SKIP
        >>> len(source), source.targets[:3]  # doctest: +SKIP
        (40, [0, 0, 1])
    """
    raw = {role: _read_split(data, role)}
    _check_image_files(raw, skip_bad_files, max_pixels)
    return _to_source(raw[role], [str(n) for n in labels], role, fixed=True)


def _check_image_files(raw: Mapping[str, _Split], skip_bad_files: bool, max_pixels: int | None) -> None:
    """Raises on unreadable image files, or drops them (one warning) with `skip_bad_files`."""
    bad = check_files([p for split in raw.values() if split.paths is not None for p in split.paths], max_pixels)
    if not bad:
        return
    if not skip_bad_files:
        raise DataError(
            f"{len(bad)} image file(s) are corrupt or not images:\n{bad_files_listing(bad, _MAX_LISTED)}\n"
            "Delete or replace them, or pass skip_bad_files=True to leave them out."
        )
    _drop_files(raw, {p for p, _ in bad})
    warnings.warn(
        f"Skipped {len(bad)} unreadable image file(s) (skip_bad_files=True), e.g. {bad[0][0]!r}.",
        UserWarning,
        stacklevel=3,
    )


def _label_type(train: _Split, fixed: bool) -> str:
    """Ints come back as ints: a Dataset whose labels are ints and which names no classes of its own."""
    from .labels import is_int_label

    raw = train.raw_labels
    if fixed or train.classes is not None or not raw:
        return "str"
    return "int" if all(is_int_label(v) for v in raw) else "str"


def _split_specs(data: Any) -> dict[str, Any]:
    """Normalises `data` to {"train": spec, ["val": spec], ["test": spec]}."""
    if isinstance(data, Mapping):
        return normalise_splits(data)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            split_dirs = split_folders(path, inside="class subfolders")
            return split_dirs if split_dirs else {"train": path}
        if path.is_file():
            return {"train": path}
        raise DataError(f"Data path {str(path)!r} does not exist. Pass an existing image folder or CSV file.")
    return {"train": data}


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"Cannot read folder {str(path)!r}: {e.strerror or e}.") from None


def _read_split(spec: Any, split: str) -> _Split:
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return _read_folder(path, split)
        if path.is_file():
            if path.suffix.lower() in (".csv", ".tsv", ".txt"):
                return _read_csv(path, split)
            raise DataError(
                f"{split} data {str(path)!r} is a file but not a CSV; pass an image folder (class subfolders) or a "
                "CSV file with image,label columns."
            )
        raise DataError(f"{split} data path {str(path)!r} does not exist. Pass an existing image folder or CSV file.")
    if isinstance(spec, IterableDataset):
        raise DataError(
            f"{split} data is an IterableDataset ({type(spec).__name__}); pass a map-style Dataset with __len__ and "
            "__getitem__ returning (image, label)."
        )
    if _is_plain_image_folder(spec):  # torchvision ImageFolder without transforms: read its files ourselves (faster)
        return _Split(
            names=[str(spec.classes[t]) for _, t in spec.samples],
            origin=f"{split} ImageFolder {spec.root!r}",
            paths=[os.path.abspath(p) for p, _ in spec.samples],
            classes=[str(c) for c in spec.classes],
        )
    if hasattr(spec, "__getitem__") and hasattr(spec, "__len__") and not isinstance(spec, (bytes, Mapping)):
        return _read_dataset(spec, split)
    raise DataError(
        f"Cannot use {type(spec).__name__} as {split} data; pass an image folder, a CSV file, a dict of splits, "
        "or a torch Dataset of (image, label) pairs."
    )


def _is_plain_image_folder(ds: Any) -> bool:
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import default_loader

    return (
        type(ds) is ImageFolder
        and ds.transform is None
        and ds.target_transform is None
        and ds.loader is default_loader
        and len(ds.samples) > 0
    )


def _read_folder(root: Path, split: str) -> _Split:
    root_s = os.path.abspath(root)
    entries = _list_dir(root)
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and is_image_name(e.name)]
    exts = " ".join(IMAGE_EXTENSIONS)
    if not class_dirs:
        if loose:
            raise DataError(
                f"Folder {root_s!r} holds {len(loose)} image{'s' if len(loose) != 1 else ''} but no class subfolders. "
                f"Put each class's images in its own subfolder: {root_s}/<class name>/<image>."
            )
        raise DataError(
            f"Folder {root_s!r} holds no images. Expected class subfolders with image files ({exts}), e.g. "
            f"{root_s}/cat/001.jpg."
        )
    names: list[str] = []
    paths: list[str] = []
    empty: list[str] = []
    where: dict[str, str] = {}
    for d in class_dirs:
        files = walk_images(os.path.join(root_s, d.name))
        where[d.name] = os.path.join(root_s, d.name)
        if not files:
            empty.append(d.name)
        paths.extend(files)
        names.extend([d.name] * len(files))
    if not paths:
        raise DataError(
            f"Folder {root_s!r} has class subfolders ({', '.join(sorted(where)[:_MAX_LISTED])}) but no images in "
            f"them. Accepted extensions: {exts}."
        )
    if empty:
        listed = ", ".join(repr(where[n]) for n in empty[:_MAX_LISTED])
        raise DataError(
            f"Class folder(s) with no images in {split} data: {listed}. Add images ({exts}) or remove the folder(s)."
        )
    return _Split(names=names, origin=f"folder {root_s!r}", paths=paths, class_dirs=where)


def _read_csv(path: Path, split: str) -> _Split:
    csv_s = os.path.abspath(path)
    base = os.path.dirname(csv_s)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(csv_s, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(
                    f"CSV file {csv_s!r} is empty; it needs a header row 'image,label' and one row per image."
                )
            cols = [h.strip().lower() for h in header]
            missing = [c for c in ("image", "label") if c not in cols]
            if missing:
                raise DataError(
                    f"CSV file {csv_s!r} has no {' or '.join(repr(m) for m in missing)} column; found columns "
                    f"{[h.strip() for h in header]}. Name the header row 'image,label' (image paths relative to the "
                    "CSV's folder)."
                )
            i_img, i_lab = cols.index("image"), cols.index("label")
            rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file {csv_s!r} is not UTF-8 text ({e.reason}); save it as UTF-8.") from None
    if not rows:
        raise DataError(f"CSV file {csv_s!r} has a header but no rows; add one 'image,label' row per image.")
    names: list[str] = []
    paths: list[str] = []
    missing_files: list[tuple[int, str]] = []
    for line, r in rows:
        if len(r) <= max(i_img, i_lab) or not r[i_img].strip() or not r[i_lab].strip():
            raise DataError(f"Line {line} of CSV file {csv_s!r} has an empty image or label cell: {r}. Fill it in.")
        p = os.path.join(base, r[i_img].strip())
        if not os.path.isfile(p):
            missing_files.append((line, p))
            continue
        paths.append(p)
        names.append(r[i_lab].strip())
    if missing_files:
        line, p = missing_files[0]
        more = f" ({len(missing_files)} rows name missing files in all)" if len(missing_files) > 1 else ""
        raise DataError(
            f"Line {line} of CSV file {csv_s!r} names image {p!r}, which does not exist{more}. Image paths are "
            "relative to the CSV's folder; fix the paths or remove those rows."
        )
    return _Split(names=names, origin=f"CSV {csv_s!r}", paths=paths)


def _read_dataset(ds: Any, split: str) -> _Split:
    origin = f"{split} Dataset {type(ds).__name__}"
    if len(ds) == 0:
        raise DataError(f"{origin} is empty; it needs (image, label) items.")
    classes = _dataset_classes(ds)
    mapper = _LabelMap([], classes, origin)
    raw = _dataset_targets(ds)
    if raw is None:  # no label attribute: read the items (this decodes every image once)
        raw = [_unpack(ds[i], i, ds)[1] for i in range(len(ds))]
    raw = [_plain_label(t, origin) for t in raw]
    return _Split(
        names=[mapper.name(t) for t in raw], origin=origin, dataset=ds, classes=mapper.classes, raw_labels=raw
    )


def _dataset_classes(ds: Any) -> list[str] | None:
    classes = getattr(ds, "classes", None)
    if classes is None and isinstance(ds, Subset):
        return _dataset_classes(ds.dataset)
    if classes is None or isinstance(classes, (str, Mapping)):
        return None
    return [str(c) for c in classes]


def _dataset_targets(ds: Any) -> list | None:
    """Labels from attributes (torchvision datasets keep them in `targets`, `_labels` or `samples`)."""
    if isinstance(ds, Subset):
        base = _dataset_targets(ds.dataset)
        return None if base is None else [base[i] for i in ds.indices]
    n = len(ds)
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is None or callable(value) or isinstance(value, (str, Mapping)):
            continue
        values = value.tolist() if hasattr(value, "tolist") else list(value)
        if len(values) == n:
            return values
    samples = getattr(ds, "samples", None)
    if isinstance(samples, Sequence) and len(samples) == n and n and isinstance(samples[0], (tuple, list)):
        return [s[1] for s in samples]
    return None


def _unknown_label_message(name: str, origin: str, labels: list[str], fixed: bool = False) -> str:
    shown = labels if len(labels) <= 20 else labels[:20] + ["..."]
    if fixed:
        return (
            f"Label {name!r} in {origin} is not one of the known classes {shown} (the ones the model was trained "
            "on); remove those items."
        )
    return (
        f"Label {name!r} in {origin} is not a training class; the training split has {shown}. Add training "
        "images of that class or remove it from this split."
    )


def _where(name: str, split: _Split) -> str:
    kind = "split" if name in ("train", "val", "test") else "data"
    return f"the {name} {kind} ({split.origin})"


def _to_source(split: _Split, labels: list[str], name: str, fixed: bool) -> ImageSource:
    ids = {n: i for i, n in enumerate(labels)}
    if (
        (name != "train" or fixed)
        and split.classes is None
        and split.raw_labels is not None
        and all(isinstance(t, int) for t in split.raw_labels)
        and not all(n in ids for n in split.names)
    ):  # int labels of a val/test Dataset without `classes` whose names don't match: read them as class ids
        split.classes = list(labels)
        split.names = [labels[t] if 0 <= t < len(labels) else str(t) for t in split.raw_labels]
    unknown = [n for n in dict.fromkeys(split.names) if n not in ids]
    if unknown:
        msg = _unknown_label_message(unknown[0], _where(name, split), labels, fixed)
        if len(unknown) > 1:
            msg += f" Other unknown labels: {unknown[1 : 1 + _MAX_LISTED]}."
        if split.dataset is not None and split.classes is None and unknown[0].lstrip("+-").isdigit():
            msg += " (Integer labels of a Dataset without a `classes` attribute are read as the names '0', '1', ...)"
        raise DataError(msg)
    targets = [ids[n] for n in split.names]
    if split.paths is not None:
        return ImageSource(targets, paths=split.paths, origin=split.origin)
    label_map = _LabelMap(labels, split.classes, _where(name, split), fixed)
    return ImageSource(targets, dataset=split.dataset, origin=split.origin, label_map=label_map)


def _drop_files(raw: Mapping[str, _Split], bad: set[str]) -> None:
    for split in raw.values():
        if split.paths is None:
            continue
        keep = [i for i, p in enumerate(split.paths) if p not in bad]
        if len(keep) == len(split.paths):
            continue
        before = Counter(split.names)
        split.paths = [split.paths[i] for i in keep]
        split.names = [split.names[i] for i in keep]
        lost = sorted(set(before) - set(split.names))
        if lost:
            where = ", ".join(repr(split.class_dirs.get(n, n)) for n in lost[:_MAX_LISTED])
            raise DataError(
                f"Every image of class(es) {lost[:_MAX_LISTED]} in {split.origin} is unreadable ({where}); "
                "add readable images of those classes."
            )
