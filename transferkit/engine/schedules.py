"""Learning-rate schedules as multipliers of each param group's base LR: warmup, then cosine/linear/constant.

A small scheduler of our own rather than torch's LambdaLR because param groups are added mid-run when a frozen
backbone is unfrozen; every group, old or new, follows the same multiplier of its own ``base_lr``.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """The LR multiplier at optimizer step `step` (0-based).

    Example:
        >>> lr_multiplier(0, 100, 10, "cosine"), lr_multiplier(10, 100, 10, "cosine")
        (0.1, 1.0)
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def warmup_steps_for(warmup: float, total_steps: int) -> int:
    """`warmup` < 1 is a fraction of all steps, >= 1 a step count."""
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


class Schedule:
    """Sets ``group["lr"] = group["base_lr"] * multiplier(step)`` on every param group."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int, kind: str = "cosine") -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.kind = kind
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        mult = lr_multiplier(self.step_count, self.total_steps, self.warmup_steps, self.kind)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * mult

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def refresh(self) -> None:
        """Re-applies the current multiplier (call after adding param groups)."""
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
