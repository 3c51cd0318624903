"""The training loop: one Accelerate-powered engine for every task.

The loop is deliberately lean per step (it is measured against a hand-written PyTorch loop in
``benchmarks/engine_overhead.py``): no per-step host syncs, no autocast context when precision is fp32, batches
moved only when the device is not the CPU, and accelerate's dataloader wrappers only when several processes
share the data.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import FinetuneConfig
from ..errors import ConfigError
from ..tasks.base import Splits, Task
from .callbacks import BestTracker, Callback, Control, EarlyStopping, HistoryCSV, RunState, format_logs
from .checkpoint import (
    find_resume_dir,
    load_run_state,
    load_weights_into,
    save_run_state,
    save_weights,
    snapshot,
)
from .freezing import NoFreeze, resolve_freeze, set_frozen_batchnorm_eval
from .optim import ParamGroupPlan, build_optimizer
from .schedules import Schedule, warmup_steps_for


@dataclass
class FitOutcome:
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    stopped_early: bool = False


def make_accelerator(config: FinetuneConfig, find_unused_parameters: bool = False):
    """An Accelerator for this run. In a single process the shared accelerate state is reset first, so that
    runs with different precision settings can follow each other in one Python session."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        AcceleratorState._reset_state()
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision='fp16' needs a CUDA GPU; on the CPU use 'bf16' or 'no'.")
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    # cpu=True on GPU-less machines lets accelerate see a torchrun/`accelerate launch` group as multi-CPU (gloo).
    return Accelerator(
        mixed_precision=config.mixed_precision, kwargs_handlers=handlers, cpu=not torch.cuda.is_available()
    )


def progress(iterable, desc: str, quiet: bool, leave: bool = True):
    """A tqdm bar over `iterable` unless quiet (throttled: a bar costs nothing per step between redraws)."""
    if quiet:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=leave, dynamic_ncols=True, mininterval=0.5)


@torch.no_grad()
def evaluate_model(task: Task, model: nn.Module, loader, accelerator, config: FinetuneConfig, desc: str = "eval"):
    """One no-grad pass over `loader`: mean batch loss plus the task's streaming metrics, gathered over processes."""
    device = accelerator.device
    move = device.type != "cpu" and accelerator.num_processes == 1
    autocast = accelerator.autocast if config.mixed_precision != "no" else contextlib.nullcontext
    was_training = model.training
    model.eval()
    metrics = task.new_metrics()
    loss_sum = torch.zeros((), device=device)
    batches = 0
    quiet = config.quiet or not accelerator.is_main_process
    for batch in progress(loader, desc, quiet=quiet, leave=False):
        if move:
            from accelerate.utils import send_to_device

            batch = send_to_device(batch, device, non_blocking=True)
        with autocast():
            loss, metric_inputs = task.step(model, batch)
        metrics.update(accelerator.gather_for_metrics(metric_inputs))
        loss_sum += loss.detach().float()
        batches += 1
    model.train(was_training)
    out = {"loss": float(accelerator.reduce(loss_sum, "mean")) / max(1, batches)}
    out.update(metrics.compute())
    return out


