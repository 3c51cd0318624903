"""Training input pipeline: transferkit vs torchvision ImageFolder + PIL + classic transforms.

Both sides do the same work per image: read a 256x256 JPEG, RandomResizedCrop(224) (bilinear, antialiased),
random horizontal flip, convert to float and normalise with the ImageNet mean/std, then a DataLoader collates
batches of 32.

- transferkit: ``ImageFileDataset`` (torchvision.io decode to a uint8 tensor) + ``build_transforms(train=True,
  preset="crop")`` (transforms.v2 on uint8; float conversion and normalisation last).
- torchvision: ``datasets.ImageFolder`` (PIL decode) + ``transforms.Compose([RandomResizedCrop(224),
  RandomHorizontalFlip(), ToTensor(), Normalize(...)])``.

Workloads: ``w0`` (num_workers=0) and ``w2`` (num_workers=2). Contenders alternate within each repeat (the order
flips every repeat): with num_workers=0 batch by batch, with workers pass by pass. The figure is the median
images/s over the repeats of a full pass. A per-stage profile
(single image, single thread) shows where the difference comes from.

Wall-clock images/s is the headline; images per CPU-second (this process + workers) is reported alongside because
these 2-core machines are often shared, and CPU time is far less sensitive to other programs' load.

Run: ``python benchmarks/image_input.py [--images 2000] [--per-pass 1000] [--repeats 5] [--threads 1]``. Writes
``benchmarks/results/image_input.json`` and prints ``RESULT <workload> ratio=<tk/tv> tk_ips=<..> tv_ips=<..>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transferkit.data import ImageFileDataset, build_transforms  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io's deprecation notice, per call

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUM_CLASSES = 10
BATCH = 32
RESULTS = Path(__file__).resolve().parent / "results" / "image_input.json"


# --- data ---------------------------------------------------------------------------------------------------------
def _make_image(seed: int, size: int = 256) -> Image.Image:
    """A natural-looking-ish photo stand-in: smooth colour field, blurred shapes, sensor-like noise."""
    rng = np.random.default_rng(seed)
    # A smooth colour field: random 4x4 colours upsampled (cheap, and no two images alike).
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.integers(0, size, 2)
        r = int(rng.integers(8, size // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [int(cx) - r, int(cy) - r, int(cx) + r, int(cy) + r]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    arr = np.asarray(field.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.int16)
    arr = arr + rng.integers(-10, 11, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_one(args: tuple[int, str]) -> None:
    i, path = args
    _make_image(i).save(path, quality=90)


def ensure_images(root: Path, n: int) -> Path:
    """Generates `n` JPEGs in ImageFolder layout under `root` once; later runs reuse them."""
    done = root / f".complete_{n}"
    if done.exists():
        return root
    jobs = []
    for i in range(n):
        folder = root / f"class_{i % NUM_CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((i, str(folder / f"{i:05d}.jpg")))
    t0 = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_one, jobs, chunksize=32)
    done.touch()
    print(f"generated {n} images in {root} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return root


# --- contenders ---------------------------------------------------------------------------------------------------
def transferkit_dataset(root: Path, indices: list[int]):
    folder = datasets.ImageFolder(str(root))  # only to list the same files in the same order
    paths = [folder.samples[i][0] for i in indices]
    targets = [folder.samples[i][1] for i in indices]
    cfg = {"input_size": (3, 224, 224), "mean": MEAN, "std": STD, "interpolation": "bilinear"}
    return ImageFileDataset(paths, targets, build_transforms(cfg, train=True, preset="crop"))


def torchvision_dataset(root: Path, indices: list[int]):
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    return Subset(datasets.ImageFolder(str(root), transform=tf), indices)


def make_loader(dataset, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,  # worker start-up stays out of the timed passes (both sides alike)
        generator=torch.Generator().manual_seed(0),
    )


def _cpu_seconds(loader: DataLoader) -> float:
    """CPU time used so far by this process and the loader's (persistent) worker processes."""
    total = time.process_time()
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
    for w in workers:
        try:
            fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def timed_pass(loader: DataLoader) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second) of one full pass.

    The CPU-second figure counts this process and its workers; it is much less sensitive than wall time to
    other programs competing for the same cores.
    """
    n = 0
    cpu0, t0 = _cpu_seconds(loader), time.perf_counter()
    for images, _ in loader:
        n += images.shape[0]
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(loader) - cpu0
    return n / wall, n / cpu if cpu > 0 else float("nan")


def interleaved_pass(loaders: dict[str, DataLoader], order: list[str]) -> dict[str, tuple[float, float]]:
    """One full pass of each in-process (num_workers=0) loader, alternating batch by batch.

    Each side's batches are timed separately, so both see the same background load on a shared machine.
    Returns {name: (images per wall-clock second, images per CPU second)}.
    """
    iters = {name: iter(loaders[name]) for name in order}
    wall = dict.fromkeys(order, 0.0)
    cpu = dict.fromkeys(order, 0.0)
    seen = dict.fromkeys(order, 0)
    active = list(order)
    while active:
        for name in list(active):
            c0, t0 = time.process_time(), time.perf_counter()
            batch = next(iters[name], None)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            if batch is None:
                active.remove(name)
            else:
                seen[name] += batch[0].shape[0]
    return {name: (seen[name] / wall[name], seen[name] / cpu[name]) for name in order}


# --- per-stage profile ----------------------------------------------------------------------------------------------
def profile(paths: list[str], n: int = 100, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Milliseconds per image of each stage, single-threaded, on the same files.

    The two sides' stages are measured alternately over several rounds and the fastest round is kept, so that a
    burst of background load does not land on one side only.
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    paths = paths[:n]

    def read(path: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)

    u8 = [decode_image(read(p), mode=ImageReadMode.RGB) for p in paths]
    pil = [Image.open(p).convert("RGB") for p in paths]
    rrc_v2, rrc_pil = v2.RandomResizedCrop(224, antialias=True), T.RandomResizedCrop(224)
    crops_u8, crops_pil = [rrc_v2(x) for x in u8], [rrc_pil(x) for x in pil]
    tail_v2 = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    tail_pil = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    stages = {  # stage: (transferkit (name, fn, inputs), torchvision (name, fn, inputs))
        "decode": (("read+decode (torchvision.io)", lambda p: decode_image(read(p), mode=ImageReadMode.RGB), paths),
                   ("read+decode (PIL open+convert)", lambda p: Image.open(p).convert("RGB"), paths)),
        "crop": (("RandomResizedCrop (uint8 tensor)", rrc_v2, u8), ("RandomResizedCrop (PIL)", rrc_pil, pil)),
        "flip": (("flip", v2.RandomHorizontalFlip(), crops_u8), ("flip", T.RandomHorizontalFlip(), crops_pil)),
        "float": (("ToDtype+Normalize", tail_v2, crops_u8), ("ToTensor+Normalize", tail_pil, crops_pil)),
    }  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for r in range(rounds):
        for pair in stages.values():
            sides = list(zip(("tk", "tv"), pair))
            for side, (name, fn, inputs) in sides[::-1] if r % 2 else sides:
                t0 = time.process_time()
                for x in inputs:
                    fn(x)
                ms = (time.process_time() - t0) / len(inputs) * 1e3
                best[side, name] = min(best.get((side, name), float("inf")), ms)
    out: dict[str, dict[str, float]] = {"transferkit_ms": {}, "torchvision_ms": {}}
    for (side, name), ms in best.items():
        out["transferkit_ms" if side == "tk" else "torchvision_ms"][name] = round(ms, 3)
    for key in out:
        out[key]["total"] = round(sum(out[key].values()), 3)
    floats = [x.float() for x in u8[:30]]
    t0 = time.process_time()
    for x in floats:
        rrc_v2(x)
    out["transferkit_ms"]["(reference) RandomResizedCrop on float32"] = round((time.process_time() - t0) / 30 * 1e3, 3)
    return out


# --- main -----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="images generated")
    ap.add_argument("--per-pass", type=int, default=1000, help="images read per timed pass (the same for both)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per contender and workload (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process (both)")
    ap.add_argument("--workloads", default="w0,w2")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "transferkit_bench", "jpeg256_v2"))
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    root = ensure_images(Path(args.cache), args.images)
    torch.set_num_threads(args.threads)  # equal for both; DataLoader workers always run 1 thread each
    indices = list(range(0, args.images, max(1, args.images // args.per_pass)))[: args.per_pass]
    builders = {"tk": transferkit_dataset, "tv": torchvision_dataset}

    results: dict[str, dict] = {}
    for workload in args.workloads.split(","):
        workers = int(workload.lstrip("w"))
        loaders = {name: make_loader(build(root, indices), workers) for name, build in builders.items()}
        for loader in loaders.values():  # warm-up: page cache, worker start-up, lazy inits
            timed_pass(loader)
        ips: dict[str, list[float]] = {"tk": [], "tv": []}
        cpu_ips: dict[str, list[float]] = {"tk": [], "tv": []}
        for r in range(args.repeats):
            order = ["tk", "tv"] if r % 2 == 0 else ["tv", "tk"]
            if workers == 0:  # in-process: alternate batch by batch (fairest under background load)
                measured = interleaved_pass(loaders, order)
            else:  # workers prefetch in the background, so two loaders must not run at once: alternate passes
                measured = {name: timed_pass(loaders[name]) for name in order}
            for name, (wall_ips, per_cpu) in measured.items():
                ips[name].append(wall_ips)
                cpu_ips[name].append(per_cpu)
        del loaders  # shuts persistent workers down before the next workload
        tk, tv = statistics.median(ips["tk"]), statistics.median(ips["tv"])
        tk_cpu, tv_cpu = statistics.median(cpu_ips["tk"]), statistics.median(cpu_ips["tv"])
        results[workload] = {
            "num_workers": workers,
            "ratio": round(tk / tv, 3),
            "tk_ips": round(tk, 1),
            "tv_ips": round(tv, 1),
            "tk_ips_runs": [round(v, 1) for v in ips["tk"]],
            "tv_ips_runs": [round(v, 1) for v in ips["tv"]],
            "paired_ratio_median": round(statistics.median(a / b for a, b in zip(ips["tk"], ips["tv"])), 3),
            "cpu_ratio": round(tk_cpu / tv_cpu, 3),
            "tk_images_per_cpu_s": round(tk_cpu, 1),
            "tv_images_per_cpu_s": round(tv_cpu, 1),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        print(
            f"RESULT {workload} ratio={tk / tv:.2f} tk_ips={tk:.1f} tv_ips={tv:.1f} "
            f"(per CPU-second: ratio={tk_cpu / tv_cpu:.2f}; load avg {os.getloadavg()[0]:.1f})",
            flush=True,
        )

    out = {
        "benchmark": "image_input",
        "description": "training input pipeline, 256x256 JPEG q90 -> RandomResizedCrop(224) + flip + normalize, "
        f"batch {BATCH}; median images/s over {args.repeats} full passes; ratio = transferkit / torchvision",
        "images_generated": args.images,
        "images_per_pass": len(indices),
        "repeats": args.repeats,
        "torch_threads": args.threads,
        "workloads": results,
        "profile_single_image": None if args.no_profile else profile([str(p) for p in sorted(root.rglob("*.jpg"))]),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": Image.__version__,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
