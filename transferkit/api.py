"""The public entry points: finetune, pretrain, evaluate, load."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .config import FinetuneConfig, coerce, resolve_options, split_known
from .errors import ArtifactError, ConfigError, TransferkitError, UnknownNameError, WeightsError

# Options whose change on resume is allowed (they do not change what the run has learned so far).
RESUMABLE_CHANGES = (
    "epochs",
    "max_steps",
    "early_stopping",
    "eval_batch_size",
    "num_workers",
    "quiet",
    "save_every_steps",
    "keep_checkpoints",
    "keep_resume_state",
    "log_with",
    "callbacks",
    "device",
    "channels_last",
    "resume",
    "overwrite",
    "output_dir",
    "save_checkpoints",
    "average_top_k",
    "compare",
    "report",
)


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
        best_epoch: the 1-based epoch whose weights were restored (None without validation).
        stopped_early: whether early stopping (or a callback) ended the run.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    best_checkpoint: str | None
    output_dir: str | None
    labels: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


def _default_output_dir(task: str) -> str:
    return str(Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")


_UNSET: Any = object()


def _prepare(task: str | None, data: Any, config: Any, options: dict[str, Any], *, kind: str):
    """The one option path of every entry point (Python, CLI, recipes): task and data may come from the config."""
    from .config import load_yaml
    from .tasks import get_task

    loaded = load_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    task = task if task is not None else loaded.get("task")
    if task is None:
        raise ConfigError(f"{kind}() needs a task, e.g. {kind}('image-classification', ...), or task: in the config.")
    task_cls = get_task(task)
    cfg, opts, extra = resolve_options(task_cls, loaded, options)
    data = data if data is not _UNSET and data is not None else extra.get("data")
    if data is None:
        raise ConfigError(f"{kind}({task!r}) needs data=..., or data: in the config.")
    return task, task_cls, cfg, opts, data


def finetune(
    task: str | None = None,
    data: Any = None,
    backbone: Any = _UNSET,
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tunes a pretrained backbone plus a head on `data`, validates every epoch, tests the best model.

    ``lr`` is the learning rate of the pretrained weights (as in transformers, timm and torchvision); newly
    initialised layers (the head) train at ``lr * head_lr_mult``. Options come from, lowest first: the engine's
    defaults, the task's defaults, `config`, and the keywords given here. ``transferkit options TASK`` lists them.

    Args:
        task: a task name, see ``tk.list_tasks()`` (or ``task:`` in `config`).
        data: a folder, a file, a dict of split -> folder/file/Dataset, or a Dataset (see the task's docs).
        backbone: a source-prefixed name (``"timm:resnet50"``, ``"tv:resnet18"``, ``"hf:folder"``) or an nn.Module.
        config: a YAML file or dict of options; keyword options win over it.
        **options: engine options (:class:`~transferkit.config.FinetuneConfig`: ``pretrained``, ``head``,
            ``output_dir``, ``epochs``, ``lr``, ``freeze``, ...) and the task's own options (``image_size``, ...).

    Returns:
        A :class:`FinetuneResult`.

    Example:
        >>> import transferkit as tk
        >>> result = tk.finetune("image-classification", data="data/pets", backbone="timm:resnet18",
        ...                      epochs=5, output_dir="runs/pets")  # doctest: +SKIP
        >>> result.metrics["val"]["accuracy"]  # doctest: +SKIP
    """
    if backbone is not _UNSET:
        options["backbone"] = backbone
    task, task_cls, cfg, opts, data = _prepare(task, data, config, options, kind="finetune")
    if cfg.backbone is None:
        raise ConfigError(
            f"finetune({task!r}) needs a backbone, e.g. backbone='timm:resnet18'; see tk.list_backbones()."
        )
    warn_unusual_lr(task_cls, cfg)
    t0 = time.perf_counter()
    result = _run(task, task_cls, cfg, opts, data)
    if cfg.compare:
        _compare(task, task_cls, cfg, opts, data, result, time.perf_counter() - t0)
    return result


# AdamW learning rates of pretrained weights known to work when fine-tuning (SGD: x10), per modality: ImageNet CNNs
# and ViTs (timm's and torchvision's fine-tuning recipes, 1e-4..3e-3 with AdamW) and BERT-family encoders (the BERT
# paper's 2e-5..5e-5; up to 2e-4 for small models). A rate more than ~10x outside gets a one-line warning.
KNOWN_LR = {"image": (1e-4, 3e-3), "text": (1e-5, 2e-4)}


