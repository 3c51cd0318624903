"""What a run report is made of: the run folder's own files (transferkit.json, history.csv) plus what
`write_report` collects at the end of a run (report/data.json: evaluation matrices, examples, LR trace, hardware).

`render_report` needs only what is on disk, so a folder written before reports existed still gets its curves and
config, and a report can be rendered again later (``transferkit report RUN_DIR``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_DIR = "report"  # figures, example thumbnails and data.json
DATA_FILE = "data.json"
PAGE_FILE = "report.html"
DATA_FORMAT = 1

# The main metric of each task (name, "max"/"min"), for runs whose task class cannot be imported.
MAIN_METRICS = {
    "image-classification": ("accuracy", "max"),
    "text-classification": ("accuracy", "max"),
    "semantic-segmentation": ("miou", "max"),
    "object-detection": ("map", "max"),
    "masked-lm": ("perplexity", "min"),
}


@dataclass
class RunData:
    """Everything the page shows, read from a run folder.

    Attributes:
        folder: the run's output folder.
        meta: transferkit.json.
        history: one dict per epoch from history.csv (values are floats, None where a column was empty).
        extra: report/data.json as `write_report` left it ({} for older folders).
        notes: what was skipped and why (shown on the page).
    """

    folder: Path
    meta: dict[str, Any]
    history: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.meta.get("task", ""))

    @property
    def report_dir(self) -> Path:
        return self.folder / REPORT_DIR

    def main_metric(self) -> tuple[str, str]:
        """(bare metric name, "max" or "min"): the metric that picked the best epoch, as the engine chose it."""
        if self.extra.get("monitor"):
            return str(self.extra["monitor"]).split("/", 1)[-1], str(self.extra.get("monitor_mode") or "max")
        cfg = self.meta.get("config") or {}
        stop = cfg.get("early_stopping")
        monitor = cfg.get("monitor") or (stop.get("monitor") if isinstance(stop, dict) else None)
        task_monitor, task_mode = _task_monitor(self.task)
        if not monitor or monitor == task_monitor:
            return task_monitor.split("/", 1)[-1], task_mode
        from ..engine.callbacks import infer_mode

        return str(monitor).split("/", 1)[-1], infer_mode(str(monitor))

    def best_epoch(self) -> int | None:
        """The 1-based epoch whose weights were restored (transferkit.json, else history's ``best`` column)."""
        best = self.meta.get("best_epoch")
        if isinstance(best, int):
            return best
        for row in self.history:
            if row.get("best") == 1 and row.get("epoch") is not None:
                return int(row["epoch"])
        return None


def _task_monitor(task: str) -> tuple[str, str]:
    try:
        from ..tasks import get_task

        cls = get_task(task)
        return str(cls.monitor), str(cls.monitor_mode)
    except Exception:  # noqa: BLE001 - a task module that is not installed here: the known defaults
        name, mode = MAIN_METRICS.get(task, ("loss", "min"))
        return f"val/{name}", mode


def load_run(output_dir: str | os.PathLike) -> RunData:
    """Reads a run folder for the report: transferkit.json (required), history.csv and report/data.json (optional).

    Raises:
        ArtifactError: `output_dir` is not a transferkit output folder.

    Example:
        >>> run = load_run("runs/pets")  # doctest: +SKIP
        >>> run.task, len(run.history)  # doctest: +SKIP
        ('image-classification', 10)
    """
    from ..artifacts import read_meta

    folder = Path(output_dir)
    meta = read_meta(folder)
    notes: list[str] = []
    history: list[dict[str, Any]] = []
    hist_path = folder / "history.csv"
    if hist_path.is_file():
        try:
            history = read_history(hist_path)
        except (OSError, ValueError, csv.Error) as e:
            notes.append(f"history.csv could not be read ({e}); no curves.")
    extra: dict[str, Any] = {}
    data_path = folder / REPORT_DIR / DATA_FILE
    if data_path.is_file():
        try:
            loaded = json.loads(data_path.read_text(encoding="utf-8"))
            extra = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as e:
            notes.append(f"{data_path} could not be read ({e}); the page shows only the run's own files.")
    if not history and extra.get("history"):
        history = [dict(row) for row in extra["history"]]
    if not history and not hist_path.is_file():
        notes.append("history.csv is missing: no per-epoch curves.")
    return RunData(folder, meta, history, extra, notes)


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """history.csv as a list of dicts of floats (None for an empty cell; ``epoch`` and ``best`` as ints).

    Example:
        >>> read_history("runs/pets/history.csv")[0]["train/loss"]  # doctest: +SKIP
        1.02
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key is None:  # a row longer than the header
                    continue
                row[key] = _number(value)
            for key in ("epoch", "best"):
                if isinstance(row.get(key), float) and math.isfinite(row[key]):
                    row[key] = int(row[key])
            rows.append(row)
    return rows


def _number(value: Any) -> float | str | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def hardware(model: Any = None) -> dict[str, Any]:
    """The machine this report is written on: CPU, memory, torch device and threads, CUDA devices.

    Example:
        >>> sorted(hardware())[:3]
        ['cpu', 'cpu_count', 'cuda_devices']
    """
    out: dict[str, Any] = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        out["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out["memory_gb"] = round(pages * page_size / 1e9, 1)
    except (AttributeError, ValueError, OSError):
        pass
    out["cuda_devices"] = []
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if model is not None:
            param = next(iter(model.parameters()), None)
            out["device"] = str(param.device) if param is not None else "cpu"
    except Exception:  # noqa: BLE001 - hardware facts are a nicety; a broken driver must not stop the report
        pass
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jsonable(value: Any) -> Any:
    """Plain JSON values (tensors and numpy numbers become lists/numbers; non-finite floats stay as Python
    writes them, which json.loads reads back)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return jsonable(tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def collect(output_dir: Path, task: Any = None, outcome: Any = None, model: Any = None, splits: Any = None) -> dict:
    """What only the end of a run knows, as report/data.json content; example thumbnails go to report/examples/.

    Each piece is collected on its own; a piece that fails is replaced by a note, so this never raises for a
    broken dataset, metric or model.
    """
    import shutil
    import time

    from . import examples as ex

    folder = Path(output_dir) / REPORT_DIR
    shutil.rmtree(folder / ex.EXAMPLES_DIR, ignore_errors=True)  # examples of an earlier report of this folder
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"format": DATA_FORMAT, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": []}
    notes: list[str] = data["notes"]

    def attempt(what: str, fn) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the report must never fail a run; say what is missing instead
            notes.append(f"{what} skipped ({type(e).__name__}: {e}).")
            return None

    data["hardware"] = attempt("Hardware facts", lambda: hardware(model))
    if task is not None:
        data["task"] = str(getattr(task, "name", "") or "")
        data.update(attempt("The monitored metric", lambda: _monitor(task)) or {})
    if outcome is not None:
        data["lr_trace"] = jsonable(list(getattr(outcome, "lr_trace", []) or []))
        data.update(attempt("Evaluation matrices", lambda: ex.evaluation_material(outcome)) or {})
        if not (Path(output_dir) / "history.csv").is_file() and getattr(outcome, "history", None):
            data["history"] = jsonable(outcome.history)
    if task is not None and outcome is not None:
        if model is None or splits is None:
            notes.append("Examples need the model and the datasets: write_report(..., model=model, splits=splits).")
        else:
            found = attempt("Examples", lambda: _examples(task, outcome, model, splits, data, folder))
            if found:
                data["examples"] = jsonable(found)
    return data


def _monitor(task: Any) -> dict[str, str]:
    """The metric that picked the best epoch, resolved as the engine does (config, early stopping, the task's)."""
    from ..engine.callbacks import infer_mode

    cfg = getattr(task, "config", None)
    stop = cfg.early_stopping_config if cfg is not None else None
    monitor = getattr(cfg, "monitor", None) or getattr(stop, "monitor", None) or getattr(task, "monitor", None)
    if not monitor:
        return {}
    same = monitor == getattr(task, "monitor", None)
    return {"monitor": monitor, "monitor_mode": getattr(task, "monitor_mode", None) if same else infer_mode(monitor)}


def _examples(task: Any, outcome: Any, model: Any, splits: Any, data: dict, folder: Path) -> dict | None:
    from . import examples as ex

    split = ex.split_for_examples(outcome, splits)
    ds = getattr(splits, split, None) if split else None
    if ds is None or len(ds) == 0:
        return None
    name = str(getattr(task, "name", ""))
    budget = ex.Budget()
    if name == "masked-lm":
        val = getattr(splits, "val", None) or ds
        seed = int(getattr(getattr(task, "config", None), "seed", 0) or 0)
        return ex.fill_mask_examples(task, model, val, seed=seed)
    if name == "text-classification":
        return ex.text_mistakes(task, model, ds, split, budget)
    if name == "semantic-segmentation" or (data.get("segmentation") and hasattr(ds, "reader")):
        seg = data.get("segmentation") or {}
        names = seg.get("class_names") or [str(n) for n in getattr(task, "labels", [])]
        return ex.segmentation_examples(
            task, model, ds, split, folder, len(names), int(seg.get("ignore_index", _ignore_index(ds)))
        )
    if name == "object-detection":
        names = list(getattr(splits, "labels", None) or getattr(task, "labels", []))
        return ex.detection_examples(task, model, ds, split, folder, names)
    if data.get("classification") and getattr(task, "modality", "image") == "image":
        return ex.image_confusions(task, model, ds, data["classification"], folder, budget)
    return None


def _ignore_index(ds: Any) -> int:
    reader = getattr(ds, "reader", None)
    return int(getattr(reader, "ignore_index", 255))
