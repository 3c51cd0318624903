"""Which epoch's weights to keep: the rules for picking the final model, compared offline on real data.

Each run is ``tk.finetune`` at the task defaults on a workload of ``benchmarks/transfer_efficacy.py`` (the same
seeded splits), with ``restore_best=False`` and a callback that keeps every epoch's weights in memory. After the run
every epoch's weights are tested, so any selection rule can be scored on the same runs without training again:

- ``best``: the highest val accuracy, ties to the lower val loss (what ``restore_best=True`` does);
- ``final``: the last epoch (what ``restore_best=False`` does);
- ``latest_within_1se``: the latest epoch whose val accuracy is within one binomial standard error of the best;
- ``final_unless_1se``: the final epoch unless the best beats it by more than one standard error;
- ``min_val_loss``: the lowest val loss;
- ``soup_last5``: the uniform average of the last five epochs' weights (BatchNorm statistics averaged too).

Why: with 10 validation images per class, the best of 20 noisy val accuracies is partly noise (a val accuracy of
0.95 on 100 images has a standard error of 2.2 points), and the restored epoch can be worse on the test set than the
final one. Output: one ``RESULT <workload> <rule> ...`` line per rule with median test accuracy per learning rate and
the LR spread, and ``benchmarks/results/checkpoint_selection.json`` (every run's per-epoch val and test accuracy).
Runs are appended to ``checkpoint_selection.partial.jsonl`` as they end, so an interrupted run resumes.

Stored results (``results/checkpoint_selection.json``): lite0_mnist at lr 3e-4 and 1e-3, 3 seeds, at the task
defaults (no head dropout: ``head_dropout: []`` in each run); lr 3e-3 and lite0_digits were not run.

Run: ``python benchmarks/checkpoint_selection.py [--workloads lite0_mnist lite0_digits] [--seeds 0 1 2]`` (18 runs,
about 17 min with 2 workers on 2 cores).
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
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import transfer_efficacy as te  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint_selection.json"


def run_one(job: tuple[str, int, float]) -> dict:
    """One tk.finetune run; returns every epoch's val accuracy / loss and test accuracy, and the last-5 soup."""
    import torch

    import transferkit as tk
    from transferkit.engine.callbacks import Callback

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    workload, seed, lr = job
    snaps: list[dict[str, torch.Tensor]] = []

    class KeepEveryEpoch(Callback):
        def on_epoch_end(self, state, control, logs) -> None:
            snaps.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})

    with tempfile.TemporaryDirectory(prefix=f"tk-sel-{workload}-") as tmp:
        root = te.write_data(workload, seed, Path(tmp) / "data")
        out = Path(tmp) / "run"
        task, data, kw = te.tk_inputs(workload, root)
        if te.domain(workload) == "text":
            inputs, labels = te.plain.read_csv(root / "test.csv")
        else:
            files = sorted((root / "test").rglob("*.png"))
            inputs, labels = [str(f) for f in files], [f.parent.name for f in files]
        res = tk.finetune(
            task, data=data, output_dir=str(out), quiet=True, save_checkpoints=False, report=False, seed=seed, lr=lr,
            restore_best=False, callbacks=(KeepEveryEpoch(),), **kw,
        )  # fmt: skip
        predictor = tk.load(str(out))

        def test_accuracy(weights: dict[str, torch.Tensor]) -> float:
            predictor.model.load_state_dict(weights)
            preds = predictor.predict(inputs, batch_size=64)
            return sum(str(p["label"]) == str(y) for p, y in zip(preds, labels)) / len(labels)

        test = [test_accuracy(s) for s in snaps]
        last = snaps[-5:]
        soup = {
            k: (sum(s[k].double() for s in last) / len(last)).to(v.dtype) if v.is_floating_point() else v
            for k, v in snaps[-1].items()
        }
        soup_acc = test_accuracy(soup)
    return {
        "workload": workload,
        "seed": seed,
        "lr": lr,
        "n_val": realdata_val_size(workload),
        "head_dropout": [m.p for m in res.model.head.modules() if isinstance(m, torch.nn.Dropout)],
        "val_acc": [h["val/accuracy"] for h in res.history],
        "val_loss": [h["val/loss"] for h in res.history],
        "test_acc": test,
        "soup_last5": soup_acc,
    }


