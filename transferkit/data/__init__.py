"""Data readers and transforms: image-classification folders/CSVs/Datasets, splits, and image transforms.

Names are re-exported lazily, so importing one reader (e.g. the text ones) does not import torchvision.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "IMAGE_EXTENSIONS": "images",
    "ImageData": "images",
    "ImageFileDataset": "images",
    "ImageSource": "images",
    "UserImageDataset": "images",
    "load_image": "images",
    "resolve_image_data": "images",
    "stratified_split": "splits",
    "PRESETS": "transforms",
    "build_transforms": "transforms",
}
__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "ImageData",
    "ImageFileDataset",
    "ImageSource",
    "UserImageDataset",
    "build_transforms",
    "load_image",
    "resolve_image_data",
    "stratified_split",
]

if TYPE_CHECKING:
    from .images import (
        IMAGE_EXTENSIONS,
        ImageData,
        ImageFileDataset,
        ImageSource,
        UserImageDataset,
        load_image,
        resolve_image_data,
    )
    from .splits import stratified_split
    from .transforms import PRESETS, build_transforms


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
