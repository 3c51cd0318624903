"""``batch_size="auto"`` and ``epochs="auto"``: a run length from the training-set size, in optimizer steps.

Small labelled sets are where transfer learning is used, and there a fixed batch of 32 and 10 epochs gives a handful
of optimizer steps (160 images: 5 steps an epoch, 50 in all): the pretrained body and its BatchNorm statistics adapt
too late. The classification tasks therefore size the batch so that an epoch has about ``STEPS_PER_EPOCH`` steps, and
run at least ``min_steps`` optimizer steps (and ``min_epochs`` epochs). A number the user gives is used as given.

Measured on ImageNet EfficientNet-Lite0 -> MNIST-5k / 8x8 digits at 64 px, 200 training images (20 per class), lr 1e-3,
median of 2 seeds, test accuracy (benchmarks/efficacy_grids.py, results/efficacy_grids.json)::

    batch 32 x 10 epochs (60 steps)    0.871 / 0.925      plain loop, batch 32:  0.768 / 0.784
    batch 16 x 10 epochs (120 steps)   0.911 / 0.942      plain loop, batch 16:  0.845 / 0.895
    batch  8 x 10 epochs (250 steps)   0.932 / 0.956
    batch 16 x 20 epochs (240 steps)   0.942 / 0.959
    batch  8 x 20 epochs (500 steps)   0.948 / 0.978   <- "auto" for 200 images (the image task's min_steps)
    5 labels/class (50 images): batch 32 x 10 epochs 0.348 / 0.278; batch 8 x 42 epochs (250 steps) 0.817 / 0.907
    50 labels/class (500 images): batch 32 x 10 0.952 / 0.978; batch 16 x 10 0.956 / 0.975

The longer run also makes the result robust to the user's lr: at 500 steps lr 3e-4 / 1e-3 / 3e-3 gave 0.920 /
0.948 / 0.949 (mnist) and 0.943 / 0.978 / 0.977 (digits); at 250 steps 0.865 / 0.925 / 0.943 and 0.892 / 0.955 /
0.967.

MiniLM-L6 -> 300 real tweets (3-class sentiment), lr 5e-5, head x20: batch 32 x 3 epochs (27 steps) 0.642; batch 16 x
6 epochs (108 steps, "auto") 0.681; batch 16 x 10 epochs 0.688; batch 8 x 6 epochs 0.686 (plain transformers loop at
batch 16 x 6: 0.673).

Example:
    >>> auto_batch_size(200, (8, 32)), auto_epochs(200, 8, min_steps=500, min_epochs=10)
    (8, 20)
    >>> auto_batch_size(50, (8, 32)), auto_epochs(50, 8, min_steps=500, min_epochs=10)
    (8, 84)
"""

from __future__ import annotations

import math
from typing import Any

AUTO = "auto"
STEPS_PER_EPOCH = 20  # "auto" batch: the largest power of two that still gives about this many steps an epoch
MAX_AUTO_EPOCHS = 100  # a very small set (a few batches) would otherwise need hundreds of epochs for min_steps (so
# under 5 steps an epoch, an image run has fewer than min_steps steps)


def auto_batch_size(n_train: int, bounds: tuple[int, int]) -> int:
    """The largest power of two <= n_train / STEPS_PER_EPOCH, clamped to `bounds` (low, high)."""
    lo, hi = bounds
    return int(min(hi, max(lo, 2 ** math.floor(math.log2(max(1.0, n_train / STEPS_PER_EPOCH))))))


def steps_per_epoch(n_train: int, batch_size: int, grad_accum_steps: int = 1) -> int:
    """Optimizer steps in one epoch (the training loader drops a last partial batch)."""
    batches = n_train // batch_size if n_train > batch_size else 1
    return max(1, math.ceil(batches / grad_accum_steps))


def auto_epochs(n_train: int, batch_size: int, *, min_steps: int, min_epochs: int, grad_accum_steps: int = 1) -> int:
    """At least `min_epochs` epochs and enough of them for `min_steps` optimizer steps (at most MAX_AUTO_EPOCHS)."""
    per_epoch = steps_per_epoch(n_train, batch_size, grad_accum_steps)
    return int(min(MAX_AUTO_EPOCHS, max(min_epochs, math.ceil(min_steps / per_epoch))))


def resolve_run_length(cfg: Any, task_cls: Any, n_train: int, num_processes: int = 1) -> Any:
    """`cfg` with "auto" batch_size / epochs replaced by numbers for a training set of `n_train` examples (split
    over `num_processes`; batch_size is per process). Unchanged when both are numbers."""
    if cfg.batch_size != AUTO and cfg.epochs != AUTO:
        return cfg
    if task_cls.auto_batch_bounds is None:
        from ..errors import ConfigError

        given = [f"{k}='auto'" for k in ("batch_size", "epochs") if getattr(cfg, k) == AUTO]
        raise ConfigError(
            f"{' and '.join(given)}: an automatic run length is measured for image and text classification only; "
            f"pass a number for {task_cls.name} (its defaults: batch_size={task_cls.defaults.get('batch_size', 32)}, "
            f"epochs={task_cls.defaults.get('epochs', 10)})."
        )
    per_process = max(1, n_train // max(1, num_processes))
    batch = cfg.batch_size
    if batch == AUTO:
        batch = auto_batch_size(per_process, task_cls.auto_batch_bounds)
    epochs = cfg.epochs
    if epochs == AUTO:
        epochs = auto_epochs(
            per_process,
            batch,
            min_steps=task_cls.min_steps,
            min_epochs=task_cls.min_epochs,
            grad_accum_steps=cfg.grad_accum_steps,
        )
    return cfg.replace(batch_size=batch, epochs=epochs)


__all__ = ["AUTO", "auto_batch_size", "auto_epochs", "resolve_run_length", "steps_per_epoch"]
