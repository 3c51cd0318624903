"""Image files: decoding to uint8 RGB tensors, header and truncation checks, a pixel limit, folder walking.

Every domain reads its images through this module (classification folders and CSVs, segmentation images, COCO
images), so the same checks and the same fast decoding apply everywhere. Masks are read elsewhere: they are class
indices, not colours.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ..errors import DataError

try:  # torchvision.io decodes straight to a uint8 tensor (1.2-1.6x faster than PIL here); PIL stays the fallback
    from torchvision.io import ImageReadMode, decode_image

    _RGB = ImageReadMode.RGB
except ImportError:  # pragma: no cover - torchvision builds without image ops (deprecated since 0.29)
    decode_image = None
    _RGB = None

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "check_files",
    "header_problem",
    "image_size",
    "is_image_name",
    "load_image",
    "read_image_file",
    "walk_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
# PIL's decompression-bomb threshold: a small file can expand to gigabytes of pixels.
MAX_IMAGE_PIXELS = 89_478_485
_TAIL = 1024  # bytes read from each end of a file by the up-front check
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"

# Magic bytes of formats that need no PIL round trip to recognise. True: decoded by torchvision.io. Only JPEG is:
# torchvision 0.29's PNG decoder kills the process (SIGSEGV) on a PNG whose pixel data is corrupt ("libpng error:
# IDAT: incorrect header check"), where PIL raises; PIL decodes PNG only 15-45% slower (measured here, 256 px).
_MAGIC: tuple[tuple[bytes, int, bool], ...] = (
    (b"\xff\xd8\xff", 0, True),  # JPEG
    (b"\x89PNG\r\n\x1a\n", 0, False),  # PNG
    (b"GIF87a", 0, False),
    (b"GIF89a", 0, False),
    (b"WEBP", 8, False),  # RIFF....WEBP
    (b"BM", 0, False),  # BMP
    (b"II*\x00", 0, False),  # TIFF little-endian
    (b"MM\x00*", 0, False),  # TIFF big-endian
)
_PNM = re.compile(rb"P[1-6]\s")


def _torchvision_decodes(head: bytes) -> bool:
    return decode_image is not None and any(head[off : off + len(m)] == m and tv for m, off, tv in _MAGIC)


def _known_magic(head: bytes) -> bool:
    return any(head[off : off + len(m)] == m for m, off, _ in _MAGIC) or bool(_PNM.match(head))


def read_image_file(path: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Decodes one file to uint8 (3, H, W) RGB; torchvision for JPEG, PIL for the rest.

    Images with more than `max_pixels` pixels (PIL's decompression-bomb limit by default; None: no limit) are
    refused before any pixel is decoded.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(
            f"Cannot read image file {path!r}: {e.strerror or e}. Check that it exists and is readable."
        ) from None
    try:
        if max_pixels is not None:
            _check_pixels(raw, path, max_pixels)
        if _torchvision_decodes(raw[:16]):
            img = _tv_decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            if img.ndim == 4:  # animated GIF: first frame
                img = img[0]
            return _as_rgb_uint8(img)
        return _pil_to_tensor(_open_pil(raw))
    except DataError:
        raise
    except Exception as e:  # decoders raise RuntimeError, OSError, ValueError, SyntaxError...
        raise DataError(
            f"Cannot decode image {path!r} ({type(e).__name__}: {e}). The file is corrupt or not an image: "
            "replace or delete it, or pass skip_bad_files=True to leave such files out."
        ) from None


_PIL_LIMIT = threading.Lock()


def pil_open(source: Any):
    """``PIL.Image.open`` (lazy: the header only) without PIL's own decompression-bomb limit, which would override
    ``max_image_pixels`` in both directions; transferkit applies that limit itself before any pixel is decoded."""
    from PIL import Image

    with _PIL_LIMIT:  # PIL reads the limit from a module global: set it only around our own open
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header (PIL parses only the header), or None if unknown."""
    try:
        with pil_open(io.BytesIO(raw)) as img:
            return img.size
    except Exception:  # not parseable here: the decoder will say what is wrong
        return None


