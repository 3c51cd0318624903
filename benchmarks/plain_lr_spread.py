"""The LR-robustness spread of the plain hand-written fine-tune, next to transferkit's, on the image workloads.

``benchmarks/transfer_efficacy.py`` measures how far ``tk.finetune``'s test accuracy moves across a 10x range of
``lr`` (3e-4 / 1e-3 / 3e-3). This runs the plain reference of that benchmark (``plain_reference.plain_vision``:
AdamW on every weight, warmup + cosine, the same splits, epochs, batch size and NHWC layout) at the two ends of the
same range, takes its 1e-3 runs from ``results/transfer_efficacy.json`` (the same code, splits and seeds), and
prints both spreads side by side: how much of the spread belongs to the problem rather than to transferkit.

    python benchmarks/plain_lr_spread.py [--seeds 0 1 2] [--workers 2]

Writes ``benchmarks/results/plain_lr_spread.json`` and one ``RESULT <workload> plain_spread=... tk_spread=...``
line per image workload. Needs a finished (non-quick) ``transfer_efficacy.json`` with the LR range.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import transfer_efficacy as te  # noqa: E402

RESULTS = te.RESULTS.with_name("plain_lr_spread.json")
IMAGE_WORKLOADS = [w for w in te.WORKLOADS if te.domain(w) == "image"]


def run_plain(job: tuple[str, int, float]) -> tuple[str, int, float, dict]:
    """The plain fine-tune of `workload`'s split for `seed` at `lr`, with the run length tk's defaults pick."""
    import torch

    from benchmarks import plain_reference as plain

    workload, seed, lr = job
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix=f"tk-plainlr-{workload}-") as tmp:
        root = te.write_data(workload, seed, Path(tmp) / "data")
        rec = te.recommended_options("image", te._train_size(workload, root))
        out = plain.plain_vision(root, epochs=rec["epochs"], batch_size=rec["batch_size"], lr=lr,
                                 image_size=te.IMAGE_SIZE, seed=seed, val_every_epoch=False,
                                 channels_last=True)  # fmt: skip
    return workload, seed, lr, {k: out[k] for k in ("test_accuracy", "val_accuracy", "steps", "seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    eff = json.loads(te.RESULTS.read_text())
    if eff.get("quick") or "lr_spread_points" not in next(iter(eff["results"].values())):
        sys.exit(f"{te.RESULTS} is a quick run or has no LR range; run benchmarks/transfer_efficacy.py first")
    lo, mid, hi = te.LR_RANGE["image"]
    if te.PLAIN_LR["image"] != mid:
        sys.exit("the plain reference's rate is not the middle of the LR range; this comparison assumes it is")
    jobs = [(w, s, lr) for w in IMAGE_WORKLOADS for s in args.seeds for lr in (lo, hi)]
    t0 = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            done = list(pool.imap_unordered(run_plain, jobs))
    else:
        done = [run_plain(j) for j in jobs]
    results = {}
    for w in IMAGE_WORKLOADS:
        seeds_run = eff["results"][w]["seeds"]
        if sorted(seeds_run) != sorted(args.seeds):
            sys.exit(f"{w}: transfer_efficacy.json has seeds {seeds_run}, this run {args.seeds}")
        runs = {f"{lr:g}": {s: out for ww, s, r, out in done if ww == w and r == lr} for lr in (lo, hi)}
        runs[f"{mid:g}"] = dict(zip(seeds_run, eff["results"][w]["runs"]["plain"]))
        acc = {lr: statistics.median(r["test_accuracy"] for r in by_seed.values()) for lr, by_seed in runs.items()}
        plain_spread = 100 * (max(acc.values()) - min(acc.values()))
        tk_acc = eff["results"][w]["lr_accuracy"]
        results[w] = {"plain_lr_accuracy": acc, "plain_spread_points": plain_spread, "tk_lr_accuracy": tk_acc,
                      "tk_spread_points": eff["results"][w]["lr_spread_points"], "plain_runs": runs}  # fmt: skip
        print(
            f"RESULT {w} plain_spread={plain_spread:.1f}pt tk_spread={results[w]['tk_spread_points']:.1f}pt "
            "plain_acc=" + ",".join(f"{k}:{v:.3f}" for k, v in acc.items()) + " tk_acc=" + ",".join(
                f"{k}:{v:.3f}" for k, v in tk_acc.items()),
            flush=True,
        )  # fmt: skip
    report = {"benchmark": "plain_lr_spread", "seeds": args.seeds, "lr_range": [lo, mid, hi], "results": results,
              "wall_seconds": time.perf_counter() - t0}  # fmt: skip
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
