"""Run reports: ``report.html`` in a run's output folder, self-contained (figures embedded, inline CSS, no scripts,
no external requests), with the PNGs and the collected data behind it in ``report/``.

`write_report` is called at the end of every run; `render_report` renders the page again from what a folder holds
(``transferkit report RUN_DIR``), also for folders written before reports existed.

Example:
    >>> from transferkit.report import render_report
    >>> render_report("runs/pets")  # doctest: +SKIP
    PosixPath('runs/pets/report.html')
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .data import DATA_FILE, PAGE_FILE, REPORT_DIR, load_run

__all__ = ["render_report", "write_report"]


def write_report(
    output_dir: str | os.PathLike,
    *,
    task: Any = None,
    outcome: Any = None,
    model: Any = None,
    splits: Any = None,
) -> Path:
    """Collects what only the end of a run knows (the final evaluation's confusion matrices, examples predicted by
    the final model, the per-step learning rates, the hardware) into ``report/data.json`` and renders
    ``report.html``.

    A piece that cannot be collected or drawn is left out with a note on the page; only a folder that cannot be
    written at all raises (the caller warns and keeps the run).

    Args:
        output_dir: the run's output folder (transferkit.json and history.csv already written).
        task: the run's Task (its name, labels, tokenizer and ``predict``).
        outcome: the engine's ``FitOutcome`` (history, ``lr_trace``, ``metric_objects``).
        model: the final model, for the example predictions.
        splits: the run's ``Splits``: examples come from its test split (else val).

    Returns:
        The path of ``report.html``.

    Example:
        >>> write_report("runs/pets", task=task, outcome=outcome, model=model, splits=splits)  # doctest: +SKIP
        PosixPath('runs/pets/report.html')
    """
    from .data import collect

    out = Path(output_dir)
    data = collect(out, task=task, outcome=outcome, model=model, splits=splits)
    (out / REPORT_DIR).mkdir(parents=True, exist_ok=True)
    tmp = out / REPORT_DIR / (DATA_FILE + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    tmp.replace(out / REPORT_DIR / DATA_FILE)
    try:
        return render_report(out)
    except Exception as e:  # noqa: BLE001 - a page that says what went wrong beats no page
        warnings.warn(f"The run report could not be rendered fully ({type(e).__name__}: {e}).", stacklevel=2)
        return _fallback_page(out, e)


def render_report(output_dir: str | os.PathLike) -> Path:
    """Renders ``report.html`` (and its figures in ``report/``) from what a run folder holds: transferkit.json,
    history.csv and, when the run wrote one, report/data.json.

    Raises:
        ArtifactError: `output_dir` is not a transferkit output folder.

    Example:
        >>> render_report("runs/pets")  # doctest: +SKIP
        PosixPath('runs/pets/report.html')
    """
    from .html import build_page

    run = load_run(output_dir)
    run.report_dir.mkdir(parents=True, exist_ok=True)
    for old in run.report_dir.glob("*.png"):  # figures of an earlier rendering: the folder matches the page
        old.unlink()
    page = build_page(run)
    path = run.folder / PAGE_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _fallback_page(out: Path, error: BaseException) -> Path:
    import html

    path = out / PAGE_FILE
    text = html.escape(f"{type(error).__name__}: {error}")
    path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>transferkit report</title></head><body>"
        f"<h1>transferkit run report</h1><p>The report could not be rendered: {text}</p>"
        f"<p>Run <code>transferkit report {html.escape(str(out))}</code> to try again.</p></body></html>\n",
        encoding="utf-8",
    )
    return path