def warn_unusual_lr(task_cls, cfg: FinetuneConfig) -> None:
    """One line when the pretrained weights' or the new layers' rate is far outside what works for the family."""
    import warnings

    known = KNOWN_LR.get(getattr(task_cls, "modality", ""))
    if known is None or not isinstance(cfg.lr, float) or cfg.pretrained is False:
        return
    scale = 10.0 if cfg.optimizer == "sgd" else 1.0
    lo, hi = known[0] * scale, known[1] * scale
    new = cfg.lr * cfg.head_lr_mult
    if cfg.lr < lo / 10 or cfg.lr > hi * 10:
        warnings.warn(
            f"lr={cfg.lr:g} is far from the rates that fine-tune pretrained {task_cls.modality} backbones well with "
            f"{cfg.optimizer} ({lo:g} to {hi:g}); lr is the pretrained weights' rate (new layers get lr * "
            "head_lr_mult).",
            UserWarning,
            stacklevel=3,
        )
    elif new > hi * 30:
        warnings.warn(
            f"The new layers train at lr * head_lr_mult = {new:g}, far above {hi:g}: lower head_lr_mult.",
            UserWarning,
            stacklevel=3,
        )


COMPARE_METHODS = {
    # random init, everything at lr
    "scratch": ("from scratch", {"pretrained": False, "freeze": "none"}),
    # frozen pretrained backbone, the head alone (at 10x the pretrained rate: a probe has no features to protect)
    "probe": ("linear probe", {"freeze": "backbone"}),
}


def _compare(
    task: str, task_cls, cfg: FinetuneConfig, opts: Any, data: Any, result: FinetuneResult, seconds: float
) -> None:
    """Trains the baselines named by ``compare`` into output_dir/compare/<method> and records all side by side in
    transferkit.json ("comparison") and the report."""
    import json

    from .artifacts import META_FILE
    from .engine.checkpoint import write_json

    out = Path(result.output_dir)
    main = "full fine-tune" if cfg.freeze == "none" else f"fine-tune (freeze={cfg.freeze})"
    rows = [_comparison_row(main, result, seconds)]
    for method in cfg.compare:
        name, changes = COMPARE_METHODS[method]
        changes = dict(changes)
        if method == "probe":
            changes["head_lr_mult"] = max(cfg.head_lr_mult, 10.0)
        sub = cfg.replace(output_dir=str(out / "compare" / method), compare=(), **changes)
        t0 = time.perf_counter()
        rows.append(_comparison_row(name, _run(task, task_cls, sub, opts, data), time.perf_counter() - t0))
    if int(os.environ.get("RANK", "0")) == 0:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
        meta["comparison"] = rows
        write_json(out / META_FILE, meta)
        try:
            from .report import render_report

            if cfg.report:
                render_report(out)
        except Exception as e:  # noqa: BLE001 - the runs are saved; a figure must not fail them
            import warnings

            warnings.warn(f"The comparison report could not be written ({type(e).__name__}: {e}).", stacklevel=2)


def _comparison_row(method: str, result: FinetuneResult, seconds: float | None = None) -> dict[str, Any]:
    return {
        "method": method,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds": seconds,
        "output_dir": result.output_dir,
    }


