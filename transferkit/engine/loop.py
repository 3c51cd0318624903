"""The training loop: one Accelerate-powered engine for every task.

The engine knows models, batches and metrics, never images or text: a task gives it datasets, a model whose
``layer_groups()`` name the pretrained parameters, a ``train_step`` (a loss or a dict of named losses) and an
``eval_step`` (per-sample losses or None, plus outputs for the task's metrics).

The loop is lean per step (measured against a hand-written PyTorch loop in ``benchmarks/engine_overhead.py``): no
autocast context when precision is fp32, batches moved only when the device is not the CPU, accelerate's
dataloader wrappers only when several processes share the data, one host sync per optimizer step (the non-finite
check).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import FinetuneConfig
from ..errors import ArtifactError, ConfigError, TrainingError
from . import checkpoint as ckpt
from .averaging import WeightEMA, greedy_soup, state_from
from .batchnorm import freeze_pretrained_batchnorm, resolve_policy, set_batchnorm_modes
from .callbacks import (
    BestTracker,
    Callback,
    Control,
    EarlyStopping,
    RunState,
    callback_states,
    format_logs,
    load_callback_states,
    write_history,
)
from .evaluation import evaluate, to_device
from .freezing import NoFreeze, resolve_freeze
from .memory_format import apply_channels_last, match_state_layout
from .optim import ParamGroupPlan, build_optimizer, pretrained_groups
from .progress import Progress, log
from .schedules import Schedule, warmup_steps_for
from .seeding import set_epoch as set_sampler_epoch


@dataclass
class FitOutcome:
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    best_epoch: int | None = None  # 0-based
    best_checkpoint: str | None = None
    best_reason: str = ""
    stopped_early: bool = False
    skipped_steps: int = 0
    lr: float | None = None  # the pretrained weights' rate actually used (lr="auto" resolves here)
    lr_trace: list[dict[str, float]] = field(default_factory=list)  # sampled per-step LRs, pretrained vs new
    timings: dict[str, float] = field(default_factory=dict)
    metric_objects: dict[str, Any] = field(default_factory=dict)  # split -> the final evaluation's Metrics


def make_accelerator(config: FinetuneConfig, find_unused_parameters: bool = False):
    """An Accelerator for this run. In a single process the shared accelerate state is reset first, so that
    runs with different precision settings can follow each other in one Python session."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        AcceleratorState._reset_state()
        warn_single_process_launch()
    device = config.device
    if config.mixed_precision == "fp16" and (device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("mixed_precision='fp16' needs a CUDA GPU; on the CPU use 'bf16' or 'no'.")
    if device is not None and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r}, but no CUDA GPU is visible here; use device='cpu' or leave it unset."
            )
        if world > 1:
            raise ConfigError(
                f"device={device!r} cannot be combined with several processes; each process takes its own GPU "
                "(choose them with CUDA_VISIBLE_DEVICES)."
            )
        if ":" in device:
            index = int(device.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
            torch.cuda.set_device(index)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    log_with = config.log_with
    if isinstance(log_with, str):
        log_with = [log_with]
    # cpu=True on GPU-less machines lets accelerate see a torchrun/`accelerate launch` group as multi-CPU (gloo).
    cpu = device == "cpu" or not torch.cuda.is_available()
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no supported trackers are currently installed")
            accelerator = Accelerator(
                mixed_precision=config.mixed_precision,
                kwargs_handlers=handlers,
                cpu=cpu,
                log_with=list(log_with) if log_with else None,
                project_dir=config.output_dir,
            )
    except (ImportError, ValueError) as e:
        if log_with:
            raise ConfigError(f"log_with={config.log_with!r} cannot be used: {e}") from None
        raise
    if log_with and len(accelerator.log_with) < len(log_with):
        raise ConfigError(
            f"log_with={config.log_with!r}: the tracker library is not installed (e.g. pip install tensorboard, "
            "mlflow or wandb). history.csv is always written."
        )
    return accelerator


def warn_single_process_launch() -> None:
    """`accelerate launch --num_processes 2` without --multi_gpu (or a config) starts ONE process on a machine
    without GPUs; it sets MASTER_ADDR for the group it meant to start. Say so once."""
    if os.environ.get("MASTER_ADDR") and "ACCELERATE_USE_CPU" in os.environ and "RANK" not in os.environ:
        import warnings

        warnings.warn(
            "accelerate launch asked for several processes but started one. On a machine without GPUs use "
            "`accelerate launch --multi_gpu --num_processes N ...` (gloo CPU processes) or `torchrun "
            "--nproc_per_node N ...`; on GPUs `accelerate launch --multi_gpu --num_processes N ...`.",
            stacklevel=3,
        )


class TrainShard(torch.utils.data.Sampler):
    """This process's share of another batch sampler's batches: ``rank, rank + world, ...``, every process the same
    number (the last ones padded with batches from the start of the epoch, as accelerate's ``even_batches`` does).

    The engine shards the training data itself rather than through accelerate's ``DataLoaderShard``, which loads
    one batch ahead: the augmentation of batch k+1 would draw from the global generators before step k ran, and a
    resume from a checkpoint after step k could not replay that order."""

    def __init__(self, batch_sampler: Any, rank: int, world: int) -> None:
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.batch_sampler) / self.world)

    def __iter__(self):
        batches = list(self.batch_sampler)  # indices only: drawn from the sampler's own generator, as before
        for j in range(len(self)):
            i = j * self.world + self.rank
            yield batches[i % len(batches)]


def shard_train_loader(loader, rank: int, world: int):
    """The same loader (dataset, collation, workers, seeded generator) over this process's `TrainShard`."""
    from torch.utils.data import DataLoader

    if getattr(loader, "batch_sampler", None) is None:
        raise ConfigError("Training on several processes needs a map-style dataset (a DataLoader with batches).")
    return DataLoader(
        loader.dataset,
        batch_sampler=TrainShard(loader.batch_sampler, rank, world),
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,  # the one the sampler draws from, reseeded each epoch by `_reseed`
    )