def _check_pixels(raw: bytes, path: str, max_pixels: int) -> None:
    size = image_size(raw)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DataError(_too_large(path, size, max_pixels))


def _too_large(path: str, size: tuple[int, int], max_pixels: int) -> str:
    return (
        f"Image {path!r} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, more than max_image_pixels="
        f"{max_pixels:,} (a guard against decompression bombs). Resize it, or raise max_image_pixels if it is real."
    )


def _tv_decode(data: torch.Tensor) -> torch.Tensor:
    try:
        return decode_image(data, mode=_RGB, apply_exif_orientation=True)
    except DeprecationWarning:  # warnings turned into errors (torchvision.io is deprecated since 0.29): mute it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(data, mode=_RGB, apply_exif_orientation=True)


def _open_pil(raw: bytes):
    from PIL import ImageOps

    img = pil_open(io.BytesIO(raw))
    return ImageOps.exif_transpose(img)  # same orientation as torchvision's apply_exif_orientation


def _pil_to_tensor(img) -> torch.Tensor:
    # Every 8-bit PIL mode (L, LA, P, RGBA, CMYK, YCbCr, ...) becomes RGB via convert("RGB"), which drops alpha.
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit integer or float pixels: rescale like arrays
        arr = np.asarray(img)
        if img.mode != "F":
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
            arr = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
        return load_image(arr)
    arr = np.array(img.convert("RGB"))  # a writable copy, so torch.from_numpy does not warn
    return torch.from_numpy(arr).permute(2, 0, 1)


def _as_rgb_uint8(img: torch.Tensor, channels_last: bool = False, where: str = "image") -> torch.Tensor:
    """(C, H, W) / (H, W, C) / (H, W) tensor of any dtype -> uint8 (3, H, W)."""
    if img.ndim == 2:
        img = img.unsqueeze(0)
    elif img.ndim != 3:
        raise DataError(f"{where}: expected an image of shape (C, H, W), (H, W, C) or (H, W), got {tuple(img.shape)}.")
    elif channels_last or (img.shape[0] not in (1, 2, 3, 4) and img.shape[-1] in (1, 2, 3, 4)):
        img = img.permute(2, 0, 1)
    c = img.shape[0]
    if c not in (1, 2, 3, 4):
        raise DataError(f"{where}: expected 1, 3 or 4 channels, got shape {tuple(img.shape)}.")
    img = _to_uint8(img, where)
    if c == 3:
        return img
    if c == 4:
        return img[:3]  # drop alpha, as PIL's convert("RGB") does
    return img[:1].repeat(3, 1, 1)  # grayscale (+ alpha); a copy, so in-place transforms stay safe


