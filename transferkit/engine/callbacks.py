"""Callbacks observe the run and steer it only by setting flags on a `Control` (as transformers' callbacks do)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import EarlyStopping as EarlyStoppingConfig
from ..errors import ConfigError


@dataclass
class Control:
    """Flags callbacks set; the engine reads them after each hook."""

    should_stop: bool = False


@dataclass
class RunState:
    """What callbacks may read: counters, the model and optimizer, the latest metrics, and the history so far."""

    epoch: int = 0  # 0-based epoch being trained / just finished
    global_step: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    is_main_process: bool = True
    history: list[dict[str, Any]] | None = None
    model: Any = None  # the (unwrapped) model being trained
    optimizer: Any = None
    metrics: dict[str, float] | None = None  # the latest evaluation's metrics, "val/accuracy": ...


class Callback:
    """Base class: every hook is a no-op. Override the ones you need; return nothing.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, state, control, logs):
        ...         print(state.epoch, logs["train/loss"])
    """

    def on_train_start(self, state: RunState, control: Control) -> None: ...
    def on_epoch_start(self, state: RunState, control: Control) -> None: ...
    def on_step_end(self, state: RunState, control: Control, loss: float | None) -> None: ...
    def on_epoch_end(self, state: RunState, control: Control, logs: dict[str, Any]) -> None: ...
    def on_train_end(self, state: RunState, control: Control) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved with every checkpoint under the callback's name."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def state_key(self) -> str:
        """The name its state is saved under (the class name; override when one run holds two of a kind)."""
        return type(self).__name__


def callback_states(callbacks: list[Callback]) -> dict[str, Any]:
    """State of every callback, keyed by name (a second callback of one class gets ``Name#2``)."""
    out: dict[str, Any] = {}
    for cb in callbacks:
        key = cb.state_key
        n = 2
        while key in out:
            key, n = f"{cb.state_key}#{n}", n + 1
        out[key] = cb.state_dict()
    return out


def load_callback_states(callbacks: list[Callback], states: dict[str, Any]) -> list[str]:
    """Restores states saved by `callback_states`; returns the keys that had no callback to go to."""
    used = set()
    seen: dict[str, int] = {}
    for cb in callbacks:
        n = seen.get(cb.state_key, 0) + 1
        seen[cb.state_key] = n
        key = cb.state_key if n == 1 else f"{cb.state_key}#{n}"
        if key in states:
            cb.load_state_dict(states[key])
            used.add(key)
    return sorted(set(states) - used)


def infer_mode(monitor: str) -> str:
    """ "min" for losses and perplexities, "max" for everything else (accuracy, f1, miou, map...)."""
    name = monitor.rsplit("/", 1)[-1]
    return "min" if name in ("loss", "perplexity") or name.endswith("_loss") or name.endswith("error") else "max"


class BestTracker:
    """Tracks the best value of one metric; shared by early stopping and best-checkpoint selection.

    A tie on the metric (e.g. the same accuracy on a small validation set) goes to the epoch with the lower
    validation loss, when the caller passes one.
    """

    def __init__(self, monitor: str, mode: str | None = None, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = mode or infer_mode(monitor)
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode={self.mode!r} must be 'min' or 'max'.")
        self.min_delta = abs(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_tiebreak: float | None = None

    def value(self, logs: dict[str, Any]) -> float:
        if self.monitor not in logs:
            metrics = ", ".join(sorted(k for k in logs if "/" in k))
            raise ConfigError(f"monitor={self.monitor!r} is not among the logged metrics: {metrics}.")
        return float(logs[self.monitor])

    def improved(self, value: float, tiebreak: float | None = None) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        better = value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        if better or value != self.best:
            return better
        return tiebreak is not None and self.best_tiebreak is not None and tiebreak < self.best_tiebreak

    def update(self, value: float, epoch: int, tiebreak: float | None = None) -> bool:
        if tiebreak is not None and math.isnan(tiebreak):
            return False  # a NaN loss never makes a best epoch, whatever the metric says
        if self.improved(value, tiebreak):
            self.best, self.best_epoch, self.best_tiebreak = value, epoch, tiebreak
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_tiebreak": self.best_tiebreak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_tiebreak = state.get("best_tiebreak")


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(self, monitor: str, mode: str | None = None, patience: int = 3, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ConfigError(f"early_stopping patience={patience} must be >= 1.")
        self.tracker = BestTracker(monitor, mode, min_delta)
        self.patience = patience
        self.wait = 0
        self.stopped_epoch: int | None = None

    @classmethod
    def from_config(cls, es: EarlyStoppingConfig, default_monitor: str) -> EarlyStopping:
        return cls(es.monitor or default_monitor, es.mode, es.patience, es.min_delta)

    def on_epoch_end(self, state: RunState, control: Control, logs: dict[str, Any]) -> None:
        if self.tracker.update(self.tracker.value(logs), state.epoch, logs.get("val/loss")):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch
            control.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = state["wait"]
        self.tracker.load_state_dict(state["tracker"])


def write_history(path: Path, history: list[dict[str, Any]], best_epoch: int | None = None) -> None:
    """One row per epoch; with `best_epoch` (1-based) a ``best`` column marks the epoch that was restored."""
    if best_epoch is not None:
        history = [{**row, "best": int(row.get("epoch") == best_epoch)} for row in history]
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def format_logs(logs: dict[str, Any]) -> str:
    parts = []
    for k, v in logs.items():
        if k == "epoch":
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