class Trainer:
    """Fits `model` on `splits` as `task` says, following `config`. Writes checkpoints under `output_dir`."""

    def __init__(
        self, task: Task, model: nn.Module, splits: Splits, config: FinetuneConfig, output_dir: str | Path | None
    ) -> None:
        self.task, self.splits, self.config = task, splits, config
        self.output_dir = Path(output_dir) if output_dir else None
        self.strategy = resolve_freeze(config.freeze, config.unfreeze_epoch)
        self.plan = ParamGroupPlan(model, config)
        if self.plan.num_groups == 0 and not isinstance(self.strategy, NoFreeze):
            raise ConfigError(
                f"freeze={config.freeze!r} needs a model with pretrained layer groups; this one has none."
            )
        self.accelerator = make_accelerator(config, find_unused_parameters=self.strategy.changes_during_training)
        self.distributed = self.accelerator.num_processes > 1
        self.device = self.accelerator.device
        self.move_batches = self.device.type != "cpu" and not self.distributed
        self.model = model
        self.monitor = (
            config.monitor or (config.early_stopping_config and config.early_stopping_config.monitor) or task.monitor
        )
        self.callbacks: list[Callback] = list(config.callbacks)
        es = config.early_stopping_config
        self.early_stopping = EarlyStopping.from_config(es, task.monitor) if es else None
        if self.early_stopping:
            self.callbacks.append(self.early_stopping)
        if self.output_dir:
            self.callbacks.append(HistoryCSV(self.output_dir / "history.csv"))
        self.best = BestTracker(self.monitor, task.monitor_mode if self.monitor == task.monitor else None)

    # --- helpers ------------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool):
        ds = getattr(self.splits, split)
        if ds is None:
            return None
        cfg = self.config
        bs = cfg.batch_size if split == "train" else (cfg.eval_batch_size or 2 * cfg.batch_size)
        return self.task.make_loader(ds, split, bs, shuffle)

    def _to_device(self, batch: Any) -> Any:
        if not self.move_batches:
            return batch
        from accelerate.utils import send_to_device

        return send_to_device(batch, self.device, non_blocking=True)

    def _autocast(self):
        return self.accelerator.autocast() if self.config.mixed_precision != "no" else contextlib.nullcontext()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _n_top(self, epoch: int) -> int:
        return self.strategy.trainable_groups(epoch, self.plan.num_groups)

    def _log(self, text: str) -> None:
        if not self.config.quiet and self.is_main:
            from tqdm.auto import tqdm

            tqdm.write(text)

    # --- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, loader, desc: str = "eval") -> dict[str, float]:
        """Bare metric names -> values for one pass over `loader` (the model's weights as they are now)."""
        return evaluate_model(self.task, self.model, loader, self.accelerator, self.config, desc=desc)

    def _progress(self, iterable, desc: str, leave: bool = True):
        return progress(iterable, desc, quiet=self.config.quiet or not self.is_main, leave=leave)

    # --- training -----------------------------------------------------------------------------------------
    def fit(self) -> FitOutcome:
        cfg, acc = self.config, self.accelerator
        train_loader = self._loader("train", shuffle=True)
        val_loader = self._loader("val", shuffle=False)
        test_loader = self._loader("test", shuffle=False)
        if len(train_loader) == 0:
            raise ConfigError("The training split is empty.")

        resume_dir = find_resume_dir(self.output_dir, cfg.resume) if self.output_dir else None
        run_state = load_run_state(resume_dir) if resume_dir else None
        start_epoch = run_state["epoch"] + 1 if run_state else 0

        # Freeze before `prepare` when the trainable set never changes (DDP then ignores frozen params);
        # otherwise DDP must see every parameter and run with find_unused_parameters.
        n_top = self._n_top(start_epoch)
        if self.strategy.changes_during_training and self.distributed:
            self.plan.set_trainable(self.plan.num_groups)
        else:
            self.plan.set_trainable(n_top)
        groups = self.plan.groups(self.plan.order(n_top))
        if not groups:
            raise ConfigError("Nothing to train: every parameter is frozen (the head has no parameters?).")
        optimizer = build_optimizer(groups, cfg)
        if self.distributed:
            self.model, optimizer, train_loader, val_loader, test_loader = acc.prepare(
                self.model, optimizer, train_loader, val_loader, test_loader
            )
        else:
            self.model, optimizer = acc.prepare(self.model, optimizer)
        if self.strategy.changes_during_training and self.distributed:
            self.plan.set_trainable(n_top)

        steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        schedule = Schedule(optimizer, total_steps, warmup_steps_for(cfg.warmup, total_steps), cfg.schedule)
        acc.register_for_checkpointing(schedule)

        state = RunState(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, is_main_process=self.is_main, history=[])
        control = Control()
        best_weights: dict[str, torch.Tensor] | Path | None = None  # in memory, or on disk after a resume
        if run_state:
            acc.load_state(str(resume_dir))
            state.global_step = run_state["global_step"]
            state.history = run_state["history"]
            self.best.load_state_dict(run_state["best"])
            for cb, cb_state in zip(self.callbacks, run_state.get("callbacks", [])):
                cb.load_state_dict(cb_state)
            best_path = self.output_dir / "checkpoints" / "best" / "model.safetensors"
            if best_path.is_file():
                best_weights = best_path
            self._log(f"Resumed from {resume_dir} after epoch {start_epoch} (step {state.global_step}).")

        for cb in self.callbacks:
            cb.on_train_start(state, control)
        step_hooks = [cb for cb in self.callbacks if type(cb).on_step_end is not Callback.on_step_end]
        unwrapped = acc.unwrap_model(self.model)
        stopped_early = False

        for epoch in range(start_epoch, cfg.epochs):
            if control.should_stop or (cfg.max_steps and state.global_step >= cfg.max_steps):
                break
            state.epoch = epoch
            new_top = self._n_top(epoch)
            if new_top != n_top:
                self._change_trainable(optimizer, n_top, new_top)
                schedule.refresh()
                n_top = new_top
            for cb in self.callbacks:
                cb.on_epoch_start(state, control)
            _reseed(train_loader, cfg.seed, epoch)
            t0 = time.perf_counter()
            train_loss = self._train_epoch(train_loader, optimizer, schedule, state, control, step_hooks)
            logs: dict[str, Any] = {"epoch": epoch + 1, "train/loss": train_loss}
            if val_loader is not None:
                logs.update({f"val/{k}": v for k, v in self.evaluate(val_loader, "val").items()})
            logs["lr"] = optimizer.param_groups[0]["lr"]
            logs["time"] = round(time.perf_counter() - t0, 3)
            state.history.append(logs)
            if self.best.update(self.best.value(logs), epoch):
                best_weights = snapshot(unwrapped) if cfg.restore_best else None
                if self.output_dir and cfg.save_checkpoints and self.is_main:
                    save_weights(unwrapped, self.output_dir / "checkpoints" / "best" / "model.safetensors")
            for cb in self.callbacks:
                cb.on_epoch_end(state, control, logs)
            if self.early_stopping is not None:  # every process stops together
                if control.should_stop:
                    acc.set_trigger()
                control.should_stop = acc.check_trigger()
                stopped_early = control.should_stop
            self._log(f"epoch {epoch + 1}/{cfg.epochs} {format_logs(logs)}")
            if self.output_dir and cfg.save_checkpoints:
                self._save_checkpoint(state, epoch)

        for cb in self.callbacks:
            cb.on_train_end(state, control)

        outcome = FitOutcome(history=state.history, best_epoch=self.best.best_epoch, stopped_early=stopped_early)
        final_row = state.history[-1] if state.history else {}
        if cfg.restore_best and best_weights is not None:
            if isinstance(best_weights, Path):
                load_weights_into(unwrapped, best_weights)
            else:
                unwrapped.load_state_dict(best_weights)
            final_row = next((r for r in state.history if r["epoch"] == self.best.best_epoch + 1), final_row)
        if val_loader is not None and final_row:
            outcome.metrics["val"] = {k[4:]: v for k, v in final_row.items() if k.startswith("val/")}
        if test_loader is not None:
            outcome.metrics["test"] = self.evaluate(test_loader, "test")
        if self.output_dir and self.is_main and cfg.save_checkpoints and self.best.best_epoch is not None:
            outcome.best_checkpoint = str(self.output_dir / "checkpoints" / "best" / "model.safetensors")
        self.model = unwrapped
        return outcome

    def _train_epoch(self, loader, optimizer, schedule, state: RunState, control: Control, step_hooks) -> float:
        cfg, acc, task, model = self.config, self.accelerator, self.task, self.model
        model.train()
        set_frozen_batchnorm_eval(model)
        accum = cfg.grad_accum_steps
        backward, opt_step, zero_grad = self._step_functions(optimizer)
        loss_sum = torch.zeros((), device=self.device)
        n_batches = len(loader)
        desc = f"epoch {state.epoch + 1}/{cfg.epochs}"
        seen = 0
        for i, batch in enumerate(self._progress(loader, desc, leave=False)):
            batch = self._to_device(batch)
            sync = (i + 1) % accum == 0 or i + 1 == n_batches
            ctx = acc.no_sync(model) if (self.distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with self._autocast():
                    loss, _ = task.step(model, batch)
                backward(loss / accum if accum > 1 else loss)
            loss_sum += loss.detach()
            seen += 1
            if not sync:
                continue
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt_step()
            schedule.step()
            zero_grad(set_to_none=True)
            state.global_step += 1
            for cb in step_hooks:
                cb.on_step_end(state, control, loss.detach())
            if control.should_stop or (cfg.max_steps and state.global_step >= cfg.max_steps):
                break
        mean = acc.reduce(loss_sum, "mean") if self.distributed else loss_sum
        return float(mean) / max(1, seen)

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

    def _change_trainable(self, optimizer, old_top: int, new_top: int) -> None:
        if new_top < old_top:
            raise ConfigError("A freeze strategy may only unfreeze more layers over time, not re-freeze them.")
        self.plan.set_trainable(new_top)
        old = set(self.plan.order(old_top))
        for g in self.plan.groups([k for k in self.plan.order(new_top) if k not in old]):
            optimizer.add_param_group(g)
        self._log(f"Unfroze backbone layer groups: {new_top}/{self.plan.num_groups} now train.")

    def _save_checkpoint(self, state: RunState, epoch: int) -> None:
        """checkpoints/last = accelerate state (model, optimizer, schedule, RNG) + run_state.json, written to a
        temporary folder first so that a crash mid-save keeps the previous checkpoint."""
        acc = self.accelerator
        ckpt_root = self.output_dir / "checkpoints"
        tmp = ckpt_root / "last.tmp"
        acc.save_state(str(tmp))
        if self.is_main:
            save_run_state(
                tmp,
                {
                    "epoch": epoch,
                    "global_step": state.global_step,
                    "history": state.history,
                    "best": self.best.state_dict(),
                    "callbacks": [cb.state_dict() for cb in self.callbacks],
                },
            )
            from .checkpoint import replace_dir

            replace_dir(tmp, ckpt_root / "last")
        acc.wait_for_everyone()


def _reseed(loader, seed: int, epoch: int) -> None:
    """Shuffle order depends on (seed, epoch) only, so a resumed run sees the same batches as an uninterrupted one."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed + epoch)


__all__ = ["FitOutcome", "Trainer", "evaluate_model", "load_weights_into", "make_accelerator"]
