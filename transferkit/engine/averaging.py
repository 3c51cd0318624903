"""Weight averaging: an exponential moving average of the weights during training (timm's ModelEmaV3 idea), and
the average of the best epochs' weights at the end (a greedy "model soup": an epoch joins only if the average
does not get worse on validation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, for floating-point tensors;
    integer buffers (BatchNorm's counter) are copied. Warmup: the decay starts low, ``min(decay, (1 + n) / (10 + n))``,
    so early averages are not dominated by the random head.

    Example:
        >>> ema = WeightEMA(nn.Linear(2, 2), decay=0.9)
        >>> ema.update(nn.Linear(2, 2))
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.lerp_(v.detach(), 1.0 - d)
            else:
                s.copy_(v)

    def swap(self, model: nn.Module) -> None:
        """Exchanges the model's weights with the average (call twice to swap back)."""
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        self.shadow = current

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        for k, v in tensors.items():
            self.shadow[k].copy_(v)
        self.updates = updates


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors; other tensors from the first state."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def greedy_soup(
    candidates: list[dict[str, torch.Tensor]],
    score: Callable[[dict[str, torch.Tensor]], float],
    mode: str = "max",
) -> tuple[dict[str, torch.Tensor], list[int], float]:
    """Adds candidates (best first) to the average while the score does not get worse.

    Returns (weights, indices of the candidates used, score).
    """
    better: Callable[[float, float], bool] = (lambda a, b: a >= b) if mode == "max" else (lambda a, b: a <= b)
    chosen = [0]
    best = score(candidates[0])
    current = candidates[0]
    for i in range(1, len(candidates)):
        trial = average_state_dicts([candidates[j] for j in chosen + [i]])
        value = score(trial)
        if better(value, best):
            chosen.append(i)
            best, current = value, trial
    return current, chosen, best


def state_from(model: nn.Module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