def pretrain(
    task: str | None = None,
    data: Any = None,
    backbone: Any = _UNSET,
    *,
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
    if backbone is not _UNSET:
        options["backbone"] = backbone
    task, task_cls, cfg, opts, data = _prepare(task, data, config, options, kind="pretrain")
    return _run(task, task_cls, cfg, opts, data)


def run_fingerprint(task_name: str, cfg: FinetuneConfig, opts: Any, labels: list[str], data_hash: str) -> dict:
    """What must stay the same for a resume to continue the same run."""
    from .artifacts import describe

    values = {k: describe(v) for k, v in vars(cfg).items() if k not in RESUMABLE_CHANGES}
    return {
        "task": task_name,
        **values,
        "task_options": describe(opts) if opts is not None else {},
        "labels": list(labels),
        "data": data_hash,
    }


def _run(task_name: str, task_cls, cfg: FinetuneConfig, opts: Any, data: Any) -> FinetuneResult:
    from accelerate.utils import set_seed

    from .artifacts import WEIGHTS_FILE, write_meta
    from .engine.checkpoint import link_if_identical, save_weights
    from .engine.freezing import resolve_freeze
    from .engine.loop import Trainer, make_accelerator
    from .engine.progress import log
    from .engine.run_length import resolve_run_length
    from .engine.rundir import RunLock, drop_aside, prepare_folder, read_status, restore_aside

    out = Path(cfg.output_dir or _default_output_dir(task_name))
    cfg = cfg.replace(output_dir=str(out))
    accelerator = make_accelerator(cfg, resolve_freeze(cfg.freeze, cfg.unfreeze_epoch).changes_during_training)
    is_main = accelerator.is_main_process
    lock = RunLock(out)
    previous = None
    started = False
    try:
        if is_main:
            # the lock first: a second run must not even look at (or, with overwrite=True, delete) an active run
            lock.acquire()
            previous = prepare_folder(out, resume=cfg.resume, overwrite=cfg.overwrite)
        accelerator.wait_for_everyone()
        if not is_main:
            previous = read_status(out) if cfg.resume else None
        set_seed(cfg.seed)
        task = task_cls(cfg, opts)
        t0 = time.perf_counter()
        raw = task.read_data(data)
        if previous is not None:
            cfg = _keep_run_length(cfg, previous)
            task.config = cfg
        fp = run_fingerprint(task_name, cfg, opts, task.labels, task.data_fingerprint(raw))
        auto_batch, auto_epochs = cfg.batch_size == "auto", cfg.epochs == "auto"
        if previous is not None:  # before the model is built; what "auto" becomes is checked once it is known
            _check_resume(out, previous, fp, ignore=("batch_size",) if auto_batch else ())
            if not auto_epochs:
                _check_more_epochs(out, previous, cfg)
        model = task.build_model(raw)
        splits = task.build_datasets(raw)
        # batch_size / epochs "auto": numbers from the training-set size, before anything reads them; the
        # fingerprint holds the batch actually used, so a resume must run with the same one
        cfg = resolve_run_length(cfg, task_cls, len(splits.train), accelerator.num_processes)
        task.config = cfg
        fp["batch_size"] = cfg.batch_size
        if previous is not None:
            if auto_batch:
                _check_resume(out, previous, fp)
            if auto_epochs:
                _check_more_epochs(out, previous, cfg)
        t_data = time.perf_counter() - t0
        trainer = Trainer(task, model, splits, cfg, out, accelerator=accelerator, fingerprint=fp)
        trainer.prepare_resume()  # the checkpoint is whole and of this run, before transferkit.json is rewritten
        if is_main:
            _summary(task_name, cfg, task, raw, accelerator, out, trainer.channels_last)
            drop_aside(out)  # overwrite=True: the new run begins, the old one goes
            write_meta(out, task=task_name, config=cfg, options=opts, task_state=task.state(), status="training",
                       fingerprint=fp)  # fmt: skip
        started = True
        outcome = trainer.fit()
        outcome.timings["data"] = round(t_data, 3)
        model = trainer.model
        best_epoch = None if outcome.best_epoch is None else outcome.best_epoch + 1
        if is_main:
            save_weights(model, out / WEIGHTS_FILE)
            if outcome.best_checkpoint:  # one copy on disk when the final weights are the best epoch's
                link_if_identical(out / WEIGHTS_FILE, Path(outcome.best_checkpoint))
            task.save_extra(model, str(out))
            _write_artifacts(out, outcome)
            _write_lr_schedule(out, outcome.lr_trace)
            final_cfg = cfg.replace(lr=outcome.lr) if outcome.lr is not None else cfg
            write_meta(
                out,
                task=task_name,
                config=final_cfg,
                options=opts,
                task_state=task.state(),
                metrics=outcome.metrics,
                fingerprint=fp,
                extra={
                    "best_epoch": best_epoch,
                    "best_reason": outcome.best_reason,
                    "stopped_early": outcome.stopped_early,
                    "skipped_steps": outcome.skipped_steps,
                    "epochs_run": len(outcome.history),
                    "timings": {k: round(v, 3) for k, v in outcome.timings.items()},
                    "resumed_from": str(trainer.resumed_from) if trainer.resumed_from else None,
                    "frozen_batchnorm": trainer.frozen_batchnorm,
                },
            )
            if not cfg.keep_resume_state:
                _drop_resume_state(out)
            if cfg.report:
                _report(out, task, outcome, model, splits)
            _closing_lines(out, outcome, best_epoch, cfg, log, splits)
        accelerator.wait_for_everyone()
    except OSError as e:
        if e.errno not in _WRITE_ERRORS:
            if is_main and started:
                _mark_failed(out, e)
            raise
        error = ArtifactError(
            f"Writing to {out} failed: {e.strerror or e} ({e.filename or 'a file'}). Free space there (or make it "
            "writable), then continue with resume=True; the last good checkpoint is "
            f"{_last_checkpoint(out) or 'none'}."
        )
        if is_main and started:
            _mark_failed(out, error)
        raise error from None
    except BaseException as e:
        if is_main and started:
            _mark_failed(out, e)
        raise
    finally:
        if is_main:
            if not started:
                restore_aside(out)  # overwrite=True but the new run never began: the old run stays
            lock.release()
    return FinetuneResult(
        model=model,
        history=outcome.history,
        metrics=outcome.metrics,
        best_checkpoint=outcome.best_checkpoint,
        output_dir=str(out),
        labels=list(task.labels),
        best_epoch=best_epoch,
        stopped_early=outcome.stopped_early,
    )


# errno values of a write that failed for lack of space or permission (not the user's data)
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _last_checkpoint(out: Path) -> Path | None:
    from .engine.checkpoint import latest_complete

    return latest_complete(out / "checkpoints")[0]


def _check_resume(out: Path, previous: dict[str, Any], fp: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Refuses to resume a different run (before any file is touched); `ignore`: keys not known yet."""
    from .engine.rundir import compare

    saved = previous.get("fingerprint")
    if saved is not None and not isinstance(saved, dict):
        raise ConfigError(
            f"{out / 'transferkit.json'} is damaged (its resume fingerprint is not an object); the run cannot be "
            "resumed safely. Pass overwrite=True to start again, or another output_dir."
        )
    if saved is None:
        raise ConfigError(
            f"{out} holds a run written without a resume fingerprint (an older transferkit); it cannot be resumed "
            "safely. Pass overwrite=True to start again."
        )
    diffs = compare(
        {k: v for k, v in saved.items() if k not in ignore}, {k: v for k, v in fp.items() if k not in ignore}
    )
    if diffs:
        raise ConfigError(
            f"resume=True, but this is not the run in {out}; these differ: {'; '.join(diffs[:8])}. Resume with the "
            "original options and data, pass overwrite=True to start a new run there, or choose another output_dir. "
            f"(Options that may change on resume: {', '.join(RESUMABLE_CHANGES[:6])}, ...)"
        )


def _keep_run_length(cfg: FinetuneConfig, previous: dict[str, Any]) -> FinetuneConfig:
    """On resume, "auto" batch_size / epochs mean the numbers the run was started with (a number given now wins)."""
    saved = previous.get("config") or {}
    keep = {
        k: saved[k] for k in ("batch_size", "epochs") if getattr(cfg, k) == "auto" and isinstance(saved.get(k), int)
    }
    return cfg.replace(**keep) if keep else cfg


def _check_more_epochs(out: Path, previous: dict, cfg: FinetuneConfig) -> None:
    if previous.get("status") == "finished":
        done = int(previous.get("epochs_run") or previous.get("config", {}).get("epochs") or 0)
        if cfg.epochs <= done:
            raise ConfigError(
                f"The run in {out} finished after {done} epoch(s); with epochs={cfg.epochs} there is nothing left to "
                "resume. Raise epochs to train it further, or pass overwrite=True to start again."
            )


def _summary(
    task_name: str, cfg: FinetuneConfig, task: Any, raw: Any, accelerator: Any, out: Path, channels_last: bool = False
) -> None:
    from .engine.progress import log

    if cfg.quiet:
        return
    bb = cfg.backbone if isinstance(cfg.backbone, str) else type(cfg.backbone).__name__
    weights = {True: "library weights", False: "random init"}.get(cfg.pretrained, f"weights {cfg.pretrained}")
    if isinstance(cfg.backbone, str) and cfg.backbone.startswith("hf-config:"):
        weights = "random init"  # a configuration only: nothing pretrained to load
    elif isinstance(cfg.backbone, str) and cfg.backbone.startswith("hf:") and cfg.pretrained is True:
        weights = "weights in the folder or hub model"
    head = cfg.head if isinstance(cfg.head, str) or cfg.head is None else type(cfg.head).__name__
    facts = task.describe_data(raw)
    splits = ", ".join(f"{k} {v}" for k, v in facts.get("splits", {}).items())
    classes = f" | {facts['classes']} classes" if facts.get("classes") else ""
    note = f" ({facts['note']})" if facts.get("note") else ""
    lr = cfg.lr if isinstance(cfg.lr, str) else f"{cfg.lr:g}"
    log(
        f"transferkit {task_name}: backbone {bb} ({weights}), head {head or task.default_head}\n"
        f"  data: {splits}{note}{classes}\n"
        f"  lr {lr} (new layers x{cfg.head_lr_mult:g}), {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"freeze {cfg.freeze if isinstance(cfg.freeze, str) else type(cfg.freeze).__name__}\n"
        f"  device {accelerator.device}, precision {cfg.mixed_precision}{', channels-last' if channels_last else ''}, "
        f"{accelerator.num_processes} process(es), "
        f"output {out}"
    )


def _closing_lines(out: Path, outcome: Any, best_epoch: int | None, cfg: FinetuneConfig, log, splits=None) -> None:
    if cfg.quiet:
        return
    parts = []
    skipped = [p for name in ("train", "val", "test") for p in getattr(getattr(splits, name, None), "skipped", [])]
    if skipped:
        parts.append(f"Skipped {len(set(skipped))} image file(s) that failed to decode (skip_bad_files=True).")
    if best_epoch is not None and cfg.restore_best:
        parts.append(f"Restored epoch {best_epoch} of {len(outcome.history)} ({outcome.best_reason}).")
    if outcome.skipped_steps:
        parts.append(f"Skipped {outcome.skipped_steps} step(s) with a non-finite loss or gradient.")
    test = outcome.metrics.get("test")
    if test:
        parts.append("Test: " + ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float))[:200] + ".")
    parts.append(f"Model saved to {out / 'model.safetensors'}; tk.load({str(out)!r}) to predict.")
    log(" ".join(parts))


def _write_artifacts(out: Path, outcome: Any) -> None:
    """Files the final evaluations produce (e.g. detection predictions), as JSON next to the model."""
    import json

    for metrics in outcome.metric_objects.values():
        for name, content in (metrics.artifacts() if hasattr(metrics, "artifacts") else {}).items():
            (out / name).write_text(json.dumps(content))


def _write_lr_schedule(out: Path, trace: list[dict[str, float]]) -> None:
    """lr_schedule.csv: the rates actually used (sampled steps), pretrained weights vs new layers."""
    if not trace:
        return
    lines = ["step,lr,lr_new"] + [f"{r['step']},{r['lr']:.6g},{r['lr_new']:.6g}" for r in trace]
    (out / "lr_schedule.csv").write_text("\n".join(lines) + "\n")


def _report(out: Path, task: Any, outcome: Any, model: nn.Module, splits: Any) -> None:
    """The run report (report.html), when the report module is available; a failure never fails the run."""
    try:
        from .report import write_report
    except ImportError:
        return
    try:
        write_report(out, task=task, outcome=outcome, model=model, splits=splits)
    except Exception as e:  # noqa: BLE001 - the model is saved; a broken figure must not lose the run
        import warnings

        warnings.warn(f"The run report could not be written ({type(e).__name__}: {e}).", stacklevel=2)


def _drop_resume_state(out: Path) -> None:
    import shutil

    from .engine.checkpoint import list_checkpoints

    for folder in list_checkpoints(out / "checkpoints"):
        shutil.rmtree(folder, ignore_errors=True)


def _mark_failed(out: Path, error: BaseException) -> None:
    import json

    from .artifacts import META_FILE
    from .engine.checkpoint import write_json

    path = out / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    meta["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    meta["error"] = f"{type(error).__name__}: {error}"[:2000]
    with contextlib.suppress(OSError):  # a full disk must not hide the original error
        write_json(path, meta)


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

    def predict(self, inputs: Any, batch_size: int = 32, **options: Any) -> list[dict[str, Any]]:
        """One result dict per input (a single input is treated as a list of one; a folder means its images).

        `options` go to the task's predict, e.g. ``overlay_dir=`` (segmentation: colour overlays written there).
        """
        inputs = _expand_inputs(inputs)
        return self.task.predict(self.model, list(inputs), self.device, batch_size, **options)


def _expand_inputs(inputs: Any) -> list[Any]:
    """A path or list of paths where a folder stands for the image files in it (sorted, recursively)."""
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            from .data.imageio import walk_images

            files = walk_images(str(item))
            if not files:
                from .errors import DataError

                raise DataError(f"Folder {str(item)!r} holds no image files to predict.")
            out += files
        else:
            out.append(item)
    return out


def load(
    output_dir: str | Path, *, head: Any = None, device: str | None = None, checkpoint: str = "final"
) -> Predictor:
    """Loads a run's output folder for inference (JSON + safetensors; no pickled code, no remote code).

    Args:
        output_dir: the folder a ``tk.finetune`` run wrote.
        head: the head again, if the run used a custom nn.Module/factory head that has no registered name.
        device: "cpu", "cuda", ... (default: CUDA if available).
        checkpoint: ``"final"`` (the finished run's model; an unfinished run is refused) or ``"best"`` (the best
            epoch's weights so far, also of an interrupted run).

    Example:
        >>> predictor = tk.load("runs/pets")  # doctest: +SKIP
        >>> predictor.predict(["cat.jpg"])  # doctest: +SKIP
    """
    from .artifacts import WEIGHTS_FILE, read_meta
    from .engine.batchnorm import freeze_pretrained_batchnorm
    from .engine.checkpoint import load_weights_into
    from .engine.optim import pretrained_groups
    from .tasks import get_task

    if checkpoint not in ("final", "best"):
        raise ConfigError(f"checkpoint={checkpoint!r} must be 'final' or 'best'.")
    meta = read_meta(output_dir, require_finished=checkpoint == "final")
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
    known, _ = split_known(saved, FinetuneConfig)
    known.update(pretrained=False, output_dir=str(output_dir), callbacks=(), resume=False, overwrite=False)
    if isinstance(known.get("backbone"), str) and known["backbone"].startswith("<custom"):
        known["backbone"] = None
    meta_file = Path(output_dir) / "transferkit.json"
    try:
        cfg = FinetuneConfig(**coerce(FinetuneConfig, known))
        task = task_cls.from_state(meta["task_state"], cfg)
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # ConfigError is a ValueError
        raise ArtifactError(f"{meta_file} is damaged or of another format ({type(e).__name__}: {e}).") from None
    try:
        model = task.build_model()
    except WeightsError as e:
        raise ArtifactError(f"The model of {output_dir} cannot be rebuilt from its files: {e}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        if head is not None and isinstance(e, TransferkitError):
            raise  # the head passed here is at fault, not the folder
        saved_head = saved.get("head")
        from .heads import list_heads

        if isinstance(e, UnknownNameError) and isinstance(saved_head, str) and saved_head not in list_heads():
            raise ConfigError(
                f"The run in {output_dir} used the head {saved_head!r}, which is not registered in this process: "
                "import or define it (tk.register_head) before tk.load, or pass tk.load(output_dir, head=...)."
            ) from None
        raise ArtifactError(
            f"The model of {output_dir} cannot be rebuilt from {meta_file} ({type(e).__name__}: {e}); the folder is "
            "damaged or was written by another version of transferkit."
        ) from None
    if meta.get("frozen_batchnorm"):  # the run trained with FrozenBatchNorm2d in its pretrained layers
        freeze_pretrained_batchnorm(model, {n for g in pretrained_groups(model) for n in g})
    weights = Path(output_dir) / WEIGHTS_FILE
    if checkpoint == "best":
        best = Path(output_dir) / "checkpoints" / "best" / "model.safetensors"
        weights = best if best.is_file() else weights
    load_weights_into(model, weights)
    return Predictor(task, model, meta, device)


def evaluate(output_dir: str | Path, data: Any, *, batch_size: int = 64, quiet: bool = True) -> dict[str, float]:
    """Evaluates a finished run on labelled `data` (same formats as finetune's data, one split: a folder with
    split folders is evaluated on its test split, else its val split).

    Returns:
        Bare metric names -> values, e.g. ``{"accuracy": 0.93, "f1_macro": 0.92, "loss": 0.21}``; ``loss`` is the
        mean over samples, whatever the batch size.

    Example:
        >>> tk.evaluate("runs/pets", data="data/pets_test")  # doctest: +SKIP
    """
    from .engine.evaluation import evaluate as run_evaluation
    from .engine.loop import make_accelerator

    predictor = load(output_dir)
    task = predictor.task
    cfg = task.config.replace(quiet=quiet, mixed_precision="no", output_dir=None)
    task.config = cfg
    if isinstance(data, (str, os.PathLike)) and not Path(data).exists():  # the readers would call it "train data"
        from .errors import DataError

        raise DataError(f"evaluation data path {str(data)!r} does not exist. Pass the labelled data to evaluate on.")
    dataset = task.eval_dataset(data)
    loader = task.make_loader(dataset, "test", batch_size, shuffle=False)
    accelerator = make_accelerator(cfg)
    model = predictor.model.to(accelerator.device)
    metrics, _ = run_evaluation(task, model, loader, accelerator, desc="evaluate", quiet=quiet, split="test")
    return metrics
