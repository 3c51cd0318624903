"""The output folder: transferkit.json (what was trained, on what, with which labels), model.safetensors,
history.csv, checkpoints/. Loading reads JSON and safetensors only, never pickled code."""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

from .config import FinetuneConfig
from .errors import ArtifactError

META_FILE = "transferkit.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 2


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the saved weights (for bug reports and reproducibility)."""
    import contextlib
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in (
        "transferkit",
        "torch",
        "torchvision",
        "timm",
        "transformers",
        "accelerate",
        "segmentation-models-pytorch",
        "pycocotools",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def describe(value: Any) -> Any:
    """A JSON-safe description of a config value (modules and callables become their class name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return describe(dataclasses.asdict(value))
    name = getattr(value, "__name__", None) or type(value).__name__
    return f"<custom {name}>"


def write_meta(
    output_dir: Path,
    *,
    task: str,
    config: FinetuneConfig,
    options: Any,
    task_state: dict,
    metrics: dict | None = None,
    status: str = "finished",
    fingerprint: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Writes transferkit.json (atomically): what was trained, on what, with which labels, and how it ended."""
    cfg = {k: describe(v) for k, v in dataclasses.asdict(config).items() if k != "callbacks"}
    meta = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "status": status,
        "backbone": cfg.get("backbone"),
        "head": cfg.get("head"),
        "task_state": task_state,
        "options": describe(options) if options is not None else {},
        "config": cfg,
        "metrics": metrics or {},
        **(extra or {}),
        "fingerprint": fingerprint,
        "versions": versions(),
    }
    from .engine.checkpoint import write_json

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / META_FILE, meta)


def read_meta(output_dir: str | Path, require_finished: bool = False) -> dict[str, Any]:
    """Reads transferkit.json; with `require_finished`, a run that did not finish is refused with what to do."""
    if Path(output_dir).is_file():
        raise ArtifactError(f"{str(output_dir)!r} is a file; pass the run's output folder.")
    path = Path(output_dir) / META_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{str(output_dir)!r} is not a transferkit output folder: {META_FILE} is missing. "
            "Pass the output_dir of a finished tk.finetune run."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); the folder may be damaged.") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("task"), str) or not isinstance(meta.get("config"), dict):
        raise ArtifactError(f"{path} does not describe a transferkit run (wrong shape); the folder may be damaged.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{path} was written by a newer transferkit; upgrade transferkit to load it.")
    status = meta.get("status")
    if require_finished and status != "finished":
        raise ArtifactError(
            f"The run in {output_dir} has not finished (status: {status!r}"
            + (f", {meta['error']}" if meta.get("error") else "")
            + "). Resume it with resume=True, or load its best epoch so far with tk.load(..., checkpoint='best')."
        )
    if require_finished and not (Path(output_dir) / WEIGHTS_FILE).is_file():
        raise ArtifactError(
            f"{Path(output_dir) / WEIGHTS_FILE} is missing (status: {meta.get('status')!r}). "
            "If training was interrupted, resume it with resume=True."
        )
    return meta
