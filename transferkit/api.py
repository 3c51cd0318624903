"""The public entry points: finetune, pretrain, evaluate, load."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .config import FinetuneConfig, coerce, field_names, load_yaml, raise_unknown_options, split_known
from .errors import ConfigError


@dataclass
class FinetuneResult:
    """What a run returns.

    Attributes:
        model: the trained model (best epoch's weights unless ``restore_best=False``), on the CPU or the device.
        history: one dict per epoch: ``{"epoch": 1, "train/loss": ..., "val/accuracy": ..., "lr": ...}``.
        metrics: split -> bare metric names of the final model, e.g. ``{"val": {...}, "test": {"accuracy": ...}}``.
        best_checkpoint: path of the best epoch's weights, or None.
        output_dir: the run's output folder (``tk.load(output_dir)`` gives a Predictor).
        labels: class names (index = class id).
    """

    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    best_checkpoint: str | None
    output_dir: str | None
    labels: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


def _resolve(task: str, config: str | Path | Mapping | None, options: dict[str, Any]):
    """defaults <- task defaults <- YAML/dict config <- keyword options; split into engine and task options."""
    from .tasks import get_task

    task_cls = get_task(task)
    explicit: dict[str, Any] = {}
    if config is not None:
        explicit.update(load_yaml(config) if isinstance(config, (str, Path)) else dict(config))
    explicit.update(options)
    merged: dict[str, Any] = {**task_cls.defaults, **explicit}
    merged.pop("task", None)
    merged.pop("data", None)
    engine_opts, rest = split_known(merged, FinetuneConfig, "finetune")
    task_opts: dict[str, Any] = {}
    if task_cls.Options is not None:
        task_opts, rest = split_known(rest, task_cls.Options, task)
    valid = field_names(FinetuneConfig) + (field_names(task_cls.Options) if task_cls.Options else [])
    raise_unknown_options(rest, valid)
    cfg = FinetuneConfig(**coerce(FinetuneConfig, engine_opts))
    try:
        opts = task_cls.Options(**coerce(task_cls.Options, task_opts)) if task_cls.Options else None
    except TypeError as e:
        raise ConfigError(f"Bad option for task {task!r}: {e}") from None
    return task_cls, cfg, opts


def _default_output_dir(task: str) -> str:
    return str(Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")


def finetune(
    task: str,
    data: Any,
    backbone: Any = None,
    *,
    pretrained: bool | str = True,
    head: Any = None,
    output_dir: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tunes a pretrained backbone plus a head on `data`, validates every epoch, tests the best model.

    Args:
        task: a task name, see ``tk.list_tasks()``.
        data: a folder, a file, a dict of split -> folder/file/Dataset, or a Dataset (see the task's docs).
        backbone: a source-prefixed name (``"timm:resnet50"``, ``"tv:resnet18"``, ``"hf:folder"``) or an nn.Module.
        pretrained: True (the library's weights), False (random init) or a local weights file/folder.
        head: a registered head name (``"linear"``, ``"mlp"``), an nn.Module, a class or a factory.
        output_dir: where weights, history and checkpoints go (default ``runs/<task>-<time>``).
        config: a YAML file or dict of options; keyword options win over it.
        **options: engine options (:class:`~transferkit.config.FinetuneConfig`: epochs, lr, freeze, ...) and
            the task's own options (e.g. ``image_size``, ``max_length``).

    Returns:
        A :class:`FinetuneResult`.

    Example:
        >>> import transferkit as tk
        >>> result = tk.finetune("image-classification", data="data/pets", backbone="timm:resnet18",
        ...                      epochs=5, output_dir="runs/pets")  # doctest: +SKIP
        >>> result.metrics["test"]["accuracy"]  # doctest: +SKIP
    """
    options = dict(options, pretrained=pretrained)
    if backbone is not None:
        options["backbone"] = backbone
    if head is not None:
        options["head"] = head
    task_cls, cfg, opts = _resolve(task, config, options)
    if cfg.backbone is None:
        raise ConfigError(
            f"finetune({task!r}) needs a backbone, e.g. backbone='timm:resnet18'; see tk.list_backbones()."
        )
    out = Path(output_dir or _default_output_dir(task))
    cfg = cfg.replace(output_dir=str(out))
    return _run(task, task_cls, cfg, opts, data)


def pretrain(
    task: str,
    data: Any,
    backbone: Any = None,
    *,
    output_dir: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Self-supervised pretraining (``"masked-lm"``); the output folder can be used as a backbone afterwards.

    Example:
        >>> import transferkit as tk
        >>> tk.pretrain("masked-lm", data="corpus.txt", backbone="hf:bert-base-uncased",
        ...             output_dir="runs/mlm")  # doctest: +SKIP
        >>> tk.finetune("text-classification", data="reviews.csv", backbone="hf:runs/mlm")  # doctest: +SKIP
    """
    options = dict(options)
    if backbone is not None:
        options["backbone"] = backbone
    options.setdefault("pretrained", True)
    task_cls, cfg, opts = _resolve(task, config, options)
    out = Path(output_dir or _default_output_dir(task))
    return _run(task, task_cls, cfg.replace(output_dir=str(out)), opts, data)


def _run(task_name: str, task_cls, cfg: FinetuneConfig, opts: Any, data: Any) -> FinetuneResult:
    from accelerate.utils import set_seed

    from .artifacts import WEIGHTS_FILE, write_meta
    from .engine.checkpoint import save_weights
    from .engine.loop import Trainer

    set_seed(cfg.seed)
    task = task_cls(cfg, opts)
    splits = task.prepare_data(data)
    model = task.build_model()
    out = Path(cfg.output_dir)
    trainer = Trainer(task, model, splits, cfg, out)
    if trainer.is_main:
        write_meta(out, task=task_name, config=cfg, options=opts, task_state=task.state(), status="training")
    outcome = trainer.fit()
    model = trainer.model
    if trainer.is_main:
        save_weights(model, out / WEIGHTS_FILE)
        task.save_extra(model, str(out))
        write_meta(out, task=task_name, config=cfg, options=opts, task_state=task.state(), metrics=outcome.metrics)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(
        model=model,
        history=outcome.history,
        metrics=outcome.metrics,
        best_checkpoint=outcome.best_checkpoint,
        output_dir=str(out),
        labels=list(splits.labels),
        best_epoch=None if outcome.best_epoch is None else outcome.best_epoch + 1,
        stopped_early=outcome.stopped_early,
    )


class Predictor:
    """A trained model ready for inference: ``predict`` takes raw inputs (paths, PIL images, texts).

    Example:
        >>> predictor = tk.load("runs/pets")  # doctest: +SKIP
        >>> predictor.predict(["cat.jpg"])[0]["label"]  # doctest: +SKIP
        'cat'
    """

    def __init__(self, task, model: nn.Module, meta: dict[str, Any], device: str | None = None) -> None:
        import torch

        self.task = task
        self.meta = meta
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    def predict(self, inputs: Any, batch_size: int = 32) -> list[dict[str, Any]]:
        """One result dict per input (a single input is treated as a list of one)."""
        if isinstance(inputs, (str, Path)) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        return self.task.predict(self.model, list(inputs), self.device, batch_size)


def load(output_dir: str | Path, *, head: Any = None, device: str | None = None) -> Predictor:
    """Loads a finished run's output folder for inference (JSON + safetensors; no pickled code).

    Args:
        output_dir: the folder a ``tk.finetune`` run wrote.
        head: the head again, if the run used a custom nn.Module/factory head that has no registered name.
        device: "cpu", "cuda", ... (default: CUDA if available).

    Example:
        >>> predictor = tk.load("runs/pets")  # doctest: +SKIP
        >>> predictor.predict(["cat.jpg"])  # doctest: +SKIP
    """
    from .artifacts import WEIGHTS_FILE, read_meta
    from .engine.checkpoint import load_weights_into
    from .tasks import get_task

    meta = read_meta(output_dir)
    task_cls = get_task(meta["task"])
    saved = dict(meta["config"])
    if isinstance(saved.get("head"), str) and saved["head"].startswith("<custom"):
        if head is None:
            raise ConfigError(
                f"The run in {output_dir} used a custom head ({saved['head']}); pass it again: "
                "tk.load(output_dir, head=...)."
            )
        saved["head"] = head
    elif head is not None:
        saved["head"] = head
    known, _ = split_known(saved, FinetuneConfig, "config")
    known.update(pretrained=False, output_dir=str(output_dir), callbacks=())
    cfg = FinetuneConfig(**coerce(FinetuneConfig, known))
    task = task_cls.from_state(meta["task_state"], cfg)
    model = task.build_model()
    load_weights_into(model, Path(output_dir) / WEIGHTS_FILE)
    return Predictor(task, model, meta, device)


def evaluate(output_dir: str | Path, data: Any, *, batch_size: int = 64, quiet: bool = True) -> dict[str, float]:
    """Evaluates a finished run on labelled `data` (same formats as finetune's data, one split).

    Returns:
        Bare metric names -> values, e.g. ``{"accuracy": 0.93, "f1_macro": 0.92, "loss": 0.21}``.

    Example:
        >>> tk.evaluate("runs/pets", data="data/pets_test")  # doctest: +SKIP
    """
    from .engine.loop import evaluate_model, make_accelerator

    predictor = load(output_dir)
    task = predictor.task
    cfg = task.config.replace(quiet=quiet, mixed_precision="no")
    task.config = cfg
    dataset = task.eval_dataset(data)
    loader = task.make_loader(dataset, "test", batch_size, shuffle=False)
    accelerator = make_accelerator(cfg)
    model = predictor.model.to(accelerator.device)
    return evaluate_model(task, model, loader, accelerator, cfg, desc="evaluate")
