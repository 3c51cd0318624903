"""Run reports: report.html after a quick run of each task, valid figures, a self-contained page, rendering from a
folder's files alone, segmentation/detection rendering from hand-built metrics and datasets, and robustness."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from text_toys import TINY_BERT, corpus, sentiment, tiny_bert_folder, write_csv

import transferkit as tk
from transferkit.artifacts import write_meta
from transferkit.config import FinetuneConfig
from transferkit.engine import loop
from transferkit.engine.callbacks import write_history
from transferkit.errors import ArtifactError
from transferkit.report import render_report, write_report
from transferkit.tasks.base import Splits

# "teal" and "teal2" are drawn from the same colour: no model can tell them apart, so the test split always holds
# confusions to show.
COLORS = {"blue": (30, 30, 200), "red": (200, 30, 30), "teal": (30, 150, 150), "teal2": (30, 150, 150)}
FAST = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, batch_size=8, quiet=True, lr=3e-3)


class Capture:
    """Records what the engine saw (task, splits, outcome, final model), to call write_report with all of it."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def __enter__(self):
        self.mp = pytest.MonkeyPatch()
        original = loop.Trainer.fit
        seen = self.seen

        def fit(trainer):
            outcome = original(trainer)
            seen.update(task=trainer.task, splits=trainer.splits, outcome=outcome, model=trainer.model)
            return outcome

        self.mp.setattr(loop.Trainer, "fit", fit)
        return self.seen

    def __exit__(self, *exc) -> None:
        self.mp.undo()


def full_report(out: Path, seen: dict) -> Path:
    return write_report(out, task=seen["task"], outcome=seen["outcome"], model=seen["model"], splits=seen["splits"])


def check_page(out: Path, figures: tuple[str, ...] = ()) -> str:
    """The checks every report passes; returns the page's HTML."""
    page = out / "report.html"
    assert page.is_file()
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 3_000_000
    # self-contained: no external src/href, no scripts, every image inline
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    report = out / "report"
    for png in sorted(report.rglob("*.png")):
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            w, h = im.size
            assert im.format == "PNG"
        assert 16 <= w <= 2000 and 16 <= h <= 3000, (png, w, h)
    for png in sorted(report.glob("*.png")):  # every figure is on the page, byte for byte
        assert base64.b64encode(png.read_bytes()).decode() in text, png.name
    for name in figures:
        assert (report / f"{name}.png").is_file(), name
    return text


