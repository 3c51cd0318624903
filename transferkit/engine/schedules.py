"""Learning-rate schedules as multipliers of each param group's base LR.

Warmup, then cosine / linear / constant / step / polynomial decay, Smith's one-cycle, or reduce-on-plateau. A
small scheduler of our own rather than torch's because param groups are added mid-run when a frozen backbone is
unfrozen; every group, old or new, follows the same multiplier of its own ``base_lr``, so the relative rates of
the pretrained groups and the new layers (``head_lr_mult``, ``layer_decay``) hold throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer

from ..errors import ConfigError

# Keyword arguments each schedule accepts (``schedule_kwargs``), with their defaults.
SCHEDULE_KWARGS: dict[str, dict[str, Any]] = {
    "cosine": {"min_lr_ratio": 0.0},
    "linear": {"min_lr_ratio": 0.0},
    "constant": {},
    "step": {"gamma": 0.1, "step_epochs": None, "milestones": None},
    "polynomial": {"power": 2.0, "min_lr_ratio": 0.0},
    "one-cycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
    "plateau": {"factor": 0.1, "patience": 2, "min_lr_ratio": 1e-3, "mode": None},
}


def schedule_options(kind: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schedule's options with defaults filled in; an unknown key is a ConfigError naming the valid ones."""
    if kind not in SCHEDULE_KWARGS:
        raise ConfigError(f"schedule={kind!r} is unknown; choose one of {tuple(SCHEDULE_KWARGS)}.")
    allowed = SCHEDULE_KWARGS[kind]
    unknown = sorted(set(kwargs or {}) - set(allowed))
    if unknown:
        raise ConfigError(
            f"schedule_kwargs {unknown} do not apply to schedule={kind!r}; it takes {sorted(allowed) or 'none'}."
        )
    return {**allowed, **(kwargs or {})}


def lr_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    kind: str,
    options: Mapping[str, Any] | None = None,
    steps_per_epoch: int = 1,
) -> float:
    """The LR multiplier at optimizer step `step` (0-based); plateau's epoch-level factor is applied separately.

    Example:
        >>> lr_multiplier(0, 100, 10, "cosine"), lr_multiplier(10, 100, 10, "cosine")
        (0.1, 1.0)
    """
    o = schedule_options(kind, options)
    if kind == "one-cycle":  # its own warmup: lr/div_factor -> lr (cosine), then cosine down to lr/final_div
        up = max(1, int(round(o["pct_start"] * total_steps)))
        start, end = 1.0 / o["div_factor"], 1.0 / (o["div_factor"] * o["final_div_factor"])
        if step < up:
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * step / up))
        p = min(1.0, (step - up) / max(1, total_steps - up))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = float(o.get("min_lr_ratio", 0.0) or 0.0)
    if kind in ("constant", "plateau"):
        return 1.0
    if kind == "linear":
        return floor + (1.0 - floor) * max(0.0, 1.0 - progress)
    if kind == "polynomial":
        return floor + (1.0 - floor) * (1.0 - progress) ** float(o["power"])
    if kind == "step":
        epoch = step // max(1, steps_per_epoch)
        if o["milestones"]:
            passed = sum(1 for m in o["milestones"] if epoch >= int(m))
        else:
            every = o["step_epochs"] or max(1, math.ceil(total_steps / max(1, steps_per_epoch) / 3))
            passed = epoch // int(every)
        return float(o["gamma"]) ** passed
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def warmup_steps_for(warmup: float, total_steps: int) -> int:
    """`warmup` < 1 is a fraction of all steps, >= 1 a step count."""
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


class Schedule:
    """Sets ``group["lr"] = group["base_lr"] * multiplier(step) * plateau factor`` on every param group."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        kind: str = "cosine",
        options: Mapping[str, Any] | None = None,
        steps_per_epoch: int = 1,
        monitor_mode: str = "max",
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.kind = kind
        self.options = schedule_options(kind, options)
        self.steps_per_epoch = steps_per_epoch
        self.step_count = 0
        # reduce-on-plateau state
        self.plateau_factor = 1.0
        self.plateau_best: float | None = None
        self.plateau_wait = 0
        self.plateau_mode = self.options.get("mode") or monitor_mode
        self._apply()

    def multiplier(self) -> float:
        m = lr_multiplier(
            self.step_count, self.total_steps, self.warmup_steps, self.kind, self.options, self.steps_per_epoch
        )
        return m * self.plateau_factor

    def _apply(self) -> None:
        mult = self.multiplier()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * mult

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def refresh(self) -> None:
        """Re-applies the current multiplier (call after adding param groups)."""
        self._apply()

    def epoch_end(self, value: float | None) -> bool:
        """Reduce-on-plateau: lowers the LR when `value` (the monitored metric) stalled; True if it did."""
        if self.kind != "plateau" or value is None or math.isnan(value):
            return False
        better = (
            self.plateau_best is None
            or (self.plateau_mode == "max" and value > self.plateau_best)
            or (self.plateau_mode == "min" and value < self.plateau_best)
        )
        if better:
            self.plateau_best, self.plateau_wait = value, 0
            return False
        self.plateau_wait += 1
        if self.plateau_wait < int(self.options["patience"]):
            return False
        floor = float(self.options["min_lr_ratio"])
        self.plateau_factor = max(floor, self.plateau_factor * float(self.options["factor"]))
        self.plateau_wait = 0
        self._apply()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "plateau_factor": self.plateau_factor,
            "plateau_best": self.plateau_best,
            "plateau_wait": self.plateau_wait,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_factor = float(state.get("plateau_factor", 1.0))
        self.plateau_best = state.get("plateau_best")
        self.plateau_wait = int(state.get("plateau_wait", 0))
        self._apply()
