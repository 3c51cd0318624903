"""Language-model metrics: perplexity from summed token losses (streaming; nothing per token is kept)."""

from __future__ import annotations

import math

import torch

from .base import Metrics, all_reduce_sum


class PerplexityMetrics(Metrics):
    """``exp(total cross-entropy / number of predicted tokens)`` over all batches of an epoch.

    `update` takes ``(loss_sums, token_counts)``: per-sequence sums of token cross-entropy (nats) and the number of
    tokens each sequence predicted (for masked-LM: its masked tokens). Per-sequence values let the engine gather
    them across processes like any other per-example output.

    Example:
        >>> m = PerplexityMetrics()
        >>> m.update((torch.tensor([2.0, 4.0]), torch.tensor([1, 2])))
        >>> round(m.compute()["perplexity"], 3)  # exp(6 / 3)
        7.389
    """

    def __init__(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        sums, counts = outputs
        self.total += sums.detach().double().sum().cpu()
        self.count += counts.detach().double().sum().cpu()

    def sync(self, accelerator) -> None:
        both = all_reduce_sum(torch.stack([self.total, self.count]), accelerator)
        self.total, self.count = both[0], both[1]

    def compute(self) -> dict[str, float]:
        """``loss`` (mean cross-entropy per predicted token) and ``perplexity`` = exp(loss)."""
        if float(self.count) == 0:
            return {"perplexity": float("nan")}
        mean = float(self.total / self.count)
        return {"loss": mean, "perplexity": math.exp(mean) if mean < 700 else float("inf")}
