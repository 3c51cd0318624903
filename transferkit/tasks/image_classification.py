"""Image classification: folders, CSVs or Datasets of labelled images -> a fine-tuned classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FinetuneConfig
from ..data.constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, DataError
from ..metrics.classification import ClassificationMetrics
from ..registry import TASKS
from .base import Metrics, Splits, Task


@dataclass(frozen=True)
class ImageClassificationOptions:
    """Options of the image-classification task (pass them to ``tk.finetune`` as keywords).

    Attributes:
        image_size: model input size (int or (H, W)); None: the backbone's own (e.g. 224).
        train_transforms: "default" (whole image resized + flip), "crop" (RandomResizedCrop + flip),
            "none"/"noflip" (resize only), or a callable on a uint8 (3, H, W) tensor.
        eval_transforms: "default" (whole image resized), "crop" (resize + center crop), or a callable.
        skip_bad_files: drop unreadable/non-image files with one warning instead of failing.
        label_smoothing: cross-entropy label smoothing (0 disables).
    """

    image_size: Any = None
    train_transforms: Any = "default"
    eval_transforms: Any = "default"
    skip_bad_files: bool = False
    label_smoothing: float = 0.0


@TASKS.register("image-classification", domain="image")
class ImageClassificationTask(Task):
    """Classifies whole images. Metrics: accuracy, macro-F1."""

    name = "image-classification"
    Options = ImageClassificationOptions
    monitor = "val/accuracy"
    monitor_mode = "max"

    def __init__(self, config: FinetuneConfig, options: ImageClassificationOptions | None = None) -> None:
        super().__init__(config, options)
        self.data_config: dict[str, Any] | None = None  # the backbone's, with image_size applied
        self._datasets: dict[str, Any] = {}

    # --- data -------------------------------------------------------------------------------------------
    def prepare_data(self, data: Any) -> Splits:
        from ..data.images import resolve_image_data

        resolved = resolve_image_data(
            data,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            skip_bad_files=self.options.skip_bad_files,
        )
        self.labels = list(resolved.labels)
        # Transforms depend on the backbone's data config, known only once the model exists: datasets are built
        # without a transform here and get theirs in build_model.
        self._datasets = {name: src.build(None) for name, src in resolved.splits.items()}
        return Splits(self._datasets["train"], self._datasets.get("val"), self._datasets.get("test"), self.labels)

    def eval_dataset(self, data: Any):
        from ..data.images import resolve_image_data

        # labels= maps class folders onto the ids the model was trained with (a class it never saw is an error)
        resolved = resolve_image_data({"train": data, "val": data}, seed=self.config.seed, labels=self.labels)
        return resolved.train.build(self.transform(train=False))

    def transform(self, train: bool) -> Callable:
        from ..data.transforms import build_transforms

        preset = self.options.train_transforms if train else self.options.eval_transforms
        return build_transforms(self.data_config, train=train, preset=preset)

    # --- model ------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from ..models import create_model

        if len(self.labels) < 2:
            raise DataError(f"Image classification needs at least 2 classes; got {self.labels}.")
        cfg = self.config
        model = create_model(
            cfg.backbone,
            len(self.labels),
            head=cfg.head,
            pretrained=cfg.pretrained,
            head_kwargs=dict(cfg.head_kwargs),
            default_head=self.default_head,
        )
        if self.data_config is None:
            self.data_config = resolved_data_config(
                getattr(model.backbone, "data_config", {}), self.options.image_size
            )
        for split, ds in self._datasets.items():
            ds.transform = self.transform(train=split == "train")
        return model

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        images, targets = batch
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.options.label_smoothing)
        return loss, (logits.argmax(1), targets)

    def new_metrics(self) -> Metrics:
        return ClassificationMetrics(len(self.labels))

    # --- artifacts and inference -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "data_config": _jsonable(self.data_config)}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> ImageClassificationTask:
        task = cls(config)
        task.labels = list(state["labels"])
        task.data_config = dict(state["data_config"])
        return task

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int) -> list[dict]:
        from ..data.images import load_image

        tf = self.transform(train=False)
        model.eval()
        out: list[dict] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            batch = torch.stack([tf(load_image(x)) for x in chunk]).to(device)
            probs = model(batch).float().softmax(1).cpu()
            out += [probs_to_result(p, self.labels) for p in probs]
        return out


def probs_to_result(probs: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    """``{"label", "score", "probs"}`` for one row of class probabilities (shared by classification tasks)."""
    idx = int(probs.argmax())
    return {"label": labels[idx], "score": float(probs[idx]), "probs": dict(zip(labels, probs.tolist()))}


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
    if image_size is not None:
        if isinstance(image_size, int):
            size = (image_size, image_size)
        elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
            size = tuple(int(s) for s in image_size)
        else:
            raise ConfigError(f"image_size={image_size!r} must be an int or (height, width).")
        cfg["input_size"] = (3, *size)
    return cfg


def _jsonable(cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (cfg or {}).items()}