def _reseed(loader, seed: int, epoch: int) -> None:
    """Shuffle order depends on (seed, epoch) only, so a resumed run sees the same batches as an uninterrupted one."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    set_sampler_epoch(getattr(loader, "batch_sampler", None), epoch)  # per-item seeds of loaders with workers
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed + epoch)


class Trainer:
    """Fits `model` on `splits` as `task` says, following `config`. Writes checkpoints under `output_dir`.

    The task provides ``make_loader(dataset, split, batch_size, shuffle)``, ``train_step(model, batch)``,
    ``eval_step(model, batch)``, ``new_metrics(split)``, ``monitor`` / ``monitor_mode`` and ``batchnorm`` (its
    default BatchNorm policy).
    """

    def __init__(
        self,
        task: Any,
        model: nn.Module,
        splits: Any,
        config: FinetuneConfig,
        output_dir,
        accelerator: Any = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        self.task, self.splits, self.config = task, splits, config
        self.fingerprint = fingerprint  # what makes this run this run; saved in every checkpoint, checked on resume
        self.output_dir = Path(output_dir) if output_dir else None
        self.ckpt_root = self.output_dir / "checkpoints" if self.output_dir else None
        self.strategy = resolve_freeze(config.freeze, config.unfreeze_epoch)
        self.bn_policy = resolve_policy(config.batchnorm, getattr(task, "batchnorm", "eval-when-frozen"))
        self.frozen_batchnorm = 0
        if self.bn_policy == "frozen" and getattr(model, "is_pretrained", True):
            self.frozen_batchnorm = freeze_pretrained_batchnorm(
                model, {n for g in pretrained_groups(model) for n in g}
            )
        self.channels_last = apply_channels_last(model, config.channels_last, task)  # before the optimizer sees it
        self.plan = ParamGroupPlan(model, config if config.lr != "auto" else config.replace(lr=1.0))
        if self.plan.num_groups == 0 and not isinstance(self.strategy, NoFreeze):
            raise ConfigError(
                f"freeze={config.freeze!r} needs a model with pretrained layer groups; this one has none."
            )
        self.accelerator = accelerator or make_accelerator(
            config, find_unused_parameters=self.strategy.changes_during_training
        )
        self.distributed = self.accelerator.num_processes > 1
        self.device = self.accelerator.device
        self.move_batches = self.device.type != "cpu"  # the training loader is never accelerate's (it moves itself)
        self.model = model
        es = config.early_stopping_config
        self.monitor = config.monitor or (es.monitor if es else None) or task.monitor
        mode = task.monitor_mode if self.monitor == task.monitor else None
        self.best = BestTracker(self.monitor, mode)
        self.callbacks: list[Callback] = list(config.callbacks)
        # early stopping watches the run's monitor unless told otherwise
        self.early_stopping = EarlyStopping.from_config(es, self.monitor) if es else None
        if self.early_stopping:
            if self.early_stopping.tracker.monitor == self.monitor and es.mode is None:
                self.early_stopping.tracker.mode = self.best.mode
            self.callbacks.append(self.early_stopping)
        self.ema = None
        self.resumed_from: Path | None = None
        self._resume: tuple[Path | None, dict[str, Any] | None] | None = None  # set by prepare_resume
        self._best_sha: str | None = None  # checksum of checkpoints/best/model.safetensors as this run wrote it

    # --- helpers ------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _loader(self, split: str, shuffle: bool):
        ds = getattr(self.splits, split)
        if ds is None:
            return None
        cfg = self.config
        bs = cfg.batch_size if split == "train" else (cfg.eval_batch_size or 2 * cfg.batch_size)
        return self.task.make_loader(ds, split, bs, shuffle)

    def _autocast(self):
        return self.accelerator.autocast() if self.config.mixed_precision != "no" else contextlib.nullcontext()

    def _n_top(self, epoch: int) -> int:
        return self.strategy.trainable_groups(epoch, self.plan.num_groups)

    def _log(self, text: str) -> None:
        if self.is_main:
            log(text, self.config.quiet)

    def evaluate(self, loader, split: str = "val") -> dict[str, float]:
        """Bare metric names -> values for one pass over `loader` (the model's weights as they are now)."""
        metrics, _ = self._evaluate(loader, split)
        return metrics

    def _evaluate(self, loader, split: str):
        model = self.accelerator.unwrap_model(self.model)
        return evaluate(
            self.task,
            model,
            loader,
            self.accelerator,
            mixed_precision=self.config.mixed_precision,
            desc=split,
            quiet=self.config.quiet,
            split=split,
        )

    # --- resume -----------------------------------------------------------------------------------------------
    def resume_checkpoint(self) -> Path | None:
        """The checkpoint to resume from (verified), or None for a fresh start."""
        cfg = self.config
        if not cfg.resume or self.ckpt_root is None:
            return None
        if cfg.resume is not True:
            path = Path(cfg.resume)
            if (path / "checkpoints").is_dir():  # an output folder: its newest checkpoint
                path = path / "checkpoints"
            if path.is_dir() and not (path / ckpt.STATE).is_file():
                found, rejected = ckpt.latest_complete(path)
                if found is None:
                    raise ConfigError(f"resume={str(cfg.resume)!r} holds no complete checkpoint{_why(rejected)}.")
                return found
            problem = ckpt.verify(path) if path.is_dir() else "not a folder"
            if problem:
                raise ConfigError(f"resume={str(cfg.resume)!r} is not a usable checkpoint: {problem}.")
            return path
        found, rejected = ckpt.latest_complete(self.ckpt_root)
        if rejected and found is None:
            raise ConfigError(
                f"resume=True, but no checkpoint in {self.ckpt_root} is usable{_why(rejected)}. Pass overwrite=True "
                "to start the run again, or resume='<a checkpoint folder>'."
            )
        if rejected:
            warnings.warn(
                f"Skipping damaged checkpoint(s) in {self.ckpt_root}{_why(rejected)}; resuming from {found.name}.",
                UserWarning,
                stacklevel=2,
            )
        if found is None:
            epochs = _recorded_epochs(self.output_dir / "history.csv")
            if epochs:
                raise ConfigError(
                    f"resume=True, but the run in {self.output_dir} recorded {epochs} epoch(s) and has no checkpoint "
                    "left to continue from (deleted, or not kept: keep_resume_state=False or save_checkpoints=False)"
                    ". Pass overwrite=True to train it again from the start, or another output_dir."
                )
            if (self.output_dir / "transferkit.json").is_file():
                self._log(f"No checkpoint in {self.ckpt_root} yet: the run starts from the beginning.")
        return found

    def prepare_resume(self) -> dict[str, Any] | None:
        """Chooses the checkpoint to resume from and checks, before any file is written, that it is whole and
        belongs to this run (fingerprint, number of processes, model keys and shapes). Returns its state, or None
        for a fresh start. `fit` calls it; call it earlier to fail before the output folder is touched."""
        if self._resume is None:
            folder = self.resume_checkpoint()
            self._resume = (folder, self._check_checkpoint(folder) if folder is not None else None)
        return self._resume[1]

    def _check_checkpoint(self, folder: Path) -> dict[str, Any]:
        from .rundir import compare

        state = ckpt.read_json(folder / ckpt.STATE)
        problem = _state_problem(state)
        if problem:
            raise ArtifactError(
                f"{folder / ckpt.STATE} is damaged ({problem}). Resume from another checkpoint "
                "(resume='<folder>') or pass overwrite=True to start again."
            )
        saved = state.get("fingerprint")
        if self.fingerprint is not None and isinstance(saved, dict):
            diffs = compare(saved, self.fingerprint)
            if diffs:
                raise ConfigError(
                    f"The checkpoint {folder} belongs to another run; these differ: {'; '.join(diffs[:8])}. Resume "
                    "with that run's options and data, or start a new run (overwrite=True or another output_dir)."
                )
        world = int(state.get("world_size", 1))
        if world != self.accelerator.num_processes:
            raise ConfigError(
                f"The checkpoint {folder} was written by {world} process(es); resume it with the same number "
                f"(this run has {self.accelerator.num_processes})."
            )
        ckpt.check_fits(self.model, folder / "model.safetensors")
        return state

    # --- training -----------------------------------------------------------------------------------------
    def fit(self) -> FitOutcome:
        cfg, acc = self.config, self.accelerator
        t_setup = time.perf_counter()
        train_loader = self._loader("train", shuffle=True)
        val_loader = self._loader("val", shuffle=False)
        test_loader = self._loader("test", shuffle=False)
        if len(train_loader) == 0:
            raise ConfigError("The training split is empty.")

        state_json = self.prepare_resume()
        resume_dir = self._resume[0]
        own = resume_dir is not None and self.ckpt_root is not None and resume_dir.parent == self.ckpt_root
        if self.is_main and self.ckpt_root is not None:
            if own:
                ckpt.promote(resume_dir)  # a complete temporary copy becomes the checkpoint it is
            ckpt.clean_debris(self.ckpt_root)
        if self.distributed:
            acc.wait_for_everyone()
        if own and resume_dir.name.startswith(ckpt.TMP_PREFIX):
            resume_dir = resume_dir.with_name(resume_dir.name[len(ckpt.TMP_PREFIX) :])
        if state_json and state_json.get("lr") is not None and cfg.lr == "auto":
            cfg = self.config = cfg.replace(lr=float(state_json["lr"]))  # the rate the run was started with
        if cfg.lr == "auto":
            cfg = self.config = cfg.replace(lr=self._find_lr(train_loader))
        self.plan.config = cfg

        if state_json:
            start_epoch = state_json["epoch"] + (1 if state_json["epoch_complete"] else 0)
            skip_batches = 0 if state_json["epoch_complete"] else state_json["batches_done"]
            n_top = int(state_json["n_top"])
        else:
            start_epoch, skip_batches, n_top = 0, 0, self._n_top(0)

        # Freeze before `prepare` when the trainable set never changes (DDP then ignores frozen params);
        # otherwise DDP must see every parameter and run with find_unused_parameters.
        if self.strategy.changes_during_training and self.distributed:
            self.plan.set_trainable(self.plan.num_groups)
        else:
            self.plan.set_trainable(n_top)
        groups = self.plan.groups(self.plan.order(n_top))
        if not groups:
            raise ConfigError("Nothing to train: every parameter is frozen (the head has no parameters?).")
        optimizer = build_optimizer(groups, cfg)
        self.model, optimizer = acc.prepare(self.model, optimizer)
        if self.distributed:
            train_loader = shard_train_loader(train_loader, acc.process_index, acc.num_processes)
        if self.strategy.changes_during_training and self.distributed:
            self.plan.set_trainable(n_top)
        inner_opt = getattr(optimizer, "optimizer", optimizer)
        unwrapped = acc.unwrap_model(self.model)

        steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        schedule = Schedule(
            inner_opt,
            total_steps,
            warmup_steps_for(cfg.warmup, total_steps),
            cfg.schedule,
            cfg.schedule_kwargs,
            steps_per_epoch=steps_per_epoch,
            monitor_mode=self.best.mode,
        )
        if cfg.ema:
            self.ema = WeightEMA(unwrapped, cfg.ema)

        state = RunState(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, is_main_process=self.is_main, history=[])
        state.model, state.optimizer = unwrapped, inner_opt
        control = Control()
        best_weights: dict[str, torch.Tensor] | Path | None = None  # in memory, or on disk after a resume
        topk: list[dict[str, Any]] = []
        skipped_steps = 0
        rng_to_restore = partial = None
        if state_json:
            rng_to_restore, partial = self._load_checkpoint(resume_dir, unwrapped, inner_opt, schedule, state_json)
            state.global_step = int(state_json["global_step"])
            state.history = list(state_json["history"])
            self.best.load_state_dict(state_json["best"])
            saved_callbacks = dict(state_json.get("callbacks", {}))
            es = self.early_stopping
            watched = state_json.get("early_stopping_watch")
            if es is not None and watched and watched != [es.tracker.monitor, es.tracker.mode]:
                # early_stopping may change on resume, but a best value of another metric means nothing here
                saved_callbacks.pop(es.state_key, None)
                self._log(
                    f"Early stopping now watches {es.tracker.monitor} ({es.tracker.mode}): its count starts anew."
                )
            leftover = load_callback_states(self.callbacks, saved_callbacks)
            if leftover:
                self._log(f"Note: no callback to restore the saved state of {', '.join(leftover)}.")
            topk = list(state_json.get("topk", []))
            skipped_steps = int(state_json.get("skipped_steps", 0))
            best_weights = self._best_after_resume()
            where = f"epoch {start_epoch + 1}, batch {skip_batches}" if skip_batches else f"epoch {start_epoch + 1}"
            self._log(f"Resumed from {resume_dir} (step {state.global_step}); continuing at {where}.")
            self.resumed_from = resume_dir

        if cfg.log_with:
            from ..artifacts import describe

            values = {k: v for k, v in describe(vars(cfg)).items() if isinstance(v, (int, float, str, bool))}
            acc.init_trackers(Path(cfg.output_dir or "transferkit").name, config=values)
        for cb in self.callbacks:
            cb.on_train_start(state, control)
        step_hooks = [cb for cb in self.callbacks if type(cb).on_step_end is not Callback.on_step_end]
        stopped_early = False
        lr_trace: list[dict[str, float]] = []
        timings = {"setup": time.perf_counter() - t_setup, "train": 0.0, "val": 0.0, "test": 0.0}
        self._ctx = {
            "optimizer": optimizer,
            "inner_opt": inner_opt,
            "schedule": schedule,
            "unwrapped": unwrapped,
            "topk": topk,
            "lr_trace": lr_trace,
            "train_loader": train_loader,
            "history": state.history,
            "skipped_steps": skipped_steps,
            "n_top": n_top,
        }

        for epoch in range(start_epoch, cfg.epochs):
            if control.should_stop or (cfg.max_steps and state.global_step >= cfg.max_steps):
                break
            state.epoch = epoch
            new_top = self._n_top(epoch)
            if new_top != n_top:
                self._change_trainable(optimizer, n_top, new_top)
                schedule.refresh()
                n_top = new_top
            self._ctx["n_top"] = n_top
            for cb in self.callbacks:
                cb.on_epoch_start(state, control)
            _reseed(train_loader, cfg.seed, epoch)
            t0 = time.perf_counter()
            losses, skipped = self._train_epoch(
                train_loader, optimizer, schedule, state, control, step_hooks, skip_batches, rng_to_restore, partial
            )
            skip_batches, rng_to_restore, partial = 0, None, None
            skipped_steps += skipped
            self._ctx["skipped_steps"] = skipped_steps
            timings["train"] += time.perf_counter() - t0
            logs: dict[str, Any] = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in losses.items()}}
            if val_loader is not None:
                t1 = time.perf_counter()
                with self._ema_weights(unwrapped):
                    metrics, _ = self._evaluate(val_loader, "val")
                logs.update({f"val/{k}": v for k, v in metrics.items()})
                timings["val"] += time.perf_counter() - t1
            logs.update(self._lrs(inner_opt))
            logs["time"] = round(time.perf_counter() - t0, 3)
            state.history.append(logs)
            state.metrics = {k: v for k, v in logs.items() if k.startswith("val/")}
            value = self.best.value(logs)
            if schedule.epoch_end(value):
                self._log(f"No improvement of {self.monitor}: learning rates lowered (x{schedule.plateau_factor:g}).")
            if self.best.update(value, epoch, logs.get("val/loss")):
                with self._ema_weights(unwrapped):
                    best_weights = snapshot_if(unwrapped, cfg.restore_best)
                    if self.output_dir and cfg.save_checkpoints and self.is_main:
                        self._write_best(unwrapped)
            if cfg.average_top_k:
                with self._ema_weights(unwrapped):
                    self._keep_topk(topk, unwrapped, value, epoch, logs.get("val/loss"))
            for cb in self.callbacks:
                cb.on_epoch_end(state, control, logs)
            if self.distributed or self.early_stopping is not None:  # any stop request stops every process
                if control.should_stop:
                    acc.set_trigger()
                control.should_stop = acc.check_trigger()
            if control.should_stop:
                stopped_early = True
            if self.is_main and cfg.log_with:
                acc.log({k: v for k, v in logs.items() if isinstance(v, (int, float))}, step=epoch + 1)
            self._log(f"epoch {epoch + 1}/{cfg.epochs} {format_logs(logs)}")
            if self.output_dir and cfg.save_checkpoints:
                self._save_checkpoint(state, epoch, batches_done=len(train_loader), epoch_complete=True)
            if self.output_dir and self.is_main:
                # after the checkpoint: an epoch in history.csv always has a checkpoint to resume from
                self._guard_write(self.output_dir / "history.csv", write_history, self.output_dir / "history.csv",
                                  state.history)  # fmt: skip

        for cb in self.callbacks:
            cb.on_train_end(state, control)

        outcome = FitOutcome(
            history=state.history,
            best_epoch=self.best.best_epoch,
            stopped_early=stopped_early,
            skipped_steps=skipped_steps,
            lr=float(cfg.lr),
            lr_trace=lr_trace,
            timings=timings,
        )
        final_row = state.history[-1] if state.history else {}
        if self.ema is not None and not (cfg.restore_best and best_weights is not None):
            self.ema.swap(unwrapped)  # the averaged weights are the model
        if cfg.restore_best and best_weights is not None:
            if isinstance(best_weights, Path):
                ckpt.load_weights_into(unwrapped, best_weights)
            else:
                unwrapped.load_state_dict(best_weights)
            final_row = next((r for r in state.history if r["epoch"] == self.best.best_epoch + 1), final_row)
            outcome.best_reason = self._best_reason(final_row)
        if val_loader is not None and final_row:
            outcome.metrics["val"] = {k[4:]: v for k, v in final_row.items() if k.startswith("val/")}
        if cfg.average_top_k and len(topk) >= 2 and val_loader is not None:
            soup = self._soup(topk, unwrapped, val_loader)
            if soup is not None:
                outcome.metrics["val"], outcome.best_reason = soup
        if val_loader is not None and (getattr(self.task, "writes_artifacts", False) or test_loader is None):
            # One more pass with the final model when its evaluation objects are wanted: the task's artifacts
            # (e.g. detection predictions of the restored model) or, without a test split, the report's material.
            t1 = time.perf_counter()
            outcome.metrics["val"], outcome.metric_objects["val"] = self._evaluate(val_loader, "val")
            timings["val"] += time.perf_counter() - t1
        if test_loader is not None:
            t1 = time.perf_counter()
            outcome.metrics["test"], outcome.metric_objects["test"] = self._evaluate(test_loader, "test")
            timings["test"] = time.perf_counter() - t1
        if self.output_dir and self.is_main and cfg.save_checkpoints and self.best.best_epoch is not None:
            outcome.best_checkpoint = str(self.output_dir / "checkpoints" / "best" / "model.safetensors")
        if self.is_main and self.output_dir and state.history:
            best_epoch = None if self.best.best_epoch is None else self.best.best_epoch + 1
            self._guard_write(self.output_dir / "history.csv", write_history, self.output_dir / "history.csv",
                              state.history, best_epoch if cfg.restore_best else None)  # fmt: skip
        if cfg.log_with:
            acc.end_training()
        self.model = unwrapped
        return outcome

    def _train_epoch(
        self, loader, optimizer, schedule, state: RunState, control: Control, step_hooks, skip, rng, partial=None
    ):
        cfg, acc, task, model = self.config, self.accelerator, self.task, self.model
        model.train()
        set_batchnorm_modes(model, self.bn_policy)
        accum = cfg.grad_accum_steps
        backward, opt_step, zero_grad = self._step_functions(optimizer)
        n_batches = len(loader)
        source = loader
        if skip:
            from accelerate import skip_first_batches

            source = skip_first_batches(loader, skip)
        iterator = iter(source)
        if rng is not None:
            # Resume: the global generators (augmentation, dropout) as they were at the checkpoint. The loader's
            # own generator is not restored: it is reseeded per epoch, and the new iterator has just drawn from it
            # exactly as the uninterrupted run did (skipping happens on the sampled indices, not on the data).
            ckpt.restore_rng(*rng)
        sums: dict[str, torch.Tensor] = {}  # "loss" (the total) and each named loss, of the steps taken
        cycle: dict[str, torch.Tensor] = {}  # the same for the batches of the optimizer step under way
        seen = cycle_n = skipped = 0
        if partial:  # resumed mid-epoch: the epoch's sums so far, so its mean loss is the uninterrupted run's
            sums = {k: torch.tensor(v, dtype=torch.float32, device=self.device) for k, v in partial["sums"].items()}
            seen, skipped = int(partial["seen"]), int(partial["skipped"])
        progress = Progress(n_batches - skip, f"epoch {state.epoch + 1}/{cfg.epochs}", not cfg.quiet and self.is_main)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        trace_every = max(1, (n_batches * cfg.epochs) // (200 * accum))
        # nonfinite="skip": a skipped step must leave no trace, but its forward pass has already moved the BatchNorm
        # statistics (a NaN batch makes them NaN for good): keep the buffers of the last good step to put back.
        buffers = [b for b in model.buffers()] if cfg.nonfinite == "skip" else []
        kept = [b.detach().clone() for b in buffers]
        try:
            for i in range(skip, n_batches):
                batch = to_device(next(iterator), self.device) if self.move_batches else next(iterator)
                sync = (i + 1) % accum == 0 or i + 1 == n_batches
                ctx = acc.no_sync(model) if (self.distributed and not sync) else contextlib.nullcontext()
                if cycle_n == 0:
                    # zero at the start of each accumulation window, not after the step: measured on a CPU (smp
                    # Unet) it halves the page faults of re-allocating the gradients and saves ~6 % per step
                    zero_grad(set_to_none=True)
                with ctx:
                    with self._autocast():
                        named = _named_losses(task.train_step(model, batch))
                        loss = sum(named.values()) if len(named) > 1 else next(iter(named.values()))
                    backward(loss / accum if accum > 1 else loss)
                parts = named if "loss" in named else {"loss": loss, **named}
                for k, v in parts.items():
                    cycle[k] = cycle.get(k, 0.0) + v.detach().float()
                cycle_n += 1
                progress.update()
                if not sync:
                    continue
                ok = self._finite_step(loss, params, state)
                if ok:
                    opt_step()
                    if self.ema is not None:
                        self.ema.update(acc.unwrap_model(model))
                    for k, v in cycle.items():
                        sums[k] = sums.get(k, 0.0) + v
                    seen += cycle_n
                    if buffers:
                        with torch.no_grad():
                            for b, k in zip(buffers, kept):
                                k.copy_(b)
                else:
                    skipped += 1
                    with torch.no_grad():
                        for b, k in zip(buffers, kept):
                            b.copy_(k)
                cycle, cycle_n = {}, 0
                schedule.step()
                state.global_step += 1
                if state.global_step % trace_every == 0:
                    self._ctx["lr_trace"].append({"step": state.global_step, **self._lrs(optimizer)})
                for cb in step_hooks:
                    cb.on_step_end(state, control, loss.detach())
                every = cfg.save_every_steps
                if (
                    every
                    and self.output_dir
                    and cfg.save_checkpoints
                    and i + 1 < n_batches
                    and state.global_step % every == 0
                ):
                    self._ctx["partial"] = {"sums": {k: float(v) for k, v in sums.items()}, "seen": seen,
                                            "skipped": skipped}  # fmt: skip
                    self._save_checkpoint(state, state.epoch, batches_done=i + 1, epoch_complete=False)
                if control.should_stop or (cfg.max_steps and state.global_step >= cfg.max_steps):
                    break
        finally:
            progress.close()
        out = {}
        for k, v in sums.items():
            total = acc.reduce(v.reshape(1), "mean") if self.distributed else v
            out[k] = float(total.sum()) / max(1, seen)
        if not out:
            out["loss"] = float("nan")  # every step of the epoch was skipped
        return out, skipped

    def _finite_step(self, loss: torch.Tensor, params: list[torch.Tensor], state: RunState) -> bool:
        """Clips gradients and checks the loss and gradient norm are finite (one host sync per optimizer step)."""
        cfg, acc = self.config, self.accelerator
        # Without clipping only the loss is checked (a norm over every gradient would cost a pass per step); a NaN
        # gradient from a finite loss is rare, and an fp16 grad scaler skips overflowing steps itself.
        norm = acc.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
        finite = bool(torch.isfinite(loss.detach()).all()) and (norm is None or bool(torch.isfinite(norm)))
        if finite:
            return True
        if cfg.nonfinite == "skip":
            return False
        last = ckpt.latest_complete(self.ckpt_root)[0] if self.ckpt_root else None
        lr = self.config.lr
        raise TrainingError(
            f"Training diverged at step {state.global_step + 1} (epoch {state.epoch + 1}): the loss is "
            f"{float(loss.detach()):.4g} and the gradient norm {float(norm) if norm is not None else float('nan'):.4g}"
            f". Last good checkpoint: {last or 'none'}. Lower the learning rate (lr={lr:g}), check the data for bad "
            "values, or pass nonfinite='skip' to skip such steps."
        )

    def _step_functions(self, optimizer):
        """backward / optimizer step / zero_grad. Without a gradient scaler (fp32, bf16) on plain or DDP training,
        accelerate's wrappers only forward the calls, but its optimizer wrapper probes for an optional package on
        every step (an importlib lookup, ~0.3-0.7 ms on a CPU): the bare calls keep small models fast."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        plain_types = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
        inner = getattr(optimizer, "optimizer", optimizer)
        if acc.scaler is None and acc.distributed_type in plain_types:
            return (lambda loss: loss.backward()), inner.step, inner.zero_grad
        return acc.backward, optimizer.step, optimizer.zero_grad

    def _lrs(self, optimizer) -> dict[str, float]:
        """The current rate of the pretrained weights (`lr`, the top group) and of the new layers (`lr_new`)."""
        out: dict[str, float] = {}
        for g in optimizer.param_groups:
            name = g.get("name", "")
            if name == "head" and "lr_new" not in out:
                out["lr_new"] = g["lr"]
            elif name.startswith("backbone.") and "lr" not in out:
                out["lr"] = g["lr"]
        out.setdefault("lr", out.get("lr_new", optimizer.param_groups[0]["lr"]))
        return {"lr": out["lr"], "lr_new": out.get("lr_new", out["lr"])}

    def _change_trainable(self, optimizer, old_top: int, new_top: int) -> None:
        if new_top < old_top:
            raise ConfigError("A freeze strategy may only unfreeze more layers over time, not re-freeze them.")
        self.plan.set_trainable(new_top)
        old = set(self.plan.order(old_top))
        for g in self.plan.groups([k for k in self.plan.order(new_top) if k not in old]):
            optimizer.add_param_group(g)
        self._log(f"Unfroze pretrained layer groups: {new_top}/{self.plan.num_groups} now train.")

    @contextlib.contextmanager
    def _ema_weights(self, model: nn.Module):
        """Evaluates (and snapshots) the moving average instead of the raw weights when EMA is on."""
        if self.ema is None:
            yield
            return
        self.ema.swap(model)
        try:
            yield
        finally:
            self.ema.swap(model)

    # --- best, top-k, soup -------------------------------------------------------------------------------------
    def _best_reason(self, row: dict[str, Any]) -> str:
        value = row.get(self.monitor)
        text = f"best {self.monitor}"
        if isinstance(value, float):
            text += f" = {value:.4g}"
        ties = [r for r in self._history_rows() if r.get(self.monitor) == value]
        if len(ties) > 1 and "val/loss" in row:
            text += f" (tied with {len(ties) - 1} other epoch(s); the lowest val/loss {row['val/loss']:.4g} decided)"
        return text

    def _history_rows(self) -> list[dict[str, Any]]:
        return self._ctx.get("history", []) or []

    def _write_best(self, model: nn.Module) -> None:
        folder = self.output_dir / "checkpoints" / "best"
        f = folder / "model.safetensors"
        try:
            ckpt.save_weights(model, f)
            self._best_sha = ckpt.sha256(f)
            ckpt.write_json(
                folder / ckpt.MANIFEST, {"files": {f.name: {"size": f.stat().st_size, "sha256": self._best_sha}}}
            )
        except OSError as e:
            raise self._write_failed(e, f) from None

    def _best_after_resume(self) -> Path | None:
        """The best epoch's weights on disk, verified (and the very file the checkpoint knew); damaged ones are
        dropped with a warning, so the run can finish (the remaining epochs then decide the best)."""
        if not self.config.restore_best or self.best.best_epoch is None:
            return None
        folder = self.output_dir / "checkpoints" / "best"
        problem = ckpt.verify(folder) if folder.is_dir() else "missing"
        if problem is None and self._best_sha is not None:
            listed = ckpt.read_json(folder / ckpt.MANIFEST)["files"].get("model.safetensors", {})
            if listed.get("sha256") != self._best_sha:
                problem = "not the weights this checkpoint recorded (written after it)"
        if problem is None:
            return folder / "model.safetensors"
        if self.is_main:
            warnings.warn(
                f"The best epoch's weights ({folder / 'model.safetensors'}) are unusable ({problem}); the best epoch "
                "will be chosen among the remaining epochs.",
                UserWarning,
                stacklevel=2,
            )
        self.best.load_state_dict({"best": None, "best_epoch": None})
        self._best_sha = None
        return None

    def _keep_topk(self, topk: list[dict[str, Any]], model: nn.Module, value: float, epoch: int, tiebreak) -> None:
        k = self.config.average_top_k
        if math.isnan(value):
            return
        sign = 1 if self.best.mode == "max" else -1
        entry = {"epoch": epoch, "value": value, "tiebreak": tiebreak}
        ranked = sorted(topk + [entry], key=lambda e: (-sign * e["value"], e["tiebreak"] or 0.0))
        if entry not in ranked[:k]:
            return
        dropped = ranked[k:]
        topk[:] = ranked[:k]
        store = self._topk_dir()
        if self.is_main:
            ckpt.save_weights(model, store / f"epoch-{epoch:04d}.safetensors")
            for e in dropped:
                (store / f"epoch-{e['epoch']:04d}.safetensors").unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    def _topk_dir(self) -> Path:
        if self.output_dir is None:
            import tempfile

            if not hasattr(self, "_tmp_topk"):
                self._tmp_topk = tempfile.TemporaryDirectory(prefix="transferkit-topk-")
            return Path(self._tmp_topk.name)
        path = self.output_dir / "checkpoints" / "topk"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _soup(self, topk, model: nn.Module, val_loader):
        from safetensors.torch import load_file

        store = self._topk_dir()
        candidates = [load_file(str(store / f"epoch-{e['epoch']:04d}.safetensors")) for e in topk]
        current = state_from(model)

        cache: dict[int, dict[str, float]] = {}

        def score(weights):
            model.load_state_dict(weights)
            metrics, _ = self._evaluate(val_loader, "val")
            cache[id(weights)] = metrics
            return float(metrics[self.monitor[4:]]) if self.monitor.startswith("val/") else float("nan")

        weights, chosen, value = greedy_soup(candidates, score, self.best.mode)
        if len(chosen) < 2:
            model.load_state_dict(current)
            return None
        model.load_state_dict(weights)
        epochs = [topk[i]["epoch"] + 1 for i in chosen]
        return cache[id(weights)], f"average of the weights of epochs {epochs} ({self.monitor} = {value:.4g})"

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _save_checkpoint(self, state: RunState, epoch: int, *, batches_done: int, epoch_complete: bool) -> None:
        ctx, acc = self._ctx, self.accelerator
        rng_tensors, rng_meta = ckpt.capture_rng()
        rank = acc.process_index
        writer = ckpt.CheckpointWriter(self.ckpt_root, state.global_step, self.is_main, rank, acc.wait_for_everyone)
        try:
            with writer:
                writer.tensors(f"rng-{rank}.safetensors", rng_tensors)
                writer.json(f"rng-{rank}.json", rng_meta)
                if not epoch_complete:  # every process's loss sums of the epoch so far
                    writer.json(f"partial-{rank}.json", ctx["partial"])
                if self.is_main:
                    writer.model(ctx["unwrapped"])
                    tensors, meta = ckpt.optimizer_to_files(ctx["inner_opt"])
                    writer.tensors("optimizer.safetensors", tensors)
                    writer.json("optimizer.json", meta)
                    if self.ema is not None:
                        writer.tensors("ema.safetensors", self.ema.state_tensors())
                    writer.json(
                        ckpt.STATE,
                        {
                            "epoch": epoch,
                            "epoch_complete": epoch_complete,
                            "batches_done": batches_done,
                            "global_step": state.global_step,
                            "n_top": ctx.get("n_top", self._n_top(epoch)),
                            "lr": float(self.config.lr),
                            "history": state.history,
                            "best": self.best.state_dict(),
                            "best_sha256": self._best_sha,
                            "schedule": ctx["schedule"].state_dict(),
                            "callbacks": callback_states(self.callbacks),
                            "early_stopping_watch": (
                                [self.early_stopping.tracker.monitor, self.early_stopping.tracker.mode]
                                if self.early_stopping is not None
                                else None
                            ),
                            "topk": ctx["topk"],
                            "skipped_steps": ctx.get("skipped_steps", 0),
                            "ema_updates": self.ema.updates if self.ema is not None else 0,
                            "world_size": acc.num_processes,
                            "fingerprint": self.fingerprint,
                        },
                    )
        except OSError as e:
            raise self._write_failed(e, writer.final) from None
        if self.is_main:
            ckpt.prune(self.ckpt_root, self.config.keep_checkpoints)
        acc.wait_for_everyone()

    def _write_failed(self, error: OSError, what: Path) -> ArtifactError:
        """The error for a write that failed (a full disk, a read-only folder), naming the last good checkpoint."""
        last = ckpt.latest_complete(self.ckpt_root)[0] if self.ckpt_root is not None else None
        code = errno.errorcode.get(error.errno, str(error.errno)) if error.errno else type(error).__name__
        return ArtifactError(
            f"Writing {what} failed: {error.strerror or error} ({code}). Free space in {self.output_dir} (or make it "
            f"writable), then continue with resume=True; the last good checkpoint is {last or 'none'}."
        )

    def _guard_write(self, what: Path, fn, *args) -> None:
        try:
            fn(*args)
        except OSError as e:
            raise self._write_failed(e, what) from None

    def _load_checkpoint(self, folder: Path, model: nn.Module, optimizer, schedule: Schedule, state: dict):
        """Loads weights, optimizer, schedule and EMA; returns the RNG state to restore once the data iterator of
        the resumed epoch exists, and the epoch's loss sums so far (mid-epoch checkpoints). Any file that cannot be
        read or does not fit is an ArtifactError naming it."""
        from safetensors.torch import load_file

        def tensors(name: str) -> dict[str, torch.Tensor]:
            path = folder / name
            try:
                return load_file(str(path))
            except Exception as e:  # SafetensorError, OSError: a damaged or foreign file
                raise _damaged(path, e) from None

        ckpt.load_weights_into(model, folder / "model.safetensors")
        try:
            opt_state = ckpt.optimizer_from_files(
                tensors("optimizer.safetensors"), ckpt.read_json(folder / "optimizer.json")
            )
            optimizer.load_state_dict(opt_state)
            match_state_layout(optimizer)  # NHWC weights get NHWC moments, as in the uninterrupted run
        except ArtifactError:
            raise
        except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:
            raise ArtifactError(
                f"The optimizer state in {folder} does not fit this run ({e}). Was the model or the freeze strategy "
                "changed? Resume with the original options, or pass overwrite=True to start again."
            ) from None
        try:
            schedule.load_state_dict(state["schedule"])
        except (ValueError, KeyError, TypeError) as e:
            raise _damaged(folder / ckpt.STATE, e) from None
        if self.ema is not None and (folder / "ema.safetensors").is_file():
            try:
                self.ema.load_state_tensors(tensors("ema.safetensors"), int(state.get("ema_updates", 0)))
            except (KeyError, RuntimeError, TypeError, ValueError) as e:
                raise _damaged(folder / "ema.safetensors", e) from None
        self._best_sha = state.get("best_sha256")
        rank = self.accelerator.process_index
        rng_file = folder / f"rng-{rank}.safetensors"
        if not rng_file.is_file():
            raise ArtifactError(f"{rng_file} is missing; the checkpoint is incomplete. Resume from another one.")
        rng = tensors(rng_file.name), ckpt.read_json(folder / f"rng-{rank}.json")
        try:  # restore it once now (then put back what it was) so that a damaged state fails here, not mid-epoch
            current = ckpt.capture_rng()
            ckpt.restore_rng(*rng)
            ckpt.restore_rng(*current)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise _damaged(rng_file, e) from None
        partial = None
        if not state["epoch_complete"]:
            partial = ckpt.read_json(folder / f"partial-{rank}.json")
            if not (isinstance(partial, dict) and isinstance(partial.get("sums"), dict) and "seen" in partial):
                raise _damaged(folder / f"partial-{rank}.json", ValueError("not the loss sums of an epoch"))
        return rng, partial

    # --- learning-rate range test ------------------------------------------------------------------------------
    def _find_lr(self, train_loader) -> float:
        from .lr_finder import find_lr

        result = find_lr(self, train_loader)
        if self.is_main and self.output_dir:
            result.save(self.output_dir)
        self._log(f"lr='auto': the range test suggests lr={result.suggestion:.3g} ({result.reason}).")
        return result.suggestion


def snapshot_if(model: nn.Module, keep: bool):
    return ckpt.snapshot(model) if keep else None


def _named_losses(out: Any) -> dict[str, torch.Tensor]:
    """A train step's loss, or its dict of named losses (summed for backward, each logged)."""
    if isinstance(out, torch.Tensor):
        return {"loss": out}
    if isinstance(out, dict) and out and all(isinstance(v, torch.Tensor) for v in out.values()):
        return {str(k): v for k, v in out.items()}
    raise TypeError(f"train_step must return a loss tensor or a dict of named loss tensors, not {type(out).__name__}.")


_STATE_TYPES = {
    "epoch": int,
    "epoch_complete": bool,
    "batches_done": int,
    "global_step": int,
    "n_top": int,
    "history": list,
    "best": dict,
    "schedule": dict,
}


def _state_problem(state: Any) -> str | None:
    """What is wrong with a checkpoint's state.json (None: it has every entry the resume needs)."""
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__}, not an object"
    for key, kind in _STATE_TYPES.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state.get(key), bool)):
            return f"{key!r} is missing or not a {kind.__name__}"
    if state["epoch"] < 0 or state["global_step"] < 0 or state["batches_done"] < 0:
        return "negative counters"
    return None


def _recorded_epochs(history_csv: Path) -> int:
    """How many epochs a run's history.csv records (0 if there is none)."""
    try:
        lines = history_csv.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    return max(0, len([line for line in lines if line.strip()]) - 1)


def _damaged(path: Path, error: BaseException) -> ArtifactError:
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return ArtifactError(
        f"{path} cannot be used ({type(error).__name__}: {text}); the checkpoint is damaged. Resume from another "
        "checkpoint (resume='<folder>') or pass overwrite=True to start again."
    )


def _why(rejected: list[tuple[Path, str]]) -> str:
    return "" if not rejected else " (" + "; ".join(f"{p.name}: {w}" for p, w in rejected[:3]) + ")"


__all__ = ["FitOutcome", "Trainer", "make_accelerator"]
