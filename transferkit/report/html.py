"""The report page: one self-contained HTML file (inline CSS, images as base64 data URIs, no scripts, no external
requests), built from a `RunData` and the figures drawn into the run's report/ folder.

Each section is built on its own: a section that fails is left out with a note on the page, never a failed page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import figures as fg
from .data import RunData

DETECTION_THRESHOLD = 0.3  # predicted boxes drawn in the examples

CSS = """
:root { --ink: #1d232b; --muted: #5b6570; --line: #dde2e8; --bg: #f5f7fa; --accent: #2f6db3; --warn: #a15c00; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
header { background: #fff; border-bottom: 1px solid var(--line); }
header .inner { max-width: 1120px; margin: 0 auto; padding: 22px 20px 16px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
.sub { color: var(--muted); margin: 0; }
nav { margin-top: 10px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 20px; margin: 18px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0 0; }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
        min-width: 140px; }
.card .k { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 21px; font-weight: 600; }
.fig { margin: 10px 0 4px; }
.fig img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
.fig figcaption, .caption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.fig figcaption { width: 0; min-width: 100%; }  /* wraps to the image's width instead of widening the figure */
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row > .fig { flex: 0 1 auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef5ff; font-weight: 600; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0 14px; }
.thumb { margin: 0; width: 164px; font-size: 12px; color: var(--muted); }
.thumb img { display: block; max-width: 160px; max-height: 160px; min-width: 96px; border: 1px solid var(--line);
             border-radius: 3px; image-rendering: pixelated; }
.note { color: var(--warn); font-size: 13.5px; }
.banner { background: #fff4e5; border: 1px solid #f0c987; border-radius: 8px; padding: 10px 14px; margin: 16px 0; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.kv td:first-child { color: var(--muted); white-space: nowrap; }
.wrap { overflow-wrap: anywhere; }
.ok { color: #1b7f3b; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 28px; }
"""


# ----------------------------------------------------------------------------------------------------------------
# Small builders
# ----------------------------------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: ints as is, floats to `digits` significant digits; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}g}"
    return str(value)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure(path: Path | None, alt: str, caption: str = "") -> str:
    if path is None or not path.is_file():
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="fig"><img src="{data_uri(path)}" alt="{esc(alt)}">{cap}</figure>'


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (), cls: str = "") -> str:
    """An HTML table; cells are escaped, except ones wrapped as `Raw`."""
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        row_cls = ""
        if isinstance(row, RowClass):
            row_cls, row = f' class="{row.cls}"', row.cells
        cells = []
        for i, c in enumerate(row):
            text = c.html if isinstance(c, Raw) else esc(fmt(c))
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    attr = f' class="{cls}"' if cls else ""
    thead = f"<thead><tr>{head}</tr></thead>" if any(str(h) for h in headers) else ""
    return f"<table{attr}>{thead}<tbody>{''.join(body)}</tbody></table>"


class Raw:
    """Table cell content that is already HTML."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


class RowClass:
    """A table row with a CSS class."""

    def __init__(self, cls: str, cells: Sequence[Any]) -> None:
        self.cls, self.cells = cls, cells


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>' if body.strip() else ""


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------
class Page:
    """Collects figures and sections; a failing section becomes a note."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self.dir = run.report_dir
        self.notes: list[str] = list(run.notes) + [str(n) for n in run.extra.get("notes", [])]
        self.sections: list[tuple[str, str, str]] = []  # anchor, title, html

    def fig(self, name: str, draw: Callable[[Path], Path | None]) -> Path | None:
        try:
            return draw(self.dir / f"{name}.png")
        except Exception as e:  # noqa: BLE001 - one bad figure must not cost the page
            self.notes.append(f"Figure {name} skipped ({type(e).__name__}: {e}).")
            return None

    def add(self, anchor: str, title: str, build: Callable[[], str]) -> None:
        try:
            body = build()
        except Exception as e:  # noqa: BLE001 - likewise for a section
            self.notes.append(f"Section '{title}' skipped ({type(e).__name__}: {e}).")
            return
        if body and body.strip():
            self.sections.append((anchor, title, body))


def build_page(run: RunData) -> str:
    """The whole report page as an HTML string (figures are written to ``run.report_dir`` on the way)."""
    run.report_dir.mkdir(parents=True, exist_ok=True)
    page = Page(run)
    page.add("summary", "Transfer summary", lambda: comparison_section(page))
    page.add("curves", "Training curves", lambda: curves_section(page))
    page.add("lr", "Learning-rate schedule", lambda: lr_section(page))
    task = run.task
    if run.extra.get("classification") or task in ("image-classification", "text-classification"):
        page.add("classes", "Per-class results", lambda: classification_section(page))
    examples = run.extra.get("examples") or {}
    if examples.get("kind") == "image-confusions":
        page.add("examples", "Most-confused classes", lambda: confusion_examples_section(page, examples))
    elif examples.get("kind") == "text-mistakes":
        page.add("examples", "Misclassified texts", lambda: text_examples_section(page, examples))
    elif examples.get("kind") == "fill-mask":
        page.add("examples", "Fill-mask examples", lambda: fill_mask_section(page, examples))
    if task == "semantic-segmentation" or run.extra.get("segmentation"):
        page.add("segmentation", "Segmentation results", lambda: segmentation_section(page))
    if task == "object-detection" or examples.get("kind") == "detection":
        page.add("detection", "Detection results", lambda: detection_section(page))
    page.add("metrics", "Final metrics", lambda: metrics_section(page))
    page.add("details", "Run details", lambda: details_section(page))
    return assemble(page)


def assemble(page: Page) -> str:
    run = page.run
    meta = run.meta
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in page.sections)
    if page.notes:
        nav += '<a href="#notes">Notes</a>'
    body = "".join(section(a, t, b) for a, t, b in page.sections)
    if page.notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in dict.fromkeys(page.notes))
        body += f'<section id="notes"><h2>Notes</h2><ul class="note">{items}</ul></section>'
    status = str(meta.get("status", ""))
    banner = ""
    if status and status != "finished":
        err = f": {esc(meta['error'])}" if meta.get("error") else ""
        banner = f'<div class="banner">This run did not finish (status <b>{esc(status)}</b>{err}).</div>'
    title = f"{meta.get('task', 'run')} · {_backbone(meta)}"
    version = (meta.get("versions") or {}).get("transferkit", "")
    written = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>transferkit report: {esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><div class="inner"><h1>{esc(title)}</h1><p class="sub">{header_line(run)}</p>'
        f"{cards(run)}<nav>{nav}</nav></div></header><main>{banner}{body}"
        f"<footer>transferkit {esc(version)} run report of {esc(run.folder)} · rendered {esc(written)}</footer>"
        "</main></body></html>\n"
    )


def _backbone(meta: Mapping[str, Any]) -> str:
    bb = meta.get("backbone") or (meta.get("config") or {}).get("backbone") or "custom backbone"
    return str(bb)


def header_line(run: RunData) -> str:
    meta, cfg = run.meta, run.meta.get("config") or {}
    pretrained = cfg.get("pretrained")
    weights = {True: "pretrained weights", False: "random init"}.get(pretrained, f"weights from {pretrained}")
    if str(_backbone(meta)).startswith("hf-config:"):
        weights = "random init (a fresh model from its config)"
    parts = [weights, f"status {meta.get('status', '?')}"]
    if run.task != "masked-lm":
        parts.insert(0, f"head {meta.get('head') or _default_head(run.task)}")
    if meta.get("stopped_early"):
        parts.append("stopped early")
    return esc(" · ".join(str(p) for p in parts))


def _default_head(task: str) -> str:
    try:
        from ..tasks import get_task

        return f"{get_task(task).default_head} (the task's default)"
    except Exception:  # noqa: BLE001 - a task not installed here
        return "the task's default"


def cards(run: RunData) -> str:
    meta = run.meta
    metric, _ = run.main_metric()
    metrics = meta.get("metrics") or {}
    out = []
    for split in ("test", "val"):
        v = (metrics.get(split) or {}).get(metric)
        if isinstance(v, (int, float)):
            out.append((f"{split} {metric}", fmt(float(v), 4)))
    best = run.best_epoch()
    epochs = meta.get("epochs_run") or len(run.history) or None
    if best is not None:
        out.append(("best epoch", f"{best} of {epochs}" if epochs else str(best)))
    elif epochs:
        out.append(("epochs", str(epochs)))
    train_s = (meta.get("timings") or {}).get("train")
    if isinstance(train_s, (int, float)):
        out.append(("training time", _duration(float(train_s))))
    if not out:
        return ""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>' for k, v in out
        )
        + "</div>"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------
def comparison_section(page: Page) -> str:
    rows = page.run.meta.get("comparison")
    if not isinstance(rows, list) or not rows:
        return ""
    metric, mode = page.run.main_metric()
    rows = [r for r in rows if isinstance(r, Mapping)]
    path = page.fig("comparison", lambda p: fg.comparison_bars(rows, metric, p))
    values = [fg._metric(r, "test", metric) for r in rows]
    if all(v is None for v in values):
        values = [fg._metric(r, "val", metric) for r in rows]
    scored = [v for v in values if v is not None]
    best = (max(scored) if mode == "max" else min(scored)) if scored else None
    body = []
    for r, v in zip(rows, values):
        cells = [
            r.get("method", ""),
            fg._metric(r, "test", metric),
            fg._metric(r, "val", metric),
            r.get("best_epoch"),
            r.get("epochs_run"),
            _duration(float(r["seconds"])) if isinstance(r.get("seconds"), (int, float)) else None,
        ]
        body.append(RowClass("best", cells) if v is not None and v == best else cells)
    caption = (
        f"Each method trained on the same data; {metric} of its final model ({'higher' if mode == 'max' else 'lower'}"
        " is better; the best is highlighted)."
    )
    return figure(path, f"{metric} by method", caption) + table(
        ["method", f"test {metric}", f"val {metric}", "best epoch", "epochs run", "time"], body, (1, 2, 3, 4, 5)
    )


def curves_section(page: Page) -> str:
    run = page.run
    if not run.history:
        return note("No per-epoch history in this folder.")
    best = run.best_epoch()
    metric, _ = run.main_metric()
    parts = []
    loss = page.fig("loss", lambda p: fg.loss_curves(run.history, best, p))
    exclude = ("perplexity",) if run.task == "masked-lm" else ()  # drawn on its own below
    metrics = page.fig("metrics", lambda p: fg.metric_curves(run.history, best, p, main=metric, exclude=exclude))
    parts.append('<div class="row">')
    parts.append(
        figure(
            loss,
            "loss per epoch",
            "Mean training loss over each epoch's batches; validation loss "
            "after the epoch. Dotted line: the epoch whose weights were kept.",
        )
    )
    if run.task == "masked-lm":
        ppl = page.fig("perplexity", lambda p: fg.perplexity_curves(run.history, best, p))
        parts.append(
            figure(
                ppl,
                "perplexity per epoch",
                "Validation perplexity on the held-out blocks (fixed "
                "masks); training curve = exp of the mean masked-token loss.",
            )
        )
    parts.append("</div>")
    parts.append(figure(metrics, "metrics per epoch", f"Metrics per epoch; {metric} picks the best epoch."))
    per_class = page.fig("per_class_curves", lambda p: fg.per_class_curves(run.history, best, p))
    parts.append(figure(per_class, "per-class metrics per epoch"))
    parts.append(history_table(run))
    return "".join(parts)


def history_table(run: RunData) -> str:
    cols = []
    for row in run.history:
        cols += [k for k in row if k not in cols and k != "best" and not fg.is_per_class(k)]
    cols = cols[:12]
    best = run.best_epoch()
    body = []
    for row in run.history:
        cells = [row.get(c) for c in cols]
        body.append(RowClass("best", cells) if best is not None and row.get("epoch") == best else cells)
    return "<h3>History</h3>" + table(cols, body, numeric=range(len(cols)))


def lr_section(page: Page) -> str:
    run = page.run
    trace = run.extra.get("lr_trace") or []
    path_unit: dict[str, Any] = {}

    def draw(p: Path) -> Path | None:
        out, path_unit["unit"], path_unit["same"] = fg.lr_schedule(trace, run.history, p)
        return out

    path = page.fig("lr", draw)
    if path is None:
        return ""
    cfg = run.meta.get("config") or {}
    lr, mult = cfg.get("lr"), cfg.get("head_lr_mult")
    freeze = cfg.get("freeze")
    if path_unit.get("same") and freeze not in (None, "none"):
        groups = f"one rate for the layers that train (freeze={freeze}: the frozen pretrained layers have none)"
    elif path_unit.get("same"):
        groups = f"lr {fmt(lr)} for every parameter (this model has no pretrained/new split)"
    else:
        groups = f"lr {fmt(lr)} for the pretrained weights, lr × {fmt(mult)} for newly initialised layers"
    text = (
        f"{groups}; schedule {cfg.get('schedule', '?')}, warmup {fmt(cfg.get('warmup'))}, "
        f"freeze {cfg.get('freeze', '?')}."
    )
    if path_unit.get("unit") == "epoch":
        text += " Rates per epoch from history.csv (the per-step trace is recorded only by a run's own report)."
    return figure(path, "learning rate schedule", text)


def classification_section(page: Page) -> str:
    run = page.run
    cls = run.extra.get("classification")
    if not cls:
        return note(
            "The confusion matrix and per-class scores are collected at the end of a run; this folder has none "
            "(rendered from transferkit.json and history.csv only)."
        )
    names, split = cls["class_names"], cls["split"]
    split_name = "test" if split == "test" else "validation"
    cm = page.fig(
        "confusion",
        lambda p: fg.confusion_matrix(names, cls["confusion"], p, f"Confusion matrix ({split_name} split)"),
    )
    per = page.fig(
        "per_class", lambda p: fg.per_class_scores(cls["per_class"], p, f"Per-class scores ({split_name} split)")
    )
    k = len(names)
    shown = " (the 25 largest classes)" if k > fg.MAX_CLASSES_SHOWN else ""
    parts = ['<div class="row">']
    parts.append(
        figure(
            cm,
            "confusion matrix",
            f"Rows: true class, columns: predicted class{shown}; colour = share "
            "of the true class (recall on the diagonal), numbers = counts.",
        )
    )
    parts.append(figure(per, "per-class precision recall F1", "Precision, recall and F1 per class; n = samples."))
    parts.append("</div>")
    rows = [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in cls["per_class"][:200]]
    parts.append(table(["class", "precision", "recall", "F1", "support"], rows, (1, 2, 3, 4)))
    pairs = fg_pairs(cls)
    if pairs:
        parts.append("<h3>Most-confused pairs</h3>")
        parts.append(table(["true class", "predicted as", "count", "share of true class"], pairs, (2, 3)))
    return "".join(parts)


def fg_pairs(cls: Mapping[str, Any]) -> list[list[Any]]:
    from .examples import confused_pairs

    names, cm = cls["class_names"], cls["confusion"]
    out = []
    for t, p, count in confused_pairs(cm, k=8):
        total = sum(cm[t])
        out.append([names[t], names[p], count, f"{count / total:.0%}" if total else "–"])
    return out


def confusion_examples_section(page: Page, ex: Mapping[str, Any]) -> str:
    parts = [
        f'<p class="caption">Images of the {esc(ex.get("split", ""))} split that the final model puts in the wrong '
        "class, for the most frequent confusions; p = the model's probability for the predicted class (and for "
        "the true one).</p>"
    ]
    for n in ex.get("notes", []):
        parts.append(note(n))
    for pair in ex.get("pairs", []):
        parts.append(f"<h3>{esc(pair['true'])} → predicted {esc(pair['pred'])} ({esc(pair['count'])}×)</h3>")
        thumbs = []
        for item in pair.get("examples", []):
            path = page.dir / item["file"]
            if not path.is_file():
                continue
            p_true = f", p(true) {item['p_true']:.2f}" if isinstance(item.get("p_true"), (int, float)) else ""
            thumbs.append(
                f'<figure class="thumb"><img src="{data_uri(path)}" alt="{esc(item.get("name", ""))}">'
                f'<span class="wrap">{esc(item.get("name", ""))}</span><br>p {item.get("score", 0):.2f}{p_true}'
                "</figure>"
            )
        parts.append(f'<div class="thumbs">{"".join(thumbs)}</div>' if thumbs else note("No example found again."))
    return "".join(parts)


def text_examples_section(page: Page, ex: Mapping[str, Any]) -> str:
    items = ex.get("items", [])
    parts = []
    scanned, mistakes = ex.get("scanned"), ex.get("mistakes")
    if scanned is not None:
        parts.append(
            f'<p class="caption">{esc(mistakes)} of the first {esc(scanned)} texts of the {esc(ex.get("split", ""))} '
            "split are misclassified; the most confident mistakes are shown. Texts are decoded from the token ids "
            "the model saw (so the tokenizer's normalisation, e.g. lower case, shows) and predicted again from "
            "the decoded text: <b>exact</b> marks texts whose re-tokenisation gives the same ids; <b>at "
            f"max_length</b> marks texts that fill all max_length={esc(ex.get('max_length'))} tokens: they were most "
            "likely cut there, and neither the model nor this page saw their end.</p>"
        )
    for n in ex.get("notes", []):
        parts.append(note(n))
    rows = []
    for it in items:
        text = esc(it["text"])
        if it.get("pair"):
            text += f' <span class="caption">[pair]</span> {esc(it["pair"])}'
        flags = []
        if it.get("truncated"):
            flags.append(f"at max_length ({it.get('tokens')} tokens)")
        flags.append("exact" if it.get("exact") else "re-tokenised differently")
        rows.append(
            [
                Raw(f'<span class="wrap">{text}</span>'),
                it["true"],
                it["pred"],
                it["score"],
                it.get("p_true"),
                ", ".join(flags),
            ]
        )
    if rows:
        parts.append(table(["text", "true", "predicted", "p(predicted)", "p(true)", "input"], rows, (3, 4)))
    elif scanned:
        parts.append(note("No misclassified texts among those scanned."))
    return "".join(parts)


def fill_mask_section(page: Page, ex: Mapping[str, Any]) -> str:
    items = ex.get("items", [])
    mask = ex.get("mask_token", "[MASK]")
    parts = [
        f'<p class="caption">One whole word of a window of each held-out block replaced by {esc(mask)}; the '
        "model's five most probable tokens for it (✓: the masked word is among them). Windows are cut from the "
        "token blocks, so they may start or end mid-sentence (…).</p>"
    ]
    for n in ex.get("notes", []):
        parts.append(note(n))
    rows = []
    hits = 0
    for it in items:
        text = esc(it["text"]).replace(esc(mask), f"<b>{esc(mask)}</b>")
        top = ", ".join(f"{esc(t['token'])} ({t['score']:.2f})" for t in it.get("top", []))
        rank = it.get("rank")
        hits += rank is not None
        mark = f'<span class="ok">✓ #{rank}</span>' if rank else '<span class="bad">✗</span>'
        rows.append([Raw(f'<span class="wrap">{text}</span>'), it["answer"], Raw(top), Raw(mark)])
    if rows:
        parts.append(table(["context", "masked word", "top-5 predictions", "in top 5"], rows))
        parts.append(f'<p class="caption">{hits} of {len(rows)} masked words are in the top 5.</p>')
    return "".join(parts)


def _final_metrics(run: RunData) -> tuple[str, dict[str, Any]]:
    metrics = run.meta.get("metrics") or {}
    for split in ("test", "val"):
        if metrics.get(split):
            return split, dict(metrics[split])
    return "", {}


def segmentation_section(page: Page) -> str:
    run = page.run
    split, values = _final_metrics(run)
    parts = []
    ious = {k[4:]: float(v) for k, v in values.items() if k.startswith("iou_") and isinstance(v, (int, float))}
    split_name = "test" if split == "test" else "validation"
    bars = page.fig(
        "iou_per_class",
        lambda p: fg.per_class_bars(ious, p, f"IoU per class ({split_name} split)", "intersection over union"),
    )
    seg = run.extra.get("segmentation")
    cm = None
    if seg:
        cm = page.fig(
            "pixel_confusion",
            lambda p: fg.confusion_matrix(
                seg["class_names"],
                seg["confusion"],
                p,
                f"Pixel confusion ({'test' if seg['split'] == 'test' else 'validation'} split)",
                unit="pixels",
            ),
        )
    parts.append('<div class="row">')
    parts.append(
        figure(
            bars,
            "IoU per class",
            f"mIoU {fmt(values.get('miou'))} · Dice {fmt(values.get('dice'))} · "
            f"pixel accuracy {fmt(values.get('pixel_accuracy'))}; classes absent from both the targets "
            "and the predictions have no IoU and are not shown.",
        )
    )
    parts.append(figure(cm, "pixel confusion matrix", "Rows: true class, columns: predicted class (pixels)."))
    parts.append("</div>")
    ex = run.extra.get("examples") or {}
    if ex.get("kind") == "segmentation":
        names = (seg or {}).get("class_names") or [str(i) for i in range(256)]
        palette = ex.get("palette")
        grid = page.fig(
            "segmentation_examples",
            lambda p: fg.segmentation_grid(
                ex.get("items", []), page.dir, p, names, palette, int(ex.get("ignore_index", 255))
            ),
        )
        parts.append("<h3>Examples</h3>")
        for n in ex.get("notes", []):
            parts.append(note(n))
        parts.append(
            figure(
                grid,
                "segmentation examples",
                f"Images of the {ex.get('split', '')} split with the "
                "ground-truth and predicted masks (thumbnails; per-image pixel accuracy and mIoU at the "
                "original size).",
            )
        )
    elif not ious:
        parts.append(note("No per-class IoU or examples recorded for this run."))
    return "".join(parts)


def detection_section(page: Page) -> str:
    run = page.run
    split, values = _final_metrics(run)
    split_name = "test" if split == "test" else "validation"
    aps = {k[3:]: float(v) for k, v in values.items() if k.startswith("ap_") and isinstance(v, (int, float))}
    bars = page.fig(
        "ap_per_class", lambda p: fg.per_class_bars(aps, p, f"AP per class ({split_name} split)", "AP @ IoU 0.50:0.95")
    )
    coco = [
        [k, values[k]]
        for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
        if k in values
    ]
    parts = [
        '<div class="row">',
        figure(
            bars,
            "AP per class",
            "COCO AP averaged over IoU 0.50:0.95 per class; n/a: no ground-truth box of the class in the split.",
        ),
    ]
    if coco:
        parts.append(
            "<div><h3>COCO metrics</h3>"
            + table(["metric", "value"], [[k, v if v >= 0 else None] for k, v in coco], (1,))
            + "</div>"
        )
    parts.append("</div>")
    ex = run.extra.get("examples") or {}
    if ex.get("kind") == "detection":
        grid = page.fig(
            "detection_examples", lambda p: fg.detection_grid(ex.get("items", []), page.dir, p, DETECTION_THRESHOLD)
        )
        parts.append("<h3>Examples</h3>")
        for n in ex.get("notes", []):
            parts.append(note(n))
        parts.append(
            figure(
                grid,
                "detection examples",
                f"Images of the {ex.get('split', '')} split: ground-truth "
                f"boxes dashed, the final model's boxes with score ≥ {DETECTION_THRESHOLD:g} solid.",
            )
        )
    return "".join(parts)


def metrics_section(page: Page) -> str:
    metrics = page.run.meta.get("metrics") or {}
    splits = [s for s in ("train", "val", "test") if metrics.get(s)] + [
        s for s in metrics if s not in ("train", "val", "test") and metrics.get(s)
    ]
    if not splits:
        return note("No final metrics were recorded.")
    names: list[str] = []
    for s in splits:
        names += [k for k in metrics[s] if k not in names and not fg.is_per_class(k)]
    rows = [[n, *[_metric_value(page.run.task, n, (metrics[s] or {}).get(n)) for s in splits]] for n in names]
    best_reason = page.run.meta.get("best_reason")
    caption = f'<p class="caption">Of the final model ({esc(best_reason)}).</p>' if best_reason else ""
    return caption + table(["metric", *splits], rows, numeric=range(1, len(splits) + 1))


def _metric_value(task: str, name: str, value: Any) -> Any:
    """COCO's -1 means "nothing to score" (no ground truth of that size or class): shown as n/a, not a number."""
    if task == "object-detection" and name.startswith(("map", "mar", "ap_")) and value == -1:
        return "n/a"
    return value


def details_section(page: Page) -> str:
    run = page.run
    meta = run.meta
    parts = []
    timings = meta.get("timings") or {}
    if timings:
        path = page.fig("timings", lambda p: fg.timings(timings, p))
        total = sum(v for v in timings.values() if isinstance(v, (int, float)))
        parts.append('<div class="row">')
        parts.append(
            figure(
                path,
                "time per phase",
                f"setup: building the optimizer, loaders and accelerator; data: "
                f"reading data and building the model; total {_duration(total)}.",
            )
        )
        parts.append("<div><h3>Hardware</h3>" + hardware_table(run) + "</div>")
        parts.append("</div>")
    else:
        parts.append("<h3>Hardware</h3>" + hardware_table(run))
    cfg = list((meta.get("config") or {}).items())
    half = (len(cfg) + 1) // 2
    parts.append('<h3>Configuration</h3><div class="row">')
    for chunk in (cfg[:half], cfg[half:]):
        rows = [[k, Raw(f'<span class="mono wrap">{esc(_value(v))}</span>')] for k, v in chunk]
        parts.append(f'<div style="flex:1 1 420px">{table(["option", "value"], rows, cls="kv")}</div>')
    parts.append('</div><div class="row"><div style="flex:1 1 420px">')
    options = meta.get("options") or {}
    if options:
        parts.append("<h3>Task options</h3>")
        parts.append(
            table(
                ["option", "value"],
                [[k, Raw(f'<span class="mono wrap">{esc(_value(v))}</span>')] for k, v in options.items()],
                cls="kv",
            )
        )
    facts = [
        ["status", meta.get("status")],
        ["best epoch", run.best_epoch()],
        ["best because", meta.get("best_reason")],
        ["epochs run", meta.get("epochs_run")],
        ["stopped early", meta.get("stopped_early")],
        ["skipped steps", meta.get("skipped_steps")],
        ["resumed from", meta.get("resumed_from")],
        ["output folder", str(run.folder)],
    ]
    parts.append("<h3>Run</h3>" + table(["", ""], [f for f in facts if f[1] is not None], cls="kv"))
    versions = meta.get("versions") or {}
    parts.append('</div><div style="flex:1 1 420px">')
    if versions:
        parts.append("<h3>Library versions</h3>" + table(["library", "version"], list(versions.items()), cls="kv"))
    parts.append("</div></div>")
    return "".join(parts)


def hardware_table(run: RunData) -> str:
    hw = run.extra.get("hardware")
    if not hw:
        return note("Not recorded (this report was rendered from the run folder alone).")
    rows = [
        ["CPU", hw.get("cpu")],
        ["CPU cores", f"{hw.get('cpu_count')}" + (f" ({hw['cpus_usable']} usable)" if hw.get("cpus_usable") else "")],
        ["memory", f"{hw['memory_gb']} GB" if hw.get("memory_gb") else None],
        ["torch device", hw.get("device")],
        ["torch threads", hw.get("torch_threads")],
        ["CUDA devices", ", ".join(hw.get("cuda_devices") or []) or "none"],
        ["platform", hw.get("platform")],
    ]
    return table(["", ""], [r for r in rows if r[1] is not None], cls="kv")


def _value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return fmt(v) if isinstance(v, float) else str(v)
