"""Run configuration, and the one path every entry point resolves options through.

Precedence, lowest first: engine defaults < the task's defaults < a YAML file or dict (``config=``) < keyword
options (Python) or ``key=value`` overrides and flags (command line, recipes). Values are checked and converted
against each field's type, so ``lr="3e-4"`` (a YAML 1.1 scalar PyYAML leaves as a string) is the number 3e-4,
and a wrong type is one clear error naming the option.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant", "step", "polynomial", "one-cycle", "plateau")
MIXED_PRECISION = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
BATCHNORM_POLICIES = ("auto", "eval-when-frozen", "train", "frozen")
NONFINITE_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class EarlyStopping:
    """Stops training when `monitor` has not improved by `min_delta` for `patience` evaluations."""

    monitor: str | None = None  # None: the run's monitor (``monitor=``), else the task's main metric
    mode: str | None = None  # "max" | "min"; None: inferred from the metric name
    patience: int = 3
    min_delta: float = 0.0


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything the engine needs to know about one run. Task-specific options live in the task's own options.

    Every field is documented by the comment after it; ``transferkit options TASK`` prints them all.

    Example:
        >>> cfg = FinetuneConfig(epochs=5, lr=3e-4)
        >>> cfg.replace(epochs=8).epochs
        8
    """

    # what to train
    backbone: Any = None  # "timm:NAME", "tv:NAME", "smp:NAME", "hf:NAME_OR_FOLDER", or your nn.Module
    pretrained: bool | str = True  # True: the library's weights; False: random init; or a local weights path
    head: Any = None  # a registered head name, an nn.Module, a class or a factory; None: the task's default
    head_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra arguments for the head factory
    output_dir: str | None = None  # where the run is written (default runs/<task>-<time>)
    # optimisation
    epochs: int | Literal["auto"] = 10  # passes over the data; "auto": enough for the task's minimum optimizer steps
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, benchmarks)
    batch_size: int | Literal["auto"] = 32  # training batch size (per process); "auto": from the training-set size
    eval_batch_size: int | None = None  # None: 2 x batch_size (no gradients are kept during evaluation)
    lr: float | str = 1e-3  # learning rate of the pretrained weights; "auto": an LR range test picks it
    head_lr_mult: float = 1.0  # new layers (head, neck, decoder) train at lr * head_lr_mult
    optimizer: str = "adamw"  # "adamw" or "sgd" (with momentum)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.01  # never applied to biases and norm weights
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    schedule: str = "cosine"  # cosine | linear | constant | step | polynomial | one-cycle | plateau
    schedule_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"gamma": 0.1, "step_epochs": 3}
    warmup: float = 0.1  # < 1: fraction of all optimizer steps; >= 1: a number of steps
    grad_accum_steps: int = 1  # optimizer step every N batches
    max_grad_norm: float | None = 1.0  # gradient clipping; None: off
    # transfer
    freeze: Any = "none"  # none | backbone | backbone-then-unfreeze | gradual | top-N, or a FreezeStrategy
    unfreeze_epoch: int = 1  # epochs with a frozen backbone before unfreezing (backbone-then-unfreeze, gradual)
    layer_decay: float | None = None  # e.g. 0.75: each pretrained layer group further from the top gets x0.75
    batchnorm: str = "auto"  # auto (the task's) | eval-when-frozen | train | frozen (FrozenBatchNorm2d)
    # evaluation and stopping
    early_stopping: Any = None  # None/False: off; True: defaults; a dict or EarlyStopping
    monitor: str | None = None  # metric that picks the best epoch (and that early stopping watches)
    restore_best: bool = True  # restore the best epoch's weights at the end
    val_fraction: float = 0.1  # share of the training data held out when no val split is given
    compare: tuple[str, ...] = ()  # also train "scratch" (random init) and/or "probe" (frozen backbone) for contrast
    ema: float | None = None  # e.g. 0.999: keep an exponential moving average of the weights and evaluate it
    average_top_k: int | None = None  # average the weights of the k best epochs at the end (kept if better)
    # machinery
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    channels_last: bool | Literal["auto"] = "auto"  # NHWC conv weights (faster); auto: image classif. and segmentation
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: what accelerate picks
    seed: int = 42  # seeds weights init, data order and augmentation
    num_workers: int = 0  # DataLoader worker processes
    resume: bool | str = False  # True: continue the run in output_dir; a path: that checkpoint
    overwrite: bool = False  # replace a run already in output_dir
    save_checkpoints: bool = True  # write checkpoints for resume (and the best epoch's weights)
    save_every_steps: int | None = None  # also checkpoint every N optimizer steps (mid-epoch resume)
    keep_checkpoints: int = 1  # resumable checkpoints kept (newest first)
    keep_resume_state: bool = True  # False: delete the resume checkpoints once the run has finished
    nonfinite: str = "error"  # a NaN/inf loss or gradient: "error" stops the run, "skip" skips the step
    log_with: Any = None  # accelerate trackers, e.g. "tensorboard", "mlflow", "wandb" (history.csv always)
    quiet: bool = False  # no progress output
    report: bool = True  # write report.html (and its figures) at the end of the run
    callbacks: tuple[Any, ...] = ()  # Callback objects

    def __post_init__(self) -> None:
        from .engine.freezing import resolve_freeze

        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, str):
                _check(value == "auto", name, value, "an integer >= 1, or 'auto'")
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
                _check(ok, name, value, "an integer >= 1, or 'auto'")
        if isinstance(self.lr, str):
            _check(self.lr == "auto", "lr", self.lr, "a positive float such as 1e-3, or 'auto'")
        else:
            _check(self.lr > 0, "lr", self.lr, "a positive float such as 1e-3")
        _check(self.head_lr_mult > 0, "head_lr_mult", self.head_lr_mult, "a float > 0")
        _check(self.grad_accum_steps >= 1, "grad_accum_steps", self.grad_accum_steps, "an integer >= 1")
        _check(self.warmup >= 0, "warmup", self.warmup, "a fraction in [0, 1) or a step count")
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "a fraction in (0, 1)")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _check(self.batchnorm in BATCHNORM_POLICIES, "batchnorm", self.batchnorm, f"one of {BATCHNORM_POLICIES}")
        _check(self.nonfinite in NONFINITE_POLICIES, "nonfinite", self.nonfinite, f"one of {NONFINITE_POLICIES}")
        ok = isinstance(self.channels_last, bool) or self.channels_last == "auto"
        _check(ok, "channels_last", self.channels_last, "True, False or 'auto'")
        _check(self.mixed_precision in MIXED_PRECISION, "mixed_precision", self.mixed_precision, str(MIXED_PRECISION))
        if self.overwrite and self.resume:
            raise ConfigError("overwrite=True and resume=True contradict each other: pass one (resume continues the "
                              "run in output_dir, overwrite starts a new one there).")  # fmt: skip
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0 (0: load in the main process)")
        if self.save_every_steps is not None:
            _check(self.save_every_steps >= 1, "save_every_steps", self.save_every_steps, "an integer >= 1")
        if self.max_steps is not None:
            _check(self.max_steps >= 1, "max_steps", self.max_steps, "an integer >= 1")
        if self.layer_decay is not None:
            _check(0 < self.layer_decay <= 1, "layer_decay", self.layer_decay, "a float in (0, 1], e.g. 0.75")
        if self.ema is not None:
            _check(0 < self.ema < 1, "ema", self.ema, "a decay in (0, 1), e.g. 0.999")
        if self.average_top_k is not None:
            _check(self.average_top_k >= 2, "average_top_k", self.average_top_k, "an integer >= 2")
        if self.device is not None:
            _check(
                self.device == "cpu" or self.device.split(":")[0] in ("cuda", "mps", "xpu"),
                "device",
                self.device,
                "'cpu', 'cuda' or 'cuda:N'",
            )
        unknown = [c for c in self.compare if c not in ("scratch", "probe")]
        _check(not unknown, "compare", self.compare, "a list of 'scratch' and/or 'probe'")
        resolve_freeze(self.freeze, self.unfreeze_epoch)  # one vocabulary: the engine's own parser
        self.early_stopping_config  # noqa: B018 - validates the early_stopping value

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
            known, unknown = split_known(dict(es), EarlyStopping)
            raise_unknown_options(unknown, field_names(EarlyStopping), what="early_stopping key")
            return EarlyStopping(**coerce(EarlyStopping, known, prefix="early_stopping."))
        raise ConfigError(
            f"early_stopping={es!r} is not understood; pass True, a dict such as "
            "{'monitor': 'val/accuracy', 'patience': 3}, or an EarlyStopping."
        )


