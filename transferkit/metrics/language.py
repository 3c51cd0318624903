"""Language-model metrics: perplexity from summed token losses (streaming; nothing per token is kept)."""

from __future__ import annotations

import math

import torch

from ..tasks.base import Metrics


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
        self.total = 0.0
        self.count = 0

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        sums, counts = outputs
        self.total += float(sums.detach().double().sum())
        self.count += int(counts.detach().sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"perplexity": float("nan")}
        mean = self.total / self.count
        return {"perplexity": math.exp(mean) if mean < 700 else float("inf")}
