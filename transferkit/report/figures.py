"""The report's figures: matplotlib on its Agg canvas (no display, no pyplot state), small PNGs at 100 dpi.

matplotlib is imported inside the functions, so ``import transferkit`` never pays for it. Each function writes one
PNG and returns its path, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 100
TRAIN, VAL, BEST = "#1f77b4", "#e8710a", "#6b6b6b"
PRETRAINED, NEW = "#1f77b4", "#2ca02c"
MAX_CLASSES_SHOWN = 25  # confusion matrices and per-class bars beyond this show the largest classes


def _figure(width: float, height: float, layout: str = "tight"):
    """A figure on no display. "tight" layout is ~30% cheaper to draw than "constrained", which only figures with a
    legend outside the axes need (a report is drawn at the end of every run, so its cost counts)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one history column, skipping empty and non-numeric cells."""
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            epoch = row.get("epoch")
            xs.append(float(epoch) if isinstance(epoch, (int, float)) else float(i + 1))
            ys.append(float(v))
    return xs, ys


def _mark_best(ax, best: int | None) -> None:
    if best is not None:
        ax.axvline(best, color=BEST, linestyle=":", linewidth=1.2, label=f"best epoch ({best})")


def _epoch_axis(ax, xs: Sequence[float]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    if xs and min(xs) == max(xs):
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.grid(alpha=0.3)


def _log_if_wide(ax, values: Sequence[float]) -> None:
    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > 20:
        ax.set_yscale("log", nonpositive="mask")


def loss_curves(history: Sequence[Mapping[str, Any]], best: int | None, path: Path) -> Path | None:
    """Training and validation loss per epoch (plus any named training losses), best epoch marked."""
    named = [k for k in _columns(history) if k.startswith("train/") and k != "train/loss"]
    keys = [k for k in ("train/loss", "val/loss") if any(_series(history, k)[1])]
    if not keys and not named:
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    styles = {"train/loss": dict(color=TRAIN, marker="o"), "val/loss": dict(color=VAL, marker="s")}
    allv: list[float] = []
    for key in keys:
        xs, ys = _series(history, key)
        ax.plot(xs, ys, label=key.replace("/", " "), linewidth=2, markersize=4, **styles[key])
        allv += ys
    for key in named[:6]:
        xs, ys = _series(history, key)
        if ys:
            ax.plot(xs, ys, label=key.replace("/", " "), linestyle="--", linewidth=1.2, marker=".")
            allv += ys
    _mark_best(ax, best)
    _epoch_axis(ax, [x for k in keys for x in _series(history, k)[0]])
    _log_if_wide(ax, allv)
    ax.set_ylabel("loss")
    ax.set_title("Loss per epoch")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _columns(history: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    return keys


def is_per_class(name: str) -> bool:
    """Per-class metric keys (``iou_<class>``, ``ap_<class>``), shown in their own figures."""
    bare = name.split("/", 1)[-1]
    return bare.startswith(("iou_", "ap_"))


def metric_curves(
    history: Sequence[Mapping[str, Any]],
    best: int | None,
    path: Path,
    main: str | None = None,
    exclude: Sequence[str] = (),
) -> Path | None:
    """One small panel per validation (and training) metric other than the loss, best epoch marked."""
    names: list[str] = list(exclude)
    for key in _columns(history):
        split, _, bare = key.partition("/")
        wanted = split in ("train", "val") and bare and "loss" not in bare and not is_per_class(key)
        if wanted and bare not in names and any(_series(history, key)[1]):
            names.append(bare)
    names = names[len(exclude) :]
    if main in names:
        names.remove(main)
        names.insert(0, main)
    names = names[:6]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(3.4 * cols, 2.7 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        allv: list[float] = []
        for split, color, marker in (("train", TRAIN, "o"), ("val", VAL, "s")):
            xs, ys = _series(history, f"{split}/{name}")
            if ys:
                ax.plot(xs, ys, color=color, marker=marker, markersize=4, linewidth=2, label=split)
                allv += ys
        _mark_best(ax, best)
        _epoch_axis(ax, _series(history, f"val/{name}")[0] or _series(history, f"train/{name}")[0])
        if name == "perplexity":
            _log_if_wide(ax, allv)
        ax.set_title(name + (" (main metric)" if name == main else ""), fontsize=10)
        ax.set_ylabel(name, fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return _save(fig, path)


def per_class_curves(history: Sequence[Mapping[str, Any]], best: int | None, path: Path) -> Path | None:
    """Validation per-class IoU / AP per epoch (when there are at most 12 classes)."""
    keys = [k for k in _columns(history) if k.startswith("val/") and is_per_class(k) and any(_series(history, k)[1])]
    if not keys or len(keys) > 12:
        return None
    kind = "IoU" if keys[0].startswith("val/iou_") else "AP"
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    for key in keys:
        xs, ys = _series(history, key)
        ax.plot(xs, ys, marker=".", linewidth=1.5, label=key.split("_", 1)[1])
    _mark_best(ax, best)
    _epoch_axis(ax, _series(history, keys[0])[0])
    ax.set_ylabel(f"validation {kind}")
    ax.set_title(f"Per-class validation {kind} per epoch")
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, path)


def perplexity_curves(history: Sequence[Mapping[str, Any]], best: int | None, path: Path) -> Path | None:
    """Masked-LM: validation perplexity and exp(training loss) per epoch, on a log scale."""
    xs, ys = _series(history, "val/perplexity")
    txs, tys = _series(history, "train/loss")
    if not ys:
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    if tys:
        ax.plot(
            txs,
            [math.exp(min(v, 700)) for v in tys],
            color=TRAIN,
            marker="o",
            markersize=4,
            linewidth=2,
            label="train: exp(masked-token loss)",
        )
    ax.plot(xs, ys, color=VAL, marker="s", markersize=4, linewidth=2, label="validation perplexity")
    _mark_best(ax, best)
    _epoch_axis(ax, xs)
    ax.set_yscale("log", nonpositive="mask")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("Perplexity per epoch")
    ax.legend(fontsize=8)
    return _save(fig, path)


def lr_schedule(
    trace: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]], path: Path
) -> tuple[Path | None, str, bool]:
    """The learning rates actually used: per optimizer step from the run's trace, else per epoch from history.

    Returns (path, what was plotted: "step" or "epoch", whether both groups had the same rate throughout).
    """
    if trace:
        xs = [float(r.get("step", i)) for i, r in enumerate(trace)]
        lr = [float(r.get("lr", float("nan"))) for r in trace]
        lr_new = [float(r.get("lr_new", r.get("lr", float("nan")))) for r in trace]
        unit = "step"
    else:
        xs, lr = _series(history, "lr")
        _, lr_new = _series(history, "lr_new")
        if len(lr_new) != len(lr):
            lr_new = lr
        unit = "epoch"
    if not lr:
        return None, unit, True
    fig = _figure(6.4, 3.2)
    ax = fig.subplots()
    same = all(math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) for a, b in zip(lr, lr_new))
    marker = "" if unit == "step" and len(xs) > 40 else "o"
    if same:
        ax.plot(xs, lr, color=PRETRAINED, linewidth=2, marker=marker, markersize=4, label="all trained parameters")
    else:
        ax.plot(xs, lr, color=PRETRAINED, linewidth=2, marker=marker, markersize=4, label="pretrained layers (lr)")
        ax.plot(
            xs,
            lr_new,
            color=NEW,
            linewidth=2,
            marker=marker,
            markersize=4,
            linestyle="--",
            label="new layers (lr_new)",
        )
    top, top_new = max(lr, default=0.0), max(lr_new, default=0.0)
    if not same and min(top, top_new) > 0 and max(top, top_new) / min(top, top_new) >= 5:
        ax.set_yscale("log", nonpositive="mask")  # both groups visible; one group reads best on a linear axis
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("optimizer step" if unit == "step" else "epoch (rate at the epoch's end)")
    if unit == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule per parameter group")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path), unit, same


def top_classes(matrix: np.ndarray, k: int = MAX_CLASSES_SHOWN) -> list[int]:
    """Indices of the `k` classes with the most samples (targets + predictions), in class order."""
    if matrix.shape[0] <= k:
        return list(range(matrix.shape[0]))
    weight = matrix.sum(0) + matrix.sum(1)
    return sorted(np.argsort(-weight, kind="stable")[:k].tolist())


def confusion_matrix(
    names: Sequence[str], confusion: Sequence[Sequence[int]], path: Path, title: str, unit: str = "samples"
) -> Path | None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.size == 0 or cm.sum() == 0:
        return None
    keep = top_classes(cm)
    cm = cm[np.ix_(keep, keep)]
    labels = [_short(names[i]) for i in keep]
    k = len(keep)
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(11.0, max(4.2, 0.42 * k + 2.2))
    fig = _figure(side + 0.6, side)  # narrow enough to sit next to a per-class chart on the page
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if k <= 15:
        for t in range(k):
            for p in range(k):
                count = int(cm[t, p])
                text = _count(count) if unit == "pixels" else str(count)
                ax.text(
                    p,
                    t,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7 if k > 8 else 9,
                    color="white" if share[t, p] > 0.5 else "black",
                )
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label(f"share of the true class's {unit}", fontsize=8)
    return _save(fig, path)


def _count(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def per_class_scores(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Precision, recall and F1 per class as grouped horizontal bars (the worst-F1 classes when there are many)."""
    if not rows:
        return None
    rows = list(rows)
    if len(rows) > MAX_CLASSES_SHOWN:
        rows = sorted(rows, key=lambda r: (r["f1"], str(r["class"])))[:MAX_CLASSES_SHOWN]
    k = len(rows)
    fig = _figure(5.0, max(2.6, 0.5 * k + 1.5), layout="constrained")
    ax = fig.subplots()
    y = np.arange(k)
    h = 0.26
    for j, (key, color) in enumerate((("precision", "#4c78a8"), ("recall", "#f58518"), ("f1", "#54a24b"))):
        ax.barh(y + (j - 1) * h, [r[key] for r in rows], height=h, color=color, label=key)
    ax.set_yticks(y, [f"{_short(str(r['class']))} (n={r['support']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("score")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    return _save(fig, path)


def per_class_bars(values: Mapping[str, float], path: Path, title: str, xlabel: str) -> Path | None:
    """One horizontal bar per class (e.g. IoU or AP); classes with no value (-1: nothing to score) are listed as
    such."""
    items = list(values.items())
    if not items:
        return None
    if len(items) > MAX_CLASSES_SHOWN:
        items = sorted(items, key=lambda kv: kv[1])[:MAX_CLASSES_SHOWN]
    k = len(items)
    fig = _figure(5.0, max(2.2, 0.32 * k + 1.3))
    ax = fig.subplots()
    y = np.arange(k)
    scored = [max(v, 0.0) if v is not None and v >= 0 else 0.0 for _, v in items]
    ax.barh(y, scored, color="#4c78a8", height=0.6)
    for i, (_, v) in enumerate(items):
        if v is None or v < 0:
            ax.text(0.01, i, "n/a (no ground truth)", va="center", fontsize=8)
        elif v > 0.85:  # inside the bar
            ax.text(v - 0.01, i, f"{v:.3f}", va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(v + 0.01, i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [_short(n) for n, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def comparison_bars(rows: Sequence[Mapping[str, Any]], metric: str, path: Path) -> Path | None:
    """The main metric of each compared method (test and validation side by side)."""
    methods = [str(r.get("method", f"method {i + 1}")) for i, r in enumerate(rows)]
    splits = [s for s in ("test", "val") if any(_metric(r, s, metric) is not None for r in rows)]
    if not splits:
        return None
    fig = _figure(max(4.8, 1.5 * len(methods) + 2), 3.4)
    ax = fig.subplots()
    x = np.arange(len(methods))
    w = 0.8 / len(splits)
    for j, (split, color) in enumerate(zip(splits, ("#4c78a8", "#f58518"))):
        vals = [_metric(r, split, metric) for r in rows]
        bars = ax.bar(
            x + (j - (len(splits) - 1) / 2) * w,
            [v if v is not None else 0 for v in vals],
            width=w,
            color=color,
            label="test" if split == "test" else "validation",
        )
        for bar, v in zip(bars, vals):
            if v is not None:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height(),
                    f"{v:.3g}",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(x, methods, fontsize=9)
    ax.set_ylabel(metric)
    ax.set_title(f"Transfer summary: {metric} by method", fontsize=10)
    if metric == "perplexity":
        ax.set_yscale("log", nonpositive="mask")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _metric(row: Mapping[str, Any], split: str, metric: str) -> float | None:
    v = ((row.get("metrics") or {}).get(split) or {}).get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def timings(values: Mapping[str, float], path: Path) -> Path | None:
    """Seconds per phase as horizontal bars."""
    order = ["data", "setup", "train", "val", "test"]  # the order a run goes through them
    keys = sorted(values, key=lambda k: (order.index(k) if k in order else len(order), k))
    items = [(k, float(values[k])) for k in keys if isinstance(values[k], (int, float)) and values[k] >= 0]
    items = [(k, v) for k, v in items if v > 0 or k not in ("val", "test")]  # a split the run did not have
    if not items:
        return None
    fig = _figure(6.4, 0.42 * len(items) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(items))
    ax.barh(y, [v for _, v in items], color="#72b7b2", height=0.6)
    top = max(v for _, v in items) or 1.0
    for i, (_, v) in enumerate(items):
        ax.text(v + top * 0.01, i, f"{v:.1f} s" if v >= 10 else f"{v:.2g} s", va="center", fontsize=8)
    ax.set_yticks(y, [k for k, _ in items], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("seconds")
    ax.set_title("Time per phase", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def segmentation_grid(
    items: Sequence[Mapping[str, Any]],
    folder: Path,
    path: Path,
    class_names: Sequence[str],
    palette: Any = None,
    ignore_index: int = 255,
) -> Path | None:
    """Rows of image / ground truth overlay / prediction overlay, with a legend of the class colours."""
    from PIL import Image

    from ..data.masks import default_palette, overlay

    if not items:
        return None
    aspect = _median_aspect(folder, [it["image"] for it in items])
    fig = _figure(7.2, (2.4 * aspect + 0.35) * len(items) + 0.5, layout="constrained")
    axes = fig.subplots(len(items), 3, squeeze=False)
    # class 0 painted black (the default colour map's background) would only darken the image: leave it untinted
    background = 0 if palette is None or list(palette[0][:3]) == [0, 0, 0] else None
    present: set[int] = set()
    for row, item in zip(axes, items):
        image = np.array(Image.open(folder / item["image"]).convert("RGB"))
        target = np.asarray(Image.open(folder / item["target"]))
        pred = np.asarray(Image.open(folder / item["pred"]))
        present |= {int(v) for v in np.unique(target) if v != ignore_index} | {int(v) for v in np.unique(pred)}
        row[0].imshow(image)
        row[1].imshow(overlay(image, target, 0.55, palette=palette, background=background, ignore_index=ignore_index))
        row[2].imshow(overlay(image, pred, 0.55, palette=palette, background=background, ignore_index=ignore_index))
        acc, miou = item.get("pixel_accuracy"), item.get("miou")
        score = " · ".join(s for s in (_pct("acc", acc), _pct("mIoU", miou)) if s)
        row[0].set_title(_short(str(item.get("name", "")), 28), fontsize=8)
        row[1].set_title("ground truth", fontsize=8)
        row[2].set_title(f"prediction ({score})" if score else "prediction", fontsize=8)
        for ax in row:
            ax.set_axis_off()
    from matplotlib.patches import Patch

    table = default_palette(max(256, max(present, default=0) + 1)).astype(np.float64) / 255
    if palette is not None:
        for cid, colour in enumerate(palette):
            if cid < len(table) and colour is not None:
                table[cid] = np.asarray(colour[:3], dtype=np.float64) / 255
    handles = [
        Patch(color=table[c], label=class_names[c] if c < len(class_names) else str(c))
        for c in sorted(present - {background})[:20]
    ]
    if background is not None and class_names:
        handles.append(Patch(facecolor="white", edgecolor="grey", label=f"{class_names[0]} (untinted)"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    return _save(fig, path)


def _median_aspect(folder: Path, files: Sequence[str]) -> float:
    """Median height / width of the example images (sizes the grid's rows so that no space is wasted)."""
    from PIL import Image

    ratios = []
    for f in files:
        with Image.open(folder / f) as im:
            ratios.append(im.size[1] / max(1, im.size[0]))
    return float(np.clip(np.median(ratios), 0.3, 2.0)) if ratios else 1.0


def _pct(name: str, value: float | None) -> str:
    return f"{name} {value:.0%}" if isinstance(value, (int, float)) else ""


def detection_grid(items: Sequence[Mapping[str, Any]], folder: Path, path: Path, threshold: float) -> Path | None:
    """Images with ground-truth boxes (dashed) and predicted boxes above `threshold` (solid, with scores)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from PIL import Image

    if not items:
        return None
    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    aspect = _median_aspect(folder, [it["file"] for it in items])
    fig = _figure(3.0 * cols, (3.0 * aspect + 0.35) * rows + 0.6, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    names = sorted({b["label"] for it in items for b in it.get("ground_truth", []) + it.get("predictions", [])})
    colours = {n: _tab10(i) for i, n in enumerate(names)}
    for ax, item in zip(axes, items):
        ax.imshow(np.asarray(Image.open(folder / item["file"]).convert("RGB")))
        for b in item.get("ground_truth", []):
            x0, y0, x1, y1 = b["box"]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=2.2))
            ax.add_patch(
                Rectangle(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor=colours[b["label"]],
                    linewidth=1.2,
                    linestyle="--",
                )
            )
        shown = [p for p in item.get("predictions", []) if p["score"] >= threshold]
        for p in shown:
            x0, y0, x1, y1 = p["box"]
            c = colours[p["label"]]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c, linewidth=1.8))
            ax.text(
                x0,
                y0,
                f"{_short(p['label'], 12)} {p['score']:.2f}",
                fontsize=6,
                color="white",
                va="bottom",
                bbox=dict(facecolor=c, edgecolor="none", pad=1, alpha=0.85),
            )
        ax.set_title(
            f"{_short(str(item.get('name', '')), 24)}: {len(item.get('ground_truth', []))} true, "
            f"{len(shown)} predicted",
            fontsize=7,
        )
        ax.set_axis_off()
    for ax in axes[len(items) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[n], linewidth=2, label=n) for n in names[:12]]
    handles += [
        Line2D([], [], color="black", linestyle="--", label="ground truth"),
        Line2D([], [], color="black", linestyle="-", label=f"prediction (score ≥ {threshold:g})"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(5, len(handles)), fontsize=7)
    return _save(fig, path)


def _tab10(i: int) -> tuple[float, float, float]:
    from matplotlib import colormaps

    return tuple(colormaps["tab10"](i % 10)[:3])