def _to_uint8(img: torch.Tensor, where: str) -> torch.Tensor:
    if img.dtype == torch.uint8:
        return img
    if img.dtype == torch.bool:
        return img.to(torch.uint8) * 255
    if img.dtype == torch.uint16:
        return (img.to(torch.int32) >> 8).to(torch.uint8)
    if img.is_floating_point():
        lo, hi = float(img.min()), float(img.max())
        if lo < -0.01:
            raise DataError(
                f"{where}: float image has values down to {lo:.3g}; it looks normalised already. Return "
                "un-normalised images (floats in [0, 1], or uint8): transferkit normalises with the backbone's "
                "mean and std itself."
            )
        scale = 255.0 if hi <= 1.01 else 1.0  # floats in [0, 1], or already on the 0-255 scale
        return (img.float() * scale).round_().clamp_(0, 255).to(torch.uint8)
    lo, hi = int(img.min()), int(img.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{where}: integer image values span [{lo}, {hi}]; expected 0-255 (uint8) or uint16.")
    return img.to(torch.uint8)


def load_image(image: Any, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Turns a path, PIL image, HWC numpy array or CHW tensor into a uint8 ``(3, H, W)`` RGB tensor.

    Grayscale, grayscale+alpha, RGBA and palette images become 3-channel RGB (alpha is dropped). Float images
    must be un-normalised (in [0, 1] or 0-255). Files are decoded with torchvision.io (JPEG) or
    PIL (BMP, TIFF, ...), applying the EXIF orientation.

    Args:
        image: a file path (str or Path), a ``PIL.Image.Image``, a numpy array ``(H, W, C)`` or ``(H, W)``, or a
            tensor ``(C, H, W)`` or ``(H, W)``.

    Returns:
        uint8 tensor of shape ``(3, H, W)``.

    Raises:
        DataError: a missing or undecodable file, or an array of unusable shape, dtype or range.

    Example:
        >>> load_image(np.zeros((32, 48), dtype=np.uint8)).shape
        torch.Size([3, 32, 48])
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise DataError(f"Image file {path!r} does not exist. Check the path.")
        return read_image_file(path, max_pixels)
    if isinstance(image, torch.Tensor):
        return _as_rgb_uint8(image, where="image tensor")
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 2, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # a CHW array: accept it too
        if arr.dtype == np.uint16:  # 16-bit: keep the high byte (torch's uint16 support is limited)
            arr = (arr >> 8).astype(np.uint8)
        return _as_rgb_uint8(torch.from_numpy(np.ascontiguousarray(arr)), channels_last=arr.ndim == 3, where="array")
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image, without importing PIL eagerly
        return _pil_to_tensor(image)
    raise DataError(
        f"Cannot use an image of type {type(image).__name__}; pass a file path, a PIL image, an (H, W, C) numpy "
        "array or a (C, H, W) tensor."
    )


def check_files(paths: Sequence[str], max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[tuple[str, str]]:
    """(path, reason) for every file whose header is not a readable image, that is truncated, or that is too large.

    Example:
        >>> check_files(["data/cat/1.jpg"])  # doctest: +SKIP
        []
    """
    paths = list(dict.fromkeys(paths))  # each file once, even when two splits name the same files
    if len(paths) > 256:  # header reads are I/O bound: threads help on network file systems
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(lambda p: header_problem(p, max_pixels), paths, chunksize=64))
    else:
        reasons = [header_problem(p, max_pixels) for p in paths]
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def bad_files_listing(bad: Sequence[tuple[str, str]], limit: int = 5) -> str:
    """The first `limit` of check_files' (path, reason) pairs, one indented line each, plus "... and N more".

    Example:
        >>> print(bad_files_listing([("a.png", "not a recognised image format")]))
          a.png (not a recognised image format)
    """
    listed = "\n".join(f"  {p} ({why})" for p, why in bad[:limit])
    return listed + (f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else "")


def header_problem(path: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> str | None:
    """None if `path` looks like a whole, decodable image; otherwise why not.

    Reads the header and the last bytes, never the pixels: a PNG must end with its IEND chunk and a JPEG with its
    end-of-image marker (a truncated download or copy lacks them). A JPEG whose tail carries other data (some
    cameras append metadata) is decoded once to decide.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_TAIL)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL))
            tail = f.read(_TAIL)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if not head:
        return "empty file"
    try:  # lazy: PIL parses the header only
        with pil_open(path) as img:
            dims = img.size
    except Exception:
        if not _known_magic(head[:16]):
            return "not a recognised image format"
        return "corrupt header"
    if max_pixels is not None and dims[0] * dims[1] > max_pixels:
        return f"{dims[0]}x{dims[1]} pixels, more than max_image_pixels={max_pixels:,}"
    if head.startswith(_PNG) and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk at the end)"
    if head.startswith(_JPEG) and b"\xff\xd9" not in tail:
        try:
            read_image_file(path, max_pixels=None)
        except DataError:
            return "truncated or corrupt JPEG"
    return None


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def walk_images(folder: str) -> list[str]:
    """Image files under `folder` (recursively, sorted, hidden entries skipped)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_name(f))
    return out