def _check(ok: bool, name: str, value: Any, want: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid; expected {want}.")


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its one-line description: the comment after the field in the source, or the class
    docstring's ``Attributes:`` entry."""
    import inspect
    import re

    docs: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = ""
    for line in source.splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            docs[m.group(1)] = m.group(2).strip()
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" in doc:
        current = None
        for line in doc.split("Attributes:", 1)[1].splitlines():
            m = re.match(r"\s{4}(\w+): (.*)", line)
            if m:
                current = m.group(1)
                docs.setdefault(current, m.group(2).strip())
            elif current and line.startswith("        ") and current in docs:
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break
    return docs


def split_known(options: Mapping[str, Any], cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
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


def raise_unknown_options(unknown: Mapping[str, Any], valid: list[str], what: str = "option") -> None:
    if not unknown:
        return
    for key in unknown:
        if key in REPLACED_OPTIONS:
            raise ConfigError(REPLACED_OPTIONS[key])
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise ConfigError(f"Unknown {what}(s): {', '.join(parts)}. Valid: {', '.join(sorted(valid))}.")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file into a dict (a missing or malformed file is a ConfigError)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"Config {str(p)!r} is a folder; pass a YAML file such as recipes/configs/x/default.yaml.")
    if not p.is_file():
        raise ConfigError(f"Config file {str(p)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"Config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(p)!r} must hold a mapping of option: value.")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parses one `key=value` command-line override; the value is read as a YAML scalar (numbers, lists, booleans).

    Example:
        >>> parse_override("lr=1e-3"), parse_override("freeze=top-2")
        (('lr', '1e-3'), ('freeze', 'top-2'))
    """
    import yaml

    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key=value, e.g. epochs=5.")
    key, _, raw = text.partition("=")
    if not key.strip():
        raise ConfigError(f"Override {text!r} has no key before '='; write key=value, e.g. epochs=5.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().replace("-", "_"), value


# --- types -----------------------------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(cls: type, options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Checks and converts option values against the dataclass field types of `cls`.

    Strings from YAML or the command line become numbers or booleans where the field wants one; a value that
    cannot be one raises a ConfigError naming the option and the expected type.

    Example:
        >>> coerce(FinetuneConfig, {"lr": "3e-4", "epochs": 5.0, "quiet": "yes"})
        {'lr': 0.0003, 'epochs': 5, 'quiet': True}
    """
    hints = _hints(cls)
    return {k: _convert(f"{prefix}{k}", v, hints.get(k, Any)) for k, v in options.items()}


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _convert(name: str, value: Any, tp: Any) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return None
        # bool before numbers (True is an int), numbers before str ("1e-3" for `lr: float | str` is the number)
        for member in sorted((m for m in members if m is not type(None)), key=_strictness):
            try:
                return _convert(name, value, member)
            except ConfigError:
                continue
        raise ConfigError(f"{name}={value!r} is invalid; expected {_describe(tp)}.")
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice or (isinstance(value, str) and value.strip().lower() == str(choice)):
                return choice
        raise ConfigError(f"{name}={value!r} is invalid; expected {_describe(tp)}.")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name}={value!r} is invalid; expected null/None.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise ConfigError(f"{name}={value!r} is invalid; expected true or false.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is invalid; expected an integer.")
        if isinstance(value, int):
            return value
        number = _number(value)
        if number is not None and float(number).is_integer():
            return int(number)
        raise ConfigError(f"{name}={value!r} is invalid; expected an integer.")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is invalid; expected a number.")
        number = _number(value)
        if number is not None:
            return float(number)
        raise ConfigError(f"{name}={value!r} is invalid; expected a number such as 1e-3.")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
        raise ConfigError(f"{name}={value!r} is invalid; expected a string.")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} is invalid; expected a list such as {_example(tp)}.")
        if args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{name}={value!r} is invalid; expected {len(args)} values such as {_example(tp)}.")
            return tuple(_convert(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        return tuple(value)
    if origin in (Mapping, dict) or tp in (dict, Mapping):
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f"{name}={value!r} is invalid; expected a mapping such as {{key: value}}.")
    return value


def _strictness(tp: Any) -> int:
    if typing.get_origin(tp) is Literal:
        return 3
    return {bool: 0, int: 1, float: 2, str: 4}.get(tp, 3)


def _number(value: Any) -> float | int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _describe(tp: Any) -> str:
    names = []
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(c) for c in typing.get_args(tp))
    for m in typing.get_args(tp):
        if typing.get_origin(m) is Literal:
            names.append(_describe(m))
            continue
        names.append({type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
                     .get(m, getattr(m, "__name__", str(m))))  # fmt: skip
    return " or ".join(names)


def _example(tp: Any) -> str:
    return "[0.9, 0.999]" if typing.get_args(tp) and typing.get_args(tp)[0] is float else "[1, 2]"


# --- resolution ----------------------------------------------------------------------------------------------


def resolve_options(task_cls: Any, config: str | Path | Mapping[str, Any] | None, options: Mapping[str, Any]):
    """defaults < task defaults < `config` (YAML file or dict) < `options`; split into engine and task options.

    Returns:
        ``(FinetuneConfig, task options object or None, extra)`` where `extra` holds the non-option keys a config
        may carry (``task``, ``data``).
    """
    explicit: dict[str, Any] = {}
    if config is not None:
        explicit.update(load_yaml(config) if isinstance(config, (str, Path)) else dict(config))
    explicit.update({k: v for k, v in options.items()})
    extra = {k: explicit.pop(k) for k in ("task", "data") if k in explicit}
    merged: dict[str, Any] = {**task_cls.defaults, **explicit}
    engine_opts, rest = split_known(merged, FinetuneConfig)
    task_opts: dict[str, Any] = {}
    if task_cls.Options is not None:
        task_opts, rest = split_known(rest, task_cls.Options)
    valid = field_names(FinetuneConfig) + (field_names(task_cls.Options) if task_cls.Options else [])
    raise_unknown_options(rest, valid)
    cfg = FinetuneConfig(**coerce(FinetuneConfig, engine_opts))
    try:
        opts = task_cls.Options(**coerce(task_cls.Options, task_opts)) if task_cls.Options else None
    except TypeError as e:
        raise ConfigError(f"Bad option for task {task_cls.name!r}: {e}") from None
    return cfg, opts, extra
