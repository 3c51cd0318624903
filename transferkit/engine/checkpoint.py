"""Checkpoints for resume (accelerate's save_state + our run state) and best-weights snapshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

RUN_STATE = "run_state.json"


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Writes a model's weights as safetensors (tied/shared tensors handled by `save_model`)."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written weights file


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        from ..errors import ArtifactError

        raise ArtifactError(
            f"{path} does not fit the model: missing keys {sorted(missing)[:5]} ({len(missing)}), "
            f"unexpected keys {sorted(unexpected)[:5]} ({len(unexpected)})."
        )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights (best-epoch weights are restored from it at the end)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_run_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (RUN_STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=float))
    tmp.replace(directory / RUN_STATE)


def load_run_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / RUN_STATE).read_text())


def find_resume_dir(output_dir: Path, resume: bool | str) -> Path | None:
    """`resume=True`: output_dir/checkpoints/last if it exists (else start fresh); a path: that checkpoint."""
    from ..errors import ConfigError

    if resume is False or resume is None:
        return None
    path = output_dir / "checkpoints" / "last" if resume is True else Path(resume)
    if (path / RUN_STATE).is_file():
        return path
    if resume is True:
        return None
    raise ConfigError(f"resume={str(resume)!r} is not a checkpoint folder (no {RUN_STATE} inside).")


def replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    src.replace(dst)
