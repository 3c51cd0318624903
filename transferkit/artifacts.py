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
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the saved weights (for bug reports and reproducibility)."""
    import contextlib
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("transferkit", "torch", "torchvision", "timm", "transformers", "accelerate"):
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
) -> None:
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
        "versions": versions(),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(output_dir / META_FILE)


def read_meta(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / META_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{str(output_dir)!r} is not a transferkit output folder: {META_FILE} is missing. "
            "Pass the output_dir of a finished tk.finetune run."
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); the folder may be damaged.") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{path} was written by a newer transferkit; upgrade transferkit to load it.")
    if not (Path(output_dir) / WEIGHTS_FILE).is_file():
        raise ArtifactError(
            f"{Path(output_dir) / WEIGHTS_FILE} is missing (status: {meta.get('status')!r}). "
            "If training was interrupted, resume it with resume=True."
        )
    return meta
