"""``lr="auto"``: a learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's ``lr_find``).

A short run raises the rate exponentially from 1e-7 to 1 over up to 100 optimizer steps, with every param group
at its relative rate (new layers at ``head_lr_mult`` times the pretrained rate); the loss is smoothed, and the
test stops once it exceeds four times its minimum. The suggestion is the rate at the minimum divided by 10 (the
rate at the minimum is already on the verge of diverging). Weights, optimizer and every random generator are put
back afterwards, so the real run starts exactly as it would have with that rate given by hand.

Measured against the task defaults on real domain-shifted data (benchmarks/results/efficacy_followups.json, median
of 3 seeds, NCHW runs): ImageNet Lite0 -> MNIST 0.933 vs 0.965 at lr 1e-3, -> digits 0.972 vs 0.975, MiniLM ->
tweets 0.653 vs 0.678 at 5e-5. It found 5e-4..1.2e-3 for Lite0 and 3.5e-5..2.5e-4 for MiniLM: no better than the
defaults where those were measured; useful where nothing is known about a backbone.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .optim import build_optimizer


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    suggestion: float = 1e-3
    reason: str = ""

    def save(self, folder: Path) -> None:
        """Writes ``lr_find.json`` and the plot ``lr_find.png`` (when matplotlib is installed)."""
        folder.mkdir(parents=True, exist_ok=True)
        data = {"lrs": self.lrs, "losses": self.losses, "suggestion": self.suggestion, "reason": self.reason}
        (folder / "lr_find.json").write_text(json.dumps(data, indent=1))
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate of the pretrained weights")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "lr_find.png")
        plt.close(fig)


def find_lr(trainer: Any, train_loader, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100) -> LRFindResult:
    """Runs the range test with the trainer's task, model and param groups (relative rates from its plan)."""
    cfg = trainer.config
    model, task, plan = trainer.model, trainer.task, trainer.plan
    n = max(10, min(steps, len(train_loader) * 5))
    saved = ckpt.snapshot(model)
    rng = ckpt.capture_rng()
    generator = getattr(train_loader, "generator", None)
    gen_state = generator.get_state() if isinstance(generator, torch.Generator) else None
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    plan.set_trainable(trainer._n_top(0))
    unit = cfg.replace(lr=1.0)
    plan.config = unit
    groups = plan.groups(plan.order(trainer._n_top(0)))
    optimizer = build_optimizer(groups, unit)
    base = [g["base_lr"] for g in optimizer.param_groups]
    model.to(trainer.device)
    model.train()
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    batches = iter(())
    try:
        for i in range(n):
            lr = min_lr * (max_lr / min_lr) ** (i / (n - 1))
            for g, b in zip(optimizer.param_groups, base):
                g["lr"] = lr * b
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(train_loader)
                batch = next(batches)
            from .evaluation import to_device

            batch = to_device(batch, trainer.device)
            ctx = trainer.accelerator.autocast() if cfg.mixed_precision != "no" else contextlib.nullcontext()
            with ctx:
                out = task.train_step(model, batch)
            loss = sum(out.values()) if isinstance(out, dict) else out
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            avg = 0.98 * avg + 0.02 * value
            smooth = avg / (1 - 0.98 ** (i + 1))
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            if i > 5 and smooth > 4 * best:
                break
    finally:
        model.load_state_dict(saved)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
            p.grad = None
        ckpt.restore_rng(*rng)
        if gen_state is not None:
            generator.set_state(gen_state)
    if len(losses) < 5:
        return LRFindResult(lrs, losses, 1e-3, "the loss diverged at once; fell back to 1e-3")
    k = min(range(len(losses)), key=losses.__getitem__)
    suggestion = float(min(1e-1, max(1e-6, lrs[k] / 10)))
    return LRFindResult(lrs, losses, suggestion, f"lowest smoothed loss at {lrs[k]:.2g}, divided by 10")
