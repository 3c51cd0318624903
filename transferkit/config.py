"""Frozen run configuration: defaults <- task defaults <- YAML file <- keyword arguments."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
FREEZE_STRATEGIES = ("none", "backbone", "backbone-then-unfreeze")


@dataclass(frozen=True)
class EarlyStopping:
    """Stops training when `monitor` has not improved by `min_delta` for `patience` evaluations."""

    monitor: str | None = None  # None: the task's main metric, e.g. "val/accuracy"
    mode: str | None = None  # "max" | "min"; None: inferred from the metric name
    patience: int = 3
    min_delta: float = 0.0


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything the engine needs to know about one run. Task-specific options live in the task's own options.

    Example:
        >>> cfg = FinetuneConfig(epochs=5, lr=3e-4)
        >>> cfg.replace(epochs=8).epochs
        8
    """

    # what to train
    backbone: Any = None
    pretrained: bool | str = True
    head: Any = None  # None: the task's default head
    head_kwargs: Mapping[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    # optimisation
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (benchmarks, smoke runs)
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: 2 x batch_size (no gradients are kept during evaluation)
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup: float = 0.1  # < 1: fraction of all optimizer steps; >= 1: a number of steps
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    # transfer
    freeze: Any = "none"  # a strategy name (FREEZE_STRATEGIES) or a FreezeStrategy object
    unfreeze_epoch: int = 1  # with "backbone-then-unfreeze": epochs trained with a frozen backbone
    head_lr_mult: float = 1.0  # new layers (head, neck, decoder) train at lr * head_lr_mult; lr is the pretrained rate
    layer_decay: float | None = None  # e.g. 0.75: each pretrained layer group further from the top gets x0.75
    # evaluation and stopping
    early_stopping: Any = None  # None/False: off; True: defaults; dict or EarlyStopping: as given
    monitor: str | None = None  # metric that picks the best epoch; None: the task's main metric
    restore_best: bool = True
    val_fraction: float = 0.1
    # machinery
    mixed_precision: str = "no"
    seed: int = 42
    num_workers: int = 0
    resume: bool | str = False  # True: the newest checkpoint in output_dir; a path: that checkpoint
    save_checkpoints: bool = True
    quiet: bool = False
    callbacks: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(self.lr > 0, "lr", self.lr, "a positive float such as 1e-3")
        _check(self.grad_accum_steps >= 1, "grad_accum_steps", self.grad_accum_steps, "an integer >= 1")
        _check(self.warmup >= 0, "warmup", self.warmup, "a fraction in [0, 1) or a step count")
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a fraction in (0, 1)")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision, str(MIXED_PRECISION))
        if isinstance(self.freeze, str):
            _check(self.freeze in FREEZE_STRATEGIES, "freeze", self.freeze, f"one of {FREEZE_STRATEGIES}")
        if self.layer_decay is not None:
            _check(0 < self.layer_decay <= 1, "layer_decay", self.layer_decay, "a float in (0, 1], e.g. 0.75")
        _check(self.head_lr_mult > 0, "head_lr_mult", self.head_lr_mult, "a float > 0")

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes)

    @property
    def early_stopping_config(self) -> EarlyStopping | None:
        es = self.early_stopping
        if es is None or es is False:
            return None
        if es is True:
            return EarlyStopping()
        if isinstance(es, EarlyStopping):
            return es
        if isinstance(es, Mapping):
            return EarlyStopping(**split_known(dict(es), EarlyStopping, "early_stopping")[0])
        raise ConfigError(
            f"early_stopping={es!r} is not understood; pass True, a dict such as "
            "{'monitor': 'val/accuracy', 'patience': 3}, or an EarlyStopping."
        )


def _check(ok: bool, name: str, value: Any, want: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid; expected {want}.")


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def split_known(options: dict[str, Any], cls: type, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits `options` into those that are fields of dataclass `cls` and the rest."""
    names = set(field_names(cls))
    known = {k: v for k, v in options.items() if k in names}
    rest = {k: v for k, v in options.items() if k not in names}
    return known, rest


# Options that were renamed or removed: the old name must fail loudly, never mean something else silently.
REPLACED_OPTIONS = {
    "backbone_lr_mult": (
        "backbone_lr_mult was removed: `lr` is now the learning rate of the pretrained weights (as in transformers, "
        "timm and torchvision), and newly initialised layers train at lr * head_lr_mult. For the old "
        "lr=1e-3, backbone_lr_mult=0.1 pass lr=1e-4, head_lr_mult=10."
    ),
}


def raise_unknown_options(unknown: Mapping[str, Any], valid: list[str]) -> None:
    if not unknown:
        return
    for key in unknown:
        if key in REPLACED_OPTIONS:
            raise ConfigError(REPLACED_OPTIONS[key])
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise ConfigError(f"Unknown option(s): {', '.join(parts)}. Valid options: {', '.join(sorted(valid))}.")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file into a dict (a missing or malformed file is a ConfigError)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(p)!r} must hold a mapping of option: value.")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parses one `key=value` command-line override; the value is read as YAML (numbers, lists, booleans)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key=value, e.g. epochs=5.")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().replace("-", "_"), value


def coerce(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Turns YAML lists into tuples where the dataclass field is a tuple (frozen configs stay hashable-ish)."""
    out = dict(options)
    for f in fields(cls):
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return out
