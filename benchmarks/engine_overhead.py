"""tk.finetune's training steps vs a hand-written PyTorch loop (and raw Accelerate, for reference).

Same model, the same in-memory data through the same DataLoader, batch size, AdamW, constant LR, fp32, 2 threads.
transferkit runs through the public `tk.finetune` with a small task registered here (tensors in, logits out),
so what is measured is the engine's per-step overhead. Steps/s of one training epoch (and CPU seconds per step,
which other load on a shared machine disturbs far less); median of >= 3 repeats, contenders alternated.
Writes benchmarks/results/engine_overhead.json and prints `RESULT <workload> ratio=<tk/hand> ...`
(> 1 means transferkit is faster).

    python benchmarks/engine_overhead.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import os

# Shared 2-core machines: busy-waiting OpenMP threads stall when another program holds a core; passive waiting
# costs nothing measurable on an idle machine. Set before torch is imported; every contender shares it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import transferkit as tk
from transferkit.metrics.classification import ClassificationMetrics
from transferkit.models import TransferModel
from transferkit.registry import TASKS
from transferkit.tasks.base import Splits, Task

RESULTS = Path(__file__).parent / "results" / "engine_overhead.json"


# --- workloads -------------------------------------------------------------------------------------------------
class MLPBackbone(nn.Module):
    num_features = 128

    def __init__(self, d_in: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def make_model(workload: str) -> nn.Module:
    torch.manual_seed(0)
    if workload == "tiny":
        return TransferModel(tk.create_backbone(MLPBackbone()), nn.Linear(128, 10))
    return tk.create_model("timm:resnet18", num_classes=10, pretrained=False)


def make_data(workload: str, steps: int, batch: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    n = steps * batch
    x = torch.randn(n, 64, generator=g) if workload == "tiny" else torch.randn(n, 3, 128, 128, generator=g)
    return TensorDataset(x, torch.randint(0, 10, (n,), generator=g))


WORKLOADS = {"tiny": dict(steps=600, batch=64), "resnet18": dict(steps=12, batch=32)}


# --- contenders -----------------------------------------------------------------------------------------------
def hand_loop(model: nn.Module, ds: TensorDataset, batch: int, fused: bool = False) -> tuple[float, float]:
    loader = DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    steps = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    return steps / (time.perf_counter() - t0), (time.process_time() - c0) / steps


def hand_loop_fused(model: nn.Module, ds: TensorDataset, batch: int) -> tuple[float, float]:
    """The hand loop with AdamW(fused=True), as transferkit uses it: shows what the fused kernel alone gives."""
    return hand_loop(model, ds, batch, fused=True)


def accelerate_loop(model: nn.Module, ds: TensorDataset, batch: int) -> tuple[float, float]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    acc = Accelerator()
    loader = DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model, opt, loader = acc.prepare(model, opt, loader)
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    steps = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    return steps / (time.perf_counter() - t0), (time.process_time() - c0) / steps


class TensorTask(Task):
    """(features, label) tensors in memory -> logits; the model comes in through the options."""

    name = "bench-tensors"
    monitor = "train/loss"
    monitor_mode = "min"
    current: dict = {}

    def read_data(self, data):
        self.labels = [str(i) for i in range(10)]
        return data

    def build_datasets(self, raw) -> Splits:
        return Splits(train=raw, labels=self.labels)

    def build_model(self, raw=None) -> nn.Module:
        return TensorTask.current["model"]

    def train_step(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_step(self, model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, y, reduction="none"), (logits.argmax(1), y)

    def new_metrics(self, split="val"):
        return ClassificationMetrics(10)


if "bench-tensors" not in TASKS:
    TASKS.register("bench-tensors", TensorTask)


class EpochTimer(tk.Callback):
    """Wall and CPU time of the training epoch (no val split, so the epoch is the training steps)."""

    def on_epoch_start(self, state, control):
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_epoch_end(self, state, control, logs):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def tk_loop(model: nn.Module, ds: TensorDataset, batch: int) -> tuple[float, float]:
    TensorTask.current["model"] = model
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        tk.finetune(
            "bench-tensors",
            data=ds,
            backbone="(given by the task)",
            output_dir=out,
            epochs=1,
            batch_size=batch,
            lr=1e-3,
            weight_decay=0.01,
            schedule="constant",
            warmup=0,
            max_grad_norm=None,
            quiet=True,
            save_checkpoints=False,
            monitor="train/loss",
            seed=0,
            callbacks=(timer,),
        )
    steps = len(ds) // batch
    return steps / timer.wall, timer.cpu / steps


CONTENDERS = {"hand": hand_loop, "hand_fused": hand_loop_fused, "accelerate": accelerate_loop, "transferkit": tk_loop}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = {}
    for workload, spec in WORKLOADS.items():
        steps = max(4, spec["steps"] // 10) if args.quick else spec["steps"]
        ds = make_data(workload, steps, spec["batch"])
        # warm-up: first-call costs (allocator, kernels, lazy imports) must not land on one contender
        for fn in CONTENDERS.values():
            fn(make_model(workload), make_data(workload, 3, spec["batch"]), spec["batch"])
        runs: dict[str, list[float]] = {k: [] for k in CONTENDERS}
        cpu: dict[str, list[float]] = {k: [] for k in CONTENDERS}
        for _ in range(args.repeats):
            for name, fn in CONTENDERS.items():
                steps_s, cpu_per_step = fn(make_model(workload), ds, spec["batch"])
                runs[name].append(steps_s)
                cpu[name].append(cpu_per_step)
        med = {k: statistics.median(v) for k, v in runs.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = med["transferkit"] / med["hand"]
        cpu_ratio = med_cpu["hand"] / med_cpu["transferkit"]  # CPU seconds per step: robust to other load
        results[workload] = {
            "steps": steps,
            "batch": spec["batch"],
            "repeats": args.repeats,
            "steps_per_s": med,
            "cpu_s_per_step": med_cpu,
            "all_runs": runs,
            "ratio_tk_vs_hand": ratio,
            "cpu_ratio_tk_vs_hand": cpu_ratio,
            "ratio_accelerate_vs_hand": med["accelerate"] / med["hand"],
            "ratio_tk_vs_hand_fused": med["transferkit"] / med["hand_fused"],
        }
        print(
            f"RESULT {workload} ratio={ratio:.2f} cpu_ratio={cpu_ratio:.2f} tk_steps_s={med['transferkit']:.1f} "
            f"hand_steps_s={med['hand']:.1f} accelerate_ratio={med['accelerate'] / med['hand']:.2f} "
            f"ratio_vs_fused_hand={med['transferkit'] / med['hand_fused']:.2f}",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "engine_overhead", "torch_threads": 2, "results": results}, indent=2))


if __name__ == "__main__":
    main()