def data_json(out: Path) -> dict:
    return json.loads((out / "report" / "data.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# image classification
# ----------------------------------------------------------------------------------------------------------------
def make_image_splits(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        for name, color in COLORS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(color) + rng.normal(0, 30, (28, 36, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{name}-{i}.png")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    data = make_image_splits(tmp_path_factory.mktemp("imgs"))
    out = tmp_path_factory.mktemp("img-run") / "run"
    with Capture() as seen:
        result = tk.finetune("image-classification", data=str(data), epochs=2, output_dir=str(out), **FAST)
    return out, seen, result


def test_a_finished_run_has_a_report(image_run):
    out, _, _ = image_run
    assert (out / "report.html").is_file()  # written by the run itself
    check_page(out, ("loss", "metrics", "lr", "timings"))


def test_image_classification_report(image_run):
    out, seen, result = image_run
    path = full_report(out, seen)
    assert path == out / "report.html"
    text = check_page(out, ("loss", "metrics", "lr", "confusion", "per_class", "timings"))
    data = data_json(out)
    assert data["notes"] == []
    cls = data["classification"]
    assert cls["split"] == "test" and cls["class_names"] == ["blue", "red", "teal", "teal2"]
    confusion = np.array(cls["confusion"])
    assert confusion.sum() == 16 and confusion.tolist() == seen["outcome"].metric_objects["test"].confusion.tolist()
    assert np.trace(confusion) / 16 == pytest.approx(result.metrics["test"]["accuracy"])
    assert [r["support"] for r in cls["per_class"]] == [4, 4, 4, 4]
    # the examples are real mistakes of the final model, of the pair they are filed under
    ex = data["examples"]
    assert ex["kind"] == "image-confusions" and ex["pairs"]
    shown = 0
    for pair in ex["pairs"]:
        t, p = cls["class_names"].index(pair["true"]), cls["class_names"].index(pair["pred"])
        assert pair["count"] == confusion[t, p] > 0 and t != p
        for item in pair["examples"]:
            assert item["name"].rsplit("-", 1)[0] == pair["true"]
            assert 0 < item["score"] <= 1 and item["p_true"] < item["score"]
            thumb = out / "report" / item["file"]
            with Image.open(thumb) as im:
                assert max(im.size) <= 160
            assert base64.b64encode(thumb.read_bytes()).decode() in text
            shown += 1
    assert shown >= 1
    assert "Most-confused classes" in text and "Confusion matrix" not in text  # titles live inside the PNGs
    # hardware and per-step LR trace were recorded
    assert data["hardware"]["cpu_count"] >= 1 and data["hardware"]["device"] == "cpu"
    assert len(data["lr_trace"]) >= 2 and {"step", "lr", "lr_new"} <= set(data["lr_trace"][0])
    assert data["monitor"] == "val/accuracy"


def test_render_from_run_files_only(image_run, tmp_path):
    out, _, result = image_run
    bare = tmp_path / "old-run"
    bare.mkdir()
    for name in ("transferkit.json", "history.csv"):
        shutil.copy(out / name, bare / name)
    path = render_report(bare)
    text = check_page(bare, ("loss", "metrics", "lr", "timings"))
    assert path == bare / "report.html"
    assert not (bare / "report" / "confusion.png").exists()
    assert "rendered from transferkit.json and history.csv only" in text
    assert "Not recorded" in text  # hardware of the run is unknown, not this machine's
    assert "timm:test_resnet" in text and "image_size" in text  # config and task options
    assert f"{result.metrics['test']['accuracy']:.4g}" in text
    # rendering again replaces the figures instead of piling them up
    (bare / "report" / "stale.png").write_bytes((bare / "report" / "loss.png").read_bytes())
    render_report(bare)
    assert not (bare / "report" / "stale.png").exists()


def test_transfer_summary_from_a_comparison(image_run, tmp_path):
    out, _, _ = image_run
    folder = tmp_path / "compared"
    folder.mkdir()
    shutil.copy(out / "history.csv", folder / "history.csv")
    meta = json.loads((out / "transferkit.json").read_text())
    meta["comparison"] = [
        {
            "method": "full fine-tune",
            "metrics": {"test": {"accuracy": 0.91}, "val": {"accuracy": 0.9}},
            "best_epoch": 4,
            "epochs_run": 5,
            "seconds": 61.0,
        },
        {
            "method": "from scratch",
            "metrics": {"test": {"accuracy": 0.52}, "val": {"accuracy": 0.55}},
            "best_epoch": 5,
            "epochs_run": 5,
            "seconds": 58.5,
        },
        {
            "method": "linear probe",
            "metrics": {"test": {"accuracy": 0.74}, "val": {"accuracy": 0.7}},
            "best_epoch": 3,
            "epochs_run": 5,
            "seconds": 12.25,
        },
    ]
    (folder / "transferkit.json").write_text(json.dumps(meta))
    render_report(folder)
    text = check_page(folder, ("comparison",))
    summary = text[text.index('id="summary"') : text.index('id="curves"')]
    assert summary.count("<tr") == 4  # header + 3 methods
    best_row = re.search(r'<tr class="best">(.*?)</tr>', summary).group(1)
    assert "full fine-tune" in best_row and "0.91" in best_row
    assert "from scratch" in summary and "linear probe" in summary


# ----------------------------------------------------------------------------------------------------------------
# text classification and masked-LM
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews")
    bert = tiny_bert_folder(folder / "bert", corpus(300))
    test = sentiment(40, seed=2)
    test["label"] = ["pos" if i % 2 else "neg" for i in range(40)]  # labels unrelated to the texts: mistakes
    files = {
        "train": str(write_csv(folder / "train.csv", sentiment(160, seed=0))),
        "val": str(write_csv(folder / "val.csv", sentiment(40, seed=1))),
        "test": str(write_csv(folder / "test.csv", test)),
    }
    out = tmp_path_factory.mktemp("text-run") / "run"
    with Capture() as seen, pytest.warns(UserWarning, match="truncated to max_length=14"):
        tk.finetune(
            "text-classification",
            data=files,
            backbone=f"hf:{bert}",
            output_dir=str(out),
            epochs=2,
            batch_size=16,
            lr=2e-3,
            head_lr_mult=1.0,
            quiet=True,
            max_length=14,
        )
    return out, seen, test


def test_text_classification_report(text_run):
    out, seen, test = text_run
    full_report(out, seen)
    text = check_page(out, ("loss", "metrics", "lr", "confusion", "per_class"))
    ex = data_json(out)["examples"]
    assert ex["kind"] == "text-mistakes" and ex["scanned"] == 40 and ex["max_length"] == 14
    cm = np.array(data_json(out)["classification"]["confusion"])
    assert ex["mistakes"] == cm.sum() - np.trace(cm) and 1 <= len(ex["items"]) <= 8
    by_text = dict(zip(test["text"], test["label"]))
    for item in ex["items"]:
        assert item["true"] != item["pred"] and item["score"] >= 0.5
        # decoded from the ids the model saw: an original text (lower case already), or its truncated start
        original = [t for t in test["text"] if t == item["text"] or t.startswith(item["text"])]
        assert original, item["text"]
        assert item["truncated"] == (item["tokens"] >= 14)
        if not item["truncated"]:
            assert item["text"] in by_text and by_text[item["text"]] == item["true"] and item["exact"]
    assert "Misclassified texts" in text and ex["items"][0]["text"] in text
    scores = [it["score"] for it in ex["items"]]
    assert scores == sorted(scores, reverse=True)  # the most confident mistakes first


def test_masked_lm_report(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(corpus(400, seed=1)) + "\n")
    out = tmp_path / "mlm"
    with Capture() as seen:
        tk.pretrain(
            "masked-lm",
            data=str(folder / "train.txt"),
            backbone="hf-config:bert",
            model_config=TINY_BERT,
            tokenizer="train",
            vocab_size=300,
            max_length=32,
            batch_size=32,
            quiet=True,
            epochs=2,
            lr=2e-3,
            output_dir=str(out),
        )
    full_report(out, seen)
    text = check_page(out, ("loss", "perplexity", "lr"))
    assert not (out / "report" / "confusion.png").exists()
    ex = data_json(out)["examples"]
    assert ex["kind"] == "fill-mask" and 1 <= len(ex["items"]) <= 6
    words = set(" ".join(corpus(400, seed=1)).split())
    for item in ex["items"]:
        assert item["text"].count("[MASK]") == 1 and item["answer"] in words
        assert len(item["top"]) == 5 and all(0 <= t["score"] <= 1 for t in item["top"])
        tokens = [t["token"] for t in item["top"]]
        assert item["rank"] == (tokens.index(item["answer"]) + 1 if item["answer"] in tokens else None)
    assert "Fill-mask examples" in text and "for every parameter" in text


# ----------------------------------------------------------------------------------------------------------------
# segmentation and detection: rendering from hand-built metric objects and datasets
# ----------------------------------------------------------------------------------------------------------------
class FakeTask:
    """Stands in for a task whose module is not merged yet: a name, labels and predict in the documented format."""

    def __init__(self, name: str, labels: list[str], predict) -> None:
        self.name, self.labels, self._predict = name, labels, predict
        self.config = FinetuneConfig(backbone="tv:mobilenet_v2")
        self.monitor = {"semantic-segmentation": "val/miou", "object-detection": "val/map"}[name]
        self.monitor_mode = "max"

    def predict(self, model, inputs, device, batch_size):
        return [self._predict(x) for x in inputs]


def write_run(out: Path, task: str, metrics: dict, history: list[dict]) -> None:
    write_meta(
        out,
        task=task,
        config=FinetuneConfig(backbone="tv:mobilenet_v2", epochs=len(history)),
        options=None,
        task_state={},
        metrics=metrics,
        extra={
            "best_epoch": 2,
            "epochs_run": len(history),
            "timings": {"setup": 0.5, "data": 1.0, "train": 9.0, "val": 1.5, "test": 0.7},
        },
    )
    write_history(out / "history.csv", history, best_epoch=2)


def outcome_with(metrics_obj, history: list[dict]) -> loop.FitOutcome:
    trace = [{"step": s, "lr": 1e-3 * (1 - s / 20), "lr_new": 1e-2 * (1 - s / 20)} for s in range(1, 20)]
    return loop.FitOutcome(history=history, lr_trace=trace, metric_objects={"test": metrics_obj})


def seg_pair(k: int, h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[5 + k : 20 + k, 4:24] = 1
    mask[22:36, 30 + k : 50] = 2
    mask[0:3, :] = 255  # a void border
    image = np.full((h, w, 3), 40, dtype=np.uint8)
    image[mask == 1] = (220, 60, 60)
    image[mask == 2] = (60, 200, 80)
    return image, mask


def test_segmentation_report(tmp_path):
    from transferkit.data.masks import SegmentationDataset
    from transferkit.metrics.segmentation import SegmentationMetrics

    pairs, truth = [], {}
    for k in range(5):
        image, mask = seg_pair(k)
        ip, mp = tmp_path / f"img{k}.png", tmp_path / f"img{k}_mask.png"
        Image.fromarray(image).save(ip)
        Image.fromarray(mask, mode="L").save(mp)
        pairs.append((str(ip), str(mp)))
        truth[str(ip)] = mask

    def predicted(mask: np.ndarray) -> np.ndarray:
        pred = np.where(mask == 255, 0, mask).astype(np.int64)
        pred[:, :14] = 0  # the left quarter is missed
        return pred

    classes = ["background", "square", "field"]
    metrics = SegmentationMetrics(3, class_names=classes)
    for mask in truth.values():
        metrics.update((torch.from_numpy(predicted(mask)), torch.from_numpy(mask.astype(np.int64))))
    values = metrics.compute()
    history = [
        {
            "epoch": e,
            "train/loss": 1.0 / e,
            "val/loss": 1.2 / e,
            "val/miou": 0.3 * e,
            "val/dice": 0.35 * e,
            "val/iou_background": 0.5,
            "val/iou_square": 0.2 * e,
            "val/iou_field": 0.25 * e,
            "lr": 1e-3,
            "lr_new": 1e-2,
        }
        for e in (1, 2, 3)
    ]
    out = tmp_path / "seg-run"
    write_run(out, "semantic-segmentation", {"val": values, "test": values}, history)
    task = FakeTask("semantic-segmentation", classes, lambda path: {"mask": predicted(truth[str(path)])})
    splits = Splits(train=None, test=SegmentationDataset(pairs), labels=classes)
    write_report(out, task=task, outcome=outcome_with(metrics, history), model=torch.nn.Linear(1, 1), splits=splits)
    text = check_page(
        out, ("loss", "metrics", "per_class_curves", "lr", "iou_per_class", "pixel_confusion", "segmentation_examples")
    )
    data = data_json(out)
    assert data["notes"] == [] and data["segmentation"]["confusion"] == metrics.confusion_matrix.tolist()
    ex = data["examples"]
    assert ex["kind"] == "segmentation" and len(ex["items"]) == 5 and ex["ignore_index"] == 255
    for item in ex["items"]:
        mask = truth[str(tmp_path / item["name"])]
        counted = mask != 255
        assert item["pixel_accuracy"] == pytest.approx((predicted(mask) == mask)[counted].mean())
        assert item["size"] == [40, 56]
        with Image.open(out / "report" / item["target"]) as im:
            assert im.size == (56, 40) and set(np.unique(np.asarray(im))) <= {0, 1, 2, 255}
        with Image.open(out / "report" / item["pred"]) as im:
            assert set(np.unique(np.asarray(im))) <= {0, 1, 2}
    assert f"{values['miou']:.4g}" in text and "Segmentation results" in text


def write_detection_data(folder: Path, n: int = 4) -> Path:
    images, anns = [], []
    for k in range(n):
        w, h = 200 + 16 * k, 120  # larger than a thumbnail: boxes must be scaled
        img = Image.new("RGB", (w, h), (25, 25, 25))
        draw = ImageDraw.Draw(img)
        for j, (cat, colour) in enumerate(((1, (230, 200, 40)), (3, (40, 160, 230)))):
            x, y = 8 + 40 * j + 4 * k, 10 + 6 * j
            draw.rectangle([x, y, x + 23, y + 19], fill=colour)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": cat,
                    "bbox": [x, y, 24, 20],
                    "area": 480,
                    "iscrowd": 0,
                }
            )
        img.save(folder / f"d{k}.png")
        images.append({"id": k + 1, "file_name": f"d{k}.png", "width": w, "height": h})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "sun"}, {"id": 3, "name": "sky"}]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def test_detection_report(tmp_path):
    from transferkit.data.coco import resolve_detection_data
    from transferkit.metrics.detection import DetectionMetrics

    data = resolve_detection_data({"train": str(write_detection_data(tmp_path)), "test": str(tmp_path)})
    split = data.test
    ds = split.build()
    names = data.class_names
    by_path = {p: (ds.boxes[i], ds.labels[i]) for i, p in enumerate(ds.paths)}

    def predicted(path) -> dict:
        boxes, labels = by_path[str(path)]
        return {"boxes": (boxes + 2.0).tolist(), "labels": [names[i - 1] for i in labels], "scores": [0.9, 0.6]}

    metrics = DetectionMetrics(split.coco, data.label_to_category, names, split="test")
    for i, p in enumerate(ds.paths):
        pred = predicted(p)
        metrics.update(
            [
                {
                    "image_id": ds.image_ids[i],
                    "boxes": np.array(pred["boxes"]),
                    "scores": pred["scores"],
                    "labels": ds.labels[i],
                }
            ]
        )
    values = metrics.compute()
    history = [
        {
            "epoch": e,
            "train/loss": 2.0 / e,
            "train/loss_box": 1.0 / e,
            "train/loss_classifier": 0.8 / e,
            "val/map": 0.2 * e,
            "val/map_50": 0.3 * e,
            "lr": 1e-3,
            "lr_new": 1e-2,
        }
        for e in (1, 2, 3)
    ]
    out = tmp_path / "det-run"
    write_run(out, "object-detection", {"val": values, "test": values}, history)
    task = FakeTask("object-detection", names, predicted)
    splits = Splits(train=None, test=ds, labels=names)
    write_report(out, task=task, outcome=outcome_with(metrics, history), model=torch.nn.Linear(1, 1), splits=splits)
    text = check_page(out, ("loss", "metrics", "lr", "ap_per_class", "detection_examples"))
    ex = data_json(out)["examples"]
    assert ex["kind"] == "detection" and len(ex["items"]) == 4
    for i, item in enumerate(ex["items"]):
        orig_h, orig_w = item["size"]
        with Image.open(out / "report" / item["file"]) as im:
            w, _ = im.size
        assert max(im.size) <= 160 and [orig_h, orig_w] == list(ds.sizes[i])
        scale = w / orig_w
        assert [g["label"] for g in item["ground_truth"]] == ["sun", "sky"]
        assert item["ground_truth"][0]["box"] == pytest.approx([v * scale for v in ds.boxes[i][0]], abs=0.06)
        assert [p["score"] for p in item["predictions"]] == [0.9, 0.6]
    assert "ap_sun" in values and f"{values['map']:.4g}" in text and "Detection results" in text
    assert "train loss_box" in text or (out / "report" / "loss.png").is_file()


# ----------------------------------------------------------------------------------------------------------------
# robustness
# ----------------------------------------------------------------------------------------------------------------
def test_broken_pieces_become_notes(image_run, tmp_path):
    out, seen, _ = image_run
    folder = tmp_path / "copy"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("checkpoints", "report*"))

    class Broken:
        name, labels, modality, config, monitor, monitor_mode = "image-classification", [], "image", None, "", "max"

        def predict(self, *a, **k):
            raise RuntimeError("predict is broken")

    path = write_report(folder, task=Broken(), outcome=seen["outcome"], model=seen["model"], splits=seen["splits"])
    text = check_page(folder, ("confusion", "loss"))
    assert path.is_file() and "Examples skipped (RuntimeError: predict is broken)" in text
    # a half-written history.csv and an unreadable data.json still give a page
    (folder / "history.csv").write_text("epoch,train/loss\n1,0.5\n2,\n3,abc\n")
    (folder / "report" / "data.json").write_text("{not json")
    render_report(folder)
    text = check_page(folder, ("loss",))
    assert "could not be read" in text
    with pytest.raises(ArtifactError, match="transferkit.json is missing"):
        render_report(tmp_path / "nowhere")


def test_write_report_without_model_or_splits_says_so(image_run, tmp_path):
    out, seen, _ = image_run
    folder = tmp_path / "partial"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("checkpoints", "report*"))
    write_report(folder, task=seen["task"], outcome=seen["outcome"])
    text = check_page(folder, ("confusion", "per_class"))
    assert "Examples need the model and the datasets" in text
    assert not (folder / "report" / "examples").exists()


def test_importing_transferkit_does_not_import_matplotlib():
    code = "import sys, transferkit, transferkit.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


# ----------------------------------------------------------------------------------------------------------------
# a real browser
# ----------------------------------------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_headless_chromium_renders_every_image(image_run, tmp_path):
    out, seen, _ = image_run
    full_report(out, seen)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
    ]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", dom.stdout)
    expected = len(re.findall(r"<img\b", (out / "report.html").read_text()))
    assert len(srcs) == expected >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    shot = tmp_path / "page.png"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", "--window-size=1200,2000", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("RGB")).astype(np.int16)
    assert arr.shape[:2] == (2000, 1200)
    assert arr.std() > 10  # not a blank page
    # the figures were drawn: some strongly coloured pixels (the curves' blue and orange)
    saturated = (arr.max(-1) - arr.min(-1)) > 120
    assert saturated.mean() > 0.001
