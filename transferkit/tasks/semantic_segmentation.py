"""Semantic segmentation: image/mask pairs -> a fine-tuned encoder-decoder that labels every pixel.

Data (see :func:`transferkit.data.masks.resolve_segmentation_data`): a folder with ``images/`` and ``masks/`` (files
paired by name), a folder of split folders, a dict of splits, or a Dataset of ``(image, mask)`` pairs; class names
from ``classes=``, ``classes.txt`` / ``labels.json`` or the masks; colour masks through ``palette=``. Every problem
a user can cause is reported before training starts.

The model (:mod:`transferkit.models.segmentation`) is a backbone's multi-scale view (``timm:``, ``tv:`` or
``smp:``; the pretrained part) + a segmentation head (smp's architectures; new). Training images and masks are
resized to the model's input size (plus a horizontal flip); evaluation and ``predict`` run the model at that size
and upsample the logits to each image's original size before the argmax, so metrics count the original pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import FinetuneConfig
from ..data.imageio import MAX_IMAGE_PIXELS
from ..errors import ConfigError
from ..registry import TASKS
from .base import Metrics, Splits, Task, fingerprint

LOSSES = ("ce", "dice", "ce+dice")


@dataclass(frozen=True)
class SemanticSegmentationOptions:
    """Options of the semantic-segmentation task (pass them to ``tk.finetune`` as keywords).

    Attributes:
        image_size: model input size (int or (H, W)); None: the backbone's own (e.g. 224). Any size works (the model
            pads to its architecture's stride); evaluation and predict still score and return masks at each
            image's original size.
        ignore_index: mask value of pixels that take no part in the loss or the metrics (padding, 'void').
        classes: class names (a list, or a dict id -> name); None: classes.txt / labels.json / the masks' values.
        palette: colour map for colour (RGB) masks, {class name or id: [r, g, b]}; also maps grey levels of
            single-channel masks (e.g. {"background": 0, "object": 255} for 0/255 masks).
        loss: "ce" (cross-entropy), "dice" (smp's multiclass Dice loss) or "ce+dice" (their sum; both logged).
        class_weights: per-class weights of the cross-entropy term (a list of K numbers, or {class name: weight}
            with 1.0 for classes left out); None: unweighted.
        train_transforms: "default" (resize + horizontal flip), "crop" (RandomResizedCrop + flip; can cut small
            objects out of the label), "none" (resize only), or a callable on (tv_tensors.Image, tv_tensors.Mask).
        skip_bad_files: leave out image/mask pairs whose files are unreadable (one warning) instead of failing.
        max_image_pixels: images and masks with more pixels are refused (decompression-bomb guard); None: no limit.
    """

    image_size: Any = None
    ignore_index: int = 255
    classes: Any = None
    palette: Any = None
    loss: str = "ce"
    class_weights: Any = None
    train_transforms: Any = "default"
    skip_bad_files: bool = False
    max_image_pixels: int | None = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} is invalid; expected one of {', '.join(LOSSES)}.")
        if self.ignore_index < 0:
            raise ConfigError(f"ignore_index={self.ignore_index!r} must be a non-negative int (e.g. 255).")
        cw = self.class_weights
        if cw is not None and not isinstance(cw, (list, tuple, dict)):
            raise ConfigError(
                f"class_weights={cw!r} must be a list of one weight per class or a dict {{class name: weight}}."
            )


@TASKS.register("semantic-segmentation", domain="image")
class SemanticSegmentationTask(Task):
    """Labels every pixel. Metrics: mIoU (monitor), per-class IoU, Dice, pixel accuracy; ``val/loss`` is the mean
    over images of each image's cross-entropy over its counted pixels."""

    name = "semantic-segmentation"
    Options = SemanticSegmentationOptions
    # batch 8: a small segmentation set (80 images) then gives 10 optimizer steps an epoch instead of 3 at the
    # engine's 32, and the decoder's BatchNorm still sees 8 images. head_lr_mult stays 1 (encoder and decoder at
    # lr): benchmarks/segmentation.py, Unet on an ImageNet tv:mobilenet_v2, 8 epochs, lr=1e-3: test mIoU 0.48 with
    # the decoder at lr, 0.29 with it at 10 x lr (0.28 from random init).
    defaults = {"batch_size": 8}
    monitor = "val/miou"
    monitor_mode = "max"
    default_head = "unet"
    batchnorm = "eval-when-frozen"
    modality = "image"
    channels_last_auto = True
    writes_artifacts = False

    def __init__(self, config: FinetuneConfig, options: SemanticSegmentationOptions | None = None) -> None:
        super().__init__(config, options)
        self.data_config: dict[str, Any] | None = None  # the backbone's, with image_size applied
        self.reader = None  # the MaskReader of the data (colour map, ignore_index)
        self._weights: torch.Tensor | None = None
        self._dice = None

    # --- phase 1: data ------------------------------------------------------------------------------------
    def read_data(self, data: Any):
        from ..data.masks import resolve_segmentation_data

        opts = self.options
        resolved = resolve_segmentation_data(
            data,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            classes=opts.classes,
            palette=opts.palette,
            ignore_index=opts.ignore_index,
            skip_bad_files=opts.skip_bad_files,
            max_pixels=opts.max_image_pixels,
        )
        self.labels = list(resolved.classes)
        self.reader = resolved.reader
        self._weights = class_weight_tensor(opts.class_weights, self.labels)
        return resolved

    def data_fingerprint(self, raw: Any) -> str:
        train = raw.train
        items = train.pairs if train.pairs is not None else [len(train), type(train.dataset).__name__]
        return fingerprint(self.labels, raw.ignore_index, items, self.reader.state() if self.reader else None)

    # --- phase 2: model -----------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        from ..models import create_model
        from .image_classification import resolved_data_config

        cfg = self.config
        model = create_model(
            cfg.backbone,
            len(self.labels),
            kind="segmenter",
            task=self.name,
            head=cfg.head,
            pretrained=cfg.pretrained,
            head_kwargs=dict(cfg.head_kwargs),
            default_head=self.default_head,
        )
        if self.data_config is None:
            self.data_config = resolved_data_config(getattr(model, "data_config", {}), self.options.image_size)
        _, h, w = self.data_config["input_size"]
        check_logits(model, len(self.labels), (int(h), int(w)))
        return model

    # --- phase 3: datasets ----------------------------------------------------------------------------------
    def build_datasets(self, raw: Any) -> Splits:
        max_pixels = self.options.max_image_pixels
        built = {
            name: src.build(self.transform(train=name == "train"), max_pixels=max_pixels)
            for name, src in raw.splits.items()
        }
        return Splits(built["train"], built.get("val"), built.get("test"), self.labels)

    def eval_dataset(self, data: Any):
        from ..data.masks import read_labelled_masks
        from ..data.splits import split_folders

        if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
            folders = split_folders(data, inside="images/ and masks/")
            if folders:  # train/ val/ test/: evaluate on the test split (else val)
                data = folders.get("test") or folders.get("val") or folders["train"]
        source = read_labelled_masks(
            data,
            self.labels,
            palette=self._palette(),
            ignore_index=self.options.ignore_index,
            skip_bad_files=self.options.skip_bad_files,
            max_pixels=self.options.max_image_pixels,
        )
        return source.build(self.transform(train=False), max_pixels=self.options.max_image_pixels)

    def transform(self, train: bool) -> Callable:
        from ..data.masks import build_segmentation_transforms

        preset = self.options.train_transforms if train else "default"
        # evaluation keeps each mask at its original size: metrics count the original pixels
        return build_segmentation_transforms(self.data_config, train=train, preset=preset, keep_mask_size=not train)

    def collate_fn(self, split: str) -> Callable | None:
        from ..data.masks import pad_collate

        return pad_collate(self.options.ignore_index)

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        images, masks, _ = batch
        logits = model(images)
        if logits.shape[-2:] != masks.shape[-2:]:  # a custom transform that returns masks at another size
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss = self.options.loss
        if loss == "ce":
            return self.cross_entropy(logits, masks)
        if loss == "dice":
            return self.dice(logits, masks)
        return {"ce": self.cross_entropy(logits, masks), "dice": self.dice(logits, masks)}

    def cross_entropy(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the counted pixels (0 when a batch has none, instead of NaN)."""
        ignore = self.options.ignore_index
        weight = None if self._weights is None else self._weights.to(logits.device)
        total = F.cross_entropy(logits.float(), masks, weight=weight, ignore_index=ignore, reduction="sum")
        counted = masks != ignore
        # torch's "mean": the sum of the counted pixels' weights (their number when unweighted)
        denom = counted.sum().float() if weight is None else (weight[masks.where(counted, 0)] * counted).sum()
        return total / denom.clamp(min=1e-12)

    def dice(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self._dice is None:
            from segmentation_models_pytorch.losses import DiceLoss

            self._dice = DiceLoss("multiclass", ignore_index=self.options.ignore_index, from_logits=True)
        return self._dice(logits.float(), masks)

    def eval_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        images, masks, sizes = batch
        logits = model(images).float()
        ignore = self.options.ignore_index
        preds = torch.zeros_like(masks)
        losses = logits.new_zeros(images.shape[0])
        for i, (h, w) in enumerate(sizes.tolist()):
            # at the image's original size: the metrics count original pixels, not resized ones
            scores = _resize(logits[i : i + 1], (h, w))
            target = masks[i : i + 1, :h, :w]
            preds[i, :h, :w] = scores.argmax(1)[0]
            total = F.cross_entropy(scores, target, ignore_index=ignore, reduction="sum")
            losses[i] = total / (target != ignore).sum().clamp(min=1)
        return losses, (preds, masks)

    def new_metrics(self, split: str = "val") -> Metrics:
        from ..metrics.segmentation import SegmentationMetrics

        return SegmentationMetrics(len(self.labels), ignore_index=self.options.ignore_index, class_names=self.labels)

    # --- artifacts and inference -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in (self.data_config or {}).items()}
        opts = self.options
        return {
            "labels": list(self.labels),
            "data_config": cfg,
            "reader": self.reader.state() if self.reader is not None else None,
            "options": {
                "ignore_index": opts.ignore_index,
                "max_image_pixels": opts.max_image_pixels,
                "loss": opts.loss,
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> SemanticSegmentationTask:
        from ..data.masks import MaskReader

        task = cls(config, SemanticSegmentationOptions(**state.get("options", {})))
        task.labels = list(state["labels"])
        task.data_config = dict(state["data_config"])
        task.reader = MaskReader.from_state(state["reader"]) if state.get("reader") else None
        return task

    def _palette(self) -> dict[tuple[int, int, int], int] | None:
        """The training data's colour map (colour -> class id), for reading new masks the same way."""
        colours = (self.reader.state().get("colours") if self.reader is not None else None) or []
        return {tuple(c[:3]): int(c[3]) for c in colours} or None

    def class_colours(self) -> list[tuple[int, int, int]]:
        """One colour per class: the data's own colour map where it has one, else the PASCAL VOC colours."""
        from ..data.masks import MaskReader

        return (self.reader or MaskReader()).class_colours(len(self.labels))

    @torch.no_grad()
    def predict(
        self,
        model: nn.Module,
        inputs: Sequence[Any],
        device: torch.device,
        batch_size: int,
        *,
        overlay_dir: str | os.PathLike | None = None,
        alpha: float = 0.5,
    ) -> list[dict]:
        """One ``{"mask": np.ndarray (H, W) int64 class ids}`` per input, at the input's original size.

        With `overlay_dir`, each image is also written there with its predicted mask blended over it in the class
        colours (``<name>_overlay.png``; background class 0 left untinted), and the result holds the file's path as
        ``"overlay"``.

        Example:
            >>> task.predict(model, ["a.jpg"], torch.device("cpu"), 8)[0]["mask"].shape  # doctest: +SKIP
            (375, 500)
        """
        from ..data.imageio import load_image

        tf = self.transform(train=False)
        model.eval()
        out: list[dict] = []
        names: set[str] = set()
        for start in range(0, len(inputs), batch_size):
            chunk = list(inputs[start : start + batch_size])
            images = [load_image(x, self.options.max_image_pixels) for x in chunk]
            batch = torch.stack([tf(img, torch.zeros(1, 1, dtype=torch.long))[0] for img in images]).to(device)
            logits = model(batch).float()
            for j, img in enumerate(images):
                scores = _resize(logits[j : j + 1], tuple(img.shape[-2:]))
                mask = scores.argmax(1)[0].cpu().numpy().astype(np.int64)
                result: dict[str, Any] = {"mask": mask}
                if overlay_dir is not None:
                    result["overlay"] = self._write_overlay(overlay_dir, chunk[j], start + j, img, mask, alpha, names)
                out.append(result)
        return out

    def _write_overlay(self, folder, source, index: int, image, mask: np.ndarray, alpha: float, names: set) -> str:
        from PIL import Image

        from ..data.masks import overlay

        stem = Path(os.fspath(source)).stem if isinstance(source, (str, os.PathLike)) else f"{index:05d}"
        if stem in names:
            stem = f"{stem}-{index:05d}"
        names.add(stem)
        path = Path(folder) / f"{stem}_overlay.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        blended = overlay(image, mask, alpha, palette=self.class_colours(), ignore_index=None)
        Image.fromarray(blended).save(path)
        return str(path)


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def class_weight_tensor(weights: Any, labels: list[str]) -> torch.Tensor | None:
    """class_weights as a (K,) float tensor: a list of K numbers, or {class name or id: weight} (others 1.0)."""
    if weights is None:
        return None
    k = len(labels)
    if isinstance(weights, dict):
        out = [1.0] * k
        for key, value in weights.items():
            if key in labels:
                idx = labels.index(key)
            elif isinstance(key, int) and 0 <= key < k:
                idx = key
            else:
                raise ConfigError(
                    f"class_weights names {key!r}, which is not a class (classes: {', '.join(labels[:20])})."
                )
            out[idx] = value
    else:
        out = list(weights)
        if len(out) != k:
            raise ConfigError(
                f"class_weights has {len(out)} weights, but the data has {k} classes ({', '.join(labels[:20])}); give "
                "one weight per class, or a dict {class name: weight}."
            )
    try:
        tensor = torch.tensor([float(v) for v in out], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"class_weights={weights!r} must hold numbers.") from None
    if not torch.isfinite(tensor).all() or (tensor < 0).any() or tensor.sum() <= 0:
        raise ConfigError(f"class_weights={weights!r} must be finite, non-negative and not all zero.")
    return tensor


@torch.no_grad()
def check_logits(model: nn.Module, num_classes: int, size: tuple[int, int]) -> None:
    """Runs one image at the training size: the model must give (1, K, H, W) logits (a custom head that does not is
    one clear line now, not a shape error in the first training step)."""
    was = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, 3, *size))
    except ConfigError:
        raise
    except Exception as e:  # a custom head or backbone that does not fit
        raise ConfigError(
            f"The segmentation model does not run on a (1, 3, {size[0]}, {size[1]}) batch ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}). Check the head= and backbone= (and image_size=)."
        ) from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes, *size):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"The segmentation model outputs {shape} for a (1, 3, {size[0]}, {size[1]}) batch; it must give logits of "
            f"shape (1, {num_classes}, {size[0]}, {size[1]}) ({num_classes} classes). Fix the head's output channels."
        )