def realdata_val_size(workload: str) -> int:
    spec = te.WORKLOADS[workload]
    classes = 3 if spec["data"] == "tweets" else 10
    return spec["val_per_class"] * classes


def _se(run: dict) -> float:
    p = max(run["val_acc"])
    return math.sqrt(max(p * (1 - p), 1.0 / run["n_val"]) / run["n_val"])


def pick_best(run: dict) -> int:
    best = 0
    for i, (a, loss) in enumerate(zip(run["val_acc"], run["val_loss"])):
        if a > run["val_acc"][best] or (a == run["val_acc"][best] and loss < run["val_loss"][best]):
            best = i
    return best


RULES = {
    "best": pick_best,
    "final": lambda r: len(r["val_acc"]) - 1,
    "latest_within_1se": lambda r: max(
        i for i, a in enumerate(r["val_acc"]) if a >= max(r["val_acc"]) - _se(r) - 1e-9
    ),
    "final_unless_1se": lambda r: (
        len(r["val_acc"]) - 1 if r["val_acc"][-1] >= r["val_acc"][pick_best(r)] - _se(r) - 1e-9 else pick_best(r)
    ),
    "min_val_loss": lambda r: min(range(len(r["val_loss"])), key=lambda i: r["val_loss"][i]),
}


def summarise(runs: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for w in sorted({r["workload"] for r in runs}):
        mine = [r for r in runs if r["workload"] == w]
        lrs = sorted({r["lr"] for r in mine})
        for rule in [*RULES, "soup_last5"]:
            acc = {
                f"{lr:g}": [
                    r["soup_last5"] if rule == "soup_last5" else r["test_acc"][RULES[rule](r)]
                    for r in sorted(mine, key=lambda r: r["seed"])
                    if r["lr"] == lr
                ]
                for lr in lrs
            }
            med = {k: statistics.median(v) for k, v in acc.items()}
            out.setdefault(w, {})[rule] = {
                "median": med,
                "per_seed": acc,
                "lr_spread_points": 100 * (max(med.values()) - min(med.values())),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", nargs="+", default=["lite0_mnist", "lite0_digits"], choices=list(te.WORKLOADS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    jobs = [(w, s, lr) for w in args.workloads for lr in te.LR_RANGE[te.domain(w)] for s in args.seeds]
    partial = RESULTS.with_suffix(".partial.jsonl")
    done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    have = {(r["workload"], r["seed"], r["lr"]) for r in done}
    todo = [j for j in jobs if j not in have]
    partial.parent.mkdir(parents=True, exist_ok=True)

    def keep(run: dict) -> None:
        done.append(run)
        with partial.open("a") as f:
            f.write(json.dumps(run) + "\n")
        print(f"  {run['workload']} seed {run['seed']} lr {run['lr']:g}: final test {run['test_acc'][-1]:.3f}",
              flush=True)  # fmt: skip

    if args.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            for run in pool.imap_unordered(run_one, todo):
                keep(run)
    else:
        for job in todo:
            keep(run_one(job))
    runs = [r for r in done if (r["workload"], r["seed"], r["lr"]) in set(jobs)]
    summary = summarise(runs)
    for w, rules in summary.items():
        for rule, s in rules.items():
            accs = " ".join(f"lr={k}:{v:.3f}" for k, v in s["median"].items())
            print(f"RESULT {w} {rule} {accs} lr_spread={s['lr_spread_points']:.1f}pt seeds={len(args.seeds)}")
    RESULTS.write_text(json.dumps({"benchmark": "checkpoint_selection", "summary": summary, "runs": runs}, indent=1))
    partial.unlink(missing_ok=True)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
