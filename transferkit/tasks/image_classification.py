"""Image classification: folders, CSVs or Datasets of labelled images -> a fine-tuned classifier."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FinetuneConfig
from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.imageio import MAX_IMAGE_PIXELS
from ..errors import ConfigError, DataError
from ..metrics.classification import ClassificationMetrics
from ..registry import TASKS
from .base import Metrics, Splits, Task, fingerprint, probs_to_result


@dataclass(frozen=True)
class ImageClassificationOptions:
    """Options of the image-classification task (pass them to ``tk.finetune`` as keywords).

    Attributes:
        image_size: model input size (int or (H, W)); None: the backbone's own (e.g. 224).
        train_transforms: "default" (whole image resized + flip), "crop" (RandomResizedCrop + flip), "affine" (small
            rotations/shifts, no flip), "none"/"noflip" (resize only), or a callable on a uint8 (3, H, W) tensor.
        eval_transforms: "default" (whole image resized), "crop" (resize + center crop), or a callable.
        skip_bad_files: drop unreadable, truncated or oversized image files (one warning with the count) instead of
            failing; files that fail to decode later are skipped with a warning naming them.
        label_smoothing: cross-entropy label smoothing (0 disables).
        max_image_pixels: images with more pixels are refused before decoding (a decompression-bomb guard, PIL's
            limit by default); None: no limit.
    """

    image_size: Any = None
    train_transforms: Any = "default"
    eval_transforms: Any = "default"
    skip_bad_files: bool = False
    label_smoothing: float = 0.0
    max_image_pixels: int | None = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing={self.label_smoothing!r} is invalid; expected a fraction in [0, 1).")


@TASKS.register("image-classification", domain="image")
class ImageClassificationTask(Task):
    """Classifies whole images. Metrics: accuracy, macro-F1."""

    name = "image-classification"
    Options = ImageClassificationOptions
    # lr 1e-3 on the pretrained weights and on the new head (head_lr_mult 1), AdamW, 10% warmup + cosine; the batch
    # from the training-set size (about 20 steps an epoch, 8..32) and at least 500 optimizer steps / 10 epochs.
    # Measured on ImageNet EfficientNet-Lite0 -> MNIST-5k / 8x8 digits, 20 labels per class, 64 px, test accuracy
    # (benchmarks/efficacy_grids.py and transfer_efficacy.py; the run-length grid is in engine/run_length.py):
    #   batch 8, 500 steps (the default for 200 images), 3 seeds: lr 3e-4 0.922 / 0.938, 1e-3 0.965 / 0.975,
    #     3e-3 0.947 / 0.973 (a plain loop at the same length: 0.932 / 0.952); the same runs in NHWC memory
    #     (channels_last="auto", which only changes rounding): 0.917 / 0.942, 0.950 / 0.977, 0.945 / 0.965 (plain
    #     0.935 / 0.972): seed-to-seed noise of 1-2 points moves the medians either way. The other figures are NCHW.
    #   batch 8, 250 steps, 3 seeds: lr 3e-4 0.865 / 0.892, 1e-3 0.925 / 0.955, 3e-3 0.943 / 0.967 (7.5-8 points)
    #   batch 32 x 10 epochs (60 steps, the old default), 2 seeds: lr 3e-4 0.619 / 0.658, 1e-3 0.871 / 0.925
    #   head_lr_mult at lr 1e-3, batch 16: 1 -> 0.911 / 0.942, 10 -> 0.883 / 0.926; at 500 steps 3 lost 1.5-2.3
    #     points against 1 at lr 3e-4, 1e-3 and 3e-3 (mnist, results/efficacy_followups.json)
    #   BatchNorm at batch 8 x 10 epochs (mnist): batch statistics as usual 0.940, the ImageNet statistics kept
    #   (eval mode) 0.930; at batch 32, re-estimating them on the target before training 0.877 / 0.933 vs eval mode
    #   0.883 / 0.910. The small-batch run length does better than either, so there is no re-estimation step.
    #   lr 3e-4 (mnist, seeds 0/1: 0.922 / 0.918) is not lifted by norm weights at 10x lr (0.910 / 0.922), 750 steps
    #   (0.903 / 0.922), label smoothing 0.1 (0.903 / 0.870), weight decay 0.05 (0.915 / 0.903) or batch 4 (0.837 /
    #   0.842; and 3e-3 at batch 16: 0.958 / 0.903): it is not under-trained, it generalises less
    #   (results/efficacy_followups.json, low_lr_interventions).
    #   Head dropout 0.2 (EfficientNet's own), all runs on one host (compare runs of one host only: CPU kernels differ
    #   between hosts): mnist lr 3e-4 0.893 / 0.903 / 0.912 -> 0.922 / 0.925 / 0.923, 1e-3 0.957 / 0.923 / 0.958 ->
    #   0.957 / 0.942 / 0.963 (benchmark spread 3.3, digits 4.0: results/transfer_efficacy_head_dropout.json). But on
    #   the demo's resnet10t recipe (batch 16, lr 3e-3, early stopping, 3 seeds) it cost the probe 1-3 points and
    #   stopped every fine-tune at epoch 2 (0.664 / 0.740 / 0.826 -> 0.657 / 0.698 / 0.612): not a safe default.
    #   Selecting the final epoch instead of the best, affine augmentation or batch 16 do not close the gap either
    #   (results/checkpoint_selection.json; efficacy_followups.json, lr_3e-4_regularisers), nor do a weight EMA
    #   (ema=0.99: lr 3e-4 0.922 / 0.918 / 0.925 -> 0.908 / 0.913 / 0.920) or stochastic depth (drop_path_rate=0.1:
    #   0.903 / 0.903 / 0.920; efficacy_followups.json, lr_3e-4_ema_drop_path).
    auto_batch_bounds = (8, 32)
    min_steps = 500
    min_epochs = 10
    defaults = {"lr": 1e-3, "head_lr_mult": 1.0, "batch_size": "auto", "epochs": "auto"}
    monitor = "val/accuracy"
    monitor_mode = "max"
    modality = "image"
    channels_last_auto = True

    def __init__(self, config: FinetuneConfig, options: ImageClassificationOptions | None = None) -> None:
        super().__init__(config, options)
        self.data_config: dict[str, Any] | None = None  # the backbone's, with image_size applied
        self.label_type = "str"

    # --- phase 1: data ------------------------------------------------------------------------------------
    def read_data(self, data: Any):
        from ..data.images import resolve_image_data

        resolved = resolve_image_data(
            data,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            skip_bad_files=self.options.skip_bad_files,
            max_pixels=self.options.max_image_pixels,
        )
        self.labels = list(resolved.labels)
        self.label_type = resolved.label_type
        if len(self.labels) < 2:
            raise DataError(f"Image classification needs at least 2 classes; got {self.labels}.")
        return resolved

    def data_fingerprint(self, raw: Any) -> str:
        train = raw.train
        items = train.paths if train.paths is not None else [len(train), repr(type(train.dataset).__name__)]
        return fingerprint(self.labels, items, train.targets)

    # --- phase 2: model -----------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        from ..models import check_output_width, create_model

        cfg = self.config
        model = create_model(
            cfg.backbone,
            len(self.labels),
            kind="classifier",
            task=self.name,
            head=cfg.head,
            pretrained=cfg.pretrained,
            head_kwargs=dict(cfg.head_kwargs),
            default_head=self.default_head,
        )
        if self.data_config is None:
            self.data_config = resolved_data_config(
                getattr(model.backbone, "data_config", {}), self.options.image_size
            )
        _, h, w = self.data_config["input_size"]
        check_output_width(model, len(self.labels), torch.zeros(2, 3, h, w))
        return model

    # --- phase 3: datasets ----------------------------------------------------------------------------------
    def build_datasets(self, raw: Any) -> Splits:
        built = {
            name: src.build(
                self.transform(train=name == "train"),
                max_pixels=self.options.max_image_pixels,
                skip_bad=self.options.skip_bad_files,
            )
            for name, src in raw.splits.items()
        }
        return Splits(built["train"], built.get("val"), built.get("test"), self.labels)

    def eval_dataset(self, data: Any):
        from ..data.images import read_labelled_images
        from ..data.splits import split_folders

        if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
            folders = split_folders(data, inside="class subfolders")
            if folders:  # train/ val/ test/: evaluate on the test split (else val), not on split names as classes
                data = folders.get("test") or folders.get("val") or folders["train"]
        # the class ids are the ones the model was trained with (a class it never saw is an error)
        source = read_labelled_images(
            data, self.labels, skip_bad_files=self.options.skip_bad_files, max_pixels=self.options.max_image_pixels
        )
        return source.build(self.transform(train=False), max_pixels=self.options.max_image_pixels)

    def transform(self, train: bool) -> Callable:
        from ..data.transforms import build_transforms

        preset = self.options.train_transforms if train else self.options.eval_transforms
        return build_transforms(self.data_config, train=train, preset=preset)

    def collate_fn(self, split: str) -> Callable | None:
        return collate_skipping_bad if self.options.skip_bad_files else None

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = batch
        return F.cross_entropy(model(images), targets, label_smoothing=self.options.label_smoothing)

    def eval_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        images, targets = batch
        logits = model(images)
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        return losses, (logits.argmax(1), targets)

    def new_metrics(self, split: str = "val") -> Metrics:
        return ClassificationMetrics(len(self.labels), class_names=self.labels)

    # --- artifacts and inference -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "label_type": self.label_type, "data_config": _jsonable(self.data_config)}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> ImageClassificationTask:
        task = cls(config)
        task.labels = list(state["labels"])
        task.label_type = state.get("label_type", "str")
        task.data_config = dict(state["data_config"])
        return task

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int) -> list[dict]:
        from ..data.imageio import load_image

        tf = self.transform(train=False)
        model.eval()
        out: list[dict] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            batch = torch.stack([tf(load_image(x, self.options.max_image_pixels)) for x in chunk]).to(device)
            probs = model(batch).float().softmax(1).cpu()
            out += [probs_to_result(p, self.labels, self.label_type) for p in probs]
        return out


def collate_skipping_bad(batch: list[Any]) -> Any:
    """Default collation of the items that decoded (an undecodable file yields None with skip_bad_files=True)."""
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    if not kept:
        raise DataError("Every image of a batch failed to decode; see the warnings above for the files.")
    return default_collate(kept)


def resolved_data_config(backbone_config: dict[str, Any], image_size: Any) -> dict[str, Any]:
    """The backbone's data config with the user's image size applied (ImageNet defaults where it says nothing)."""
    cfg = {
        "input_size": (3, 224, 224),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }
    cfg.update({k: v for k, v in (backbone_config or {}).items() if v is not None})
    size = check_image_size(image_size)
    if size is not None:
        cfg["input_size"] = (3, *size)
    if "input_size" not in cfg or len(cfg["input_size"]) != 3:
        raise ConfigError(f"The backbone's data config has no image input size ({cfg.get('input_size')!r}).")
    return cfg


def check_image_size(image_size: Any) -> tuple[int, int] | None:
    """(height, width) from an int or a pair; None stays None; anything else is a ConfigError."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0:
        return (image_size, image_size)
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)
    ):
        return (int(image_size[0]), int(image_size[1]))
    raise ConfigError(f"image_size={image_size!r} is invalid; expected a positive int or [height, width], e.g. 224.")


def _jsonable(cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (cfg or {}).items()}
