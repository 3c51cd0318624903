"""Training checkpoints that never unpickle, are written atomically and verified before use.

A checkpoint is a folder ``checkpoints/step-<global step>/`` holding only safetensors and JSON written by us:

- ``model.safetensors``: the model's weights (tied tensors handled by safetensors' ``save_model``);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors, and its param groups and scalars;
- ``state.json``: the run state (epoch, position in the epoch, step, history, best, schedule, callbacks by name);
- ``rng-<rank>.safetensors`` + ``rng-<rank>.json``: every random generator of each process;
- ``manifest.json``: name, size and SHA-256 of every file above, written last.

It is written into a ``.tmp-...`` folder, every file fsynced, and renamed into place only when complete; older
checkpoints are deleted afterwards, so a kill at any moment leaves the previous checkpoint intact. Resume takes
the newest folder whose manifest matches its files and ignores (and cleans up) anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MANIFEST = "manifest.json"
STATE = "state.json"
PREFIX = "step-"
TMP_PREFIX = ".tmp-"


# --- files ------------------------------------------------------------------------------------------------------


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def read_json(path: Path) -> Any:
    from ..errors import ArtifactError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; the checkpoint is incomplete.") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} cannot be read ({e}); the file is damaged.") from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def link_if_identical(keep: Path, duplicate: Path) -> bool:
    """Replaces `duplicate` by a hard link to `keep` when the two files hold the same bytes: the final weights and
    the best epoch's are usually one file twice. Safe because every weights file is written by renaming a new file
    into place, which never changes a linked copy. False (nothing changed) when they differ or links fail."""
    try:
        if os.path.samefile(keep, duplicate):
            return True
        if keep.stat().st_size != duplicate.stat().st_size or sha256(keep) != sha256(duplicate):
            return False
        tmp = duplicate.with_name(duplicate.name + ".link")
        tmp.unlink(missing_ok=True)
        os.link(keep, tmp)
        tmp.replace(duplicate)
        return True
    except OSError:  # no such file, or a file system without hard links
        duplicate.with_name(duplicate.name + ".link").unlink(missing_ok=True)
        return False


def _as_os_error(error: Exception, path: Path) -> Exception:
    """safetensors reports a failed write (a full disk, a file size limit) as ``SafetensorError("... I/O error: No
    space left on device (os error 28)")``: the OSError it stands for, so callers handle every failed write alike."""
    found = re.search(r"os error (\d+)", str(error))
    if type(error).__name__ == "SafetensorError" and found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    return error


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    except Exception as e:
        raise _as_os_error(e, path) from None
    fsync_file(path)


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Writes a model's weights as safetensors, atomically (tied/shared tensors handled by `save_model`)."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_model(model, str(tmp), force_contiguous=True)  # channels_last weights
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise _as_os_error(e, path) from None
    fsync_file(tmp)
    tmp.replace(path)


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Loads a safetensors file written by `save_weights` into `model` (every key must fit)."""
    from safetensors.torch import load_model

    from ..errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing.")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # SafetensorError (a truncated file), RuntimeError (shapes)
        raise ArtifactError(
            f"{path} cannot be loaded into the model ({type(e).__name__}: {str(e).splitlines()[0][:300]}). The file "
            "is damaged or belongs to another model."
        ) from None
    if missing or unexpected:
        raise ArtifactError(
            f"{path} does not fit the model: missing keys {sorted(missing)[:5]} ({len(missing)}), "
            f"unexpected keys {sorted(unexpected)[:5]} ({len(unexpected)})."
        )


def check_fits(model: nn.Module, path: str | Path) -> None:
    """Raises ArtifactError unless every tensor in the safetensors file `path` has a place of its shape in `model`.
    Reads the file's header only (no tensor data), so a resume can refuse a foreign checkpoint before it starts."""
    from safetensors import safe_open

    from ..errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing.")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # SafetensorError: not a safetensors file, a truncated header
        raise ArtifactError(
            f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]}); the file is damaged."
        ) from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unexpected = sorted(k for k in shapes if k not in own)
    wrong = sorted(k for k in shapes if k in own and own[k] != shapes[k])
    if unexpected or wrong:
        example = (
            f"{wrong[0]}: {list(shapes[wrong[0]])} in the file, {list(own[wrong[0]])} in the model"
            if wrong
            else f"{unexpected[0]} is not in the model"
        )
        raise ArtifactError(
            f"{path} does not fit the model ({len(wrong)} tensor(s) of other shapes, {len(unexpected)} unknown; e.g. "
            f"{example}). It was written for another model (backbone, head or number of classes)."
        )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights (best-epoch weights are restored from it at the end)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --- optimizer --------------------------------------------------------------------------------------------------


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict as (tensors for safetensors, JSON for everything else)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars, "ids": [str(p) for p in sd["state"]]}
    return tensors, meta


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): {} for pid in meta["ids"]}
    for key, value in tensors.items():
        pid, _, name = key.partition(".")
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --- random generators --------------------------------------------------------------------------------------------


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every generator the run draws from: torch (CPU and CUDA), numpy, Python, and named loader generators."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    for name, g in (generators or {}).items():
        tensors[f"generator.{name}"] = g.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict, generators: dict[str, torch.Generator] | None = None):
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    for name, g in (generators or {}).items():
        if f"generator.{name}" in tensors:
            g.set_state(tensors[f"generator.{name}"])
    n = meta["numpy"]
    keys = tensors["numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# --- checkpoint folders --------------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:09d}"


class CheckpointWriter:
    """Writes one checkpoint folder atomically. Every process writes its own RNG files; the main process writes
    the rest, the manifest last, and renames the folder into place."""

    def __init__(self, root: Path, step: int, is_main: bool, rank: int, barrier: Callable[[], None]) -> None:
        self.root = root
        self.final = root / checkpoint_name(step)
        self.tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
        self.is_main, self.rank, self.barrier = is_main, rank, barrier

    def __enter__(self) -> CheckpointWriter:
        if self.is_main:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True)
        self.barrier()
        return self

    def tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        save_safetensors(tensors, self.tmp / name)

    def json(self, name: str, data: Any) -> None:
        write_json(self.tmp / name, data)

    def model(self, model: nn.Module) -> None:
        save_weights(model, self.tmp / "model.safetensors")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.barrier()
        if exc_type is not None or not self.is_main:
            if exc_type is not None and self.is_main:  # a failed write (a full disk...) leaves no half folder
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.barrier()
            return
        files = sorted(p.name for p in self.tmp.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
        write_json(
            self.tmp / MANIFEST,
            {"files": {n: {"size": (self.tmp / n).stat().st_size, "sha256": sha256(self.tmp / n)} for n in files}},
        )
        fsync_dir(self.tmp)
        old = None
        if self.final.exists():  # the same step written again (a run stopped by max_steps mid-epoch): replace it
            # renamed aside, not deleted, first: killed before the next rename, the complete temporary copy is the
            # newest checkpoint (`latest_complete` takes it), and the old one is debris
            old = self.root / f"{TMP_PREFIX}old-{self.final.name}"
            shutil.rmtree(old, ignore_errors=True)
            self.final.replace(old)
        self.tmp.replace(self.final)
        fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.barrier()


def verify(folder: Path) -> str | None:
    """None if `folder` is a complete checkpoint (manifest matches every file), else what is wrong."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest (the write did not finish)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        listed = {str(name): (int(info["size"]), str(info["sha256"])) for name, info in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "damaged manifest"
    if not listed:
        return "empty manifest"
    for name, (size, digest) in listed.items():
        f = folder / name
        if "/" in name or "\\" in name or name.startswith(".") or not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {size}"
        if sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def _step(name: str) -> int | None:
    digits = name[len(PREFIX) :] if name.startswith(PREFIX) else ""
    return int(digits) if digits.isdigit() else None


def _looks_complete(folder: Path) -> bool:
    """Manifest present and every file it lists there with its size (`verify` also checks the contents)."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        return all((folder / n).stat().st_size == info["size"] for n, info in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, newest (highest step) first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step(p.name) is not None]
    return sorted(found, key=lambda p: _step(p.name), reverse=True)


def latest_complete(root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest verified checkpoint under `root`, and the (folder, reason) of newer ones that failed.

    A complete temporary copy (``.tmp-step-N`` with a matching manifest) counts too: a run killed after renaming
    the old folder of the same step aside and before renaming the new one into place leaves only that copy. Call
    `promote` on the result before using it.
    """
    if not root.is_dir():
        return None, []
    finals = {_step(p.name): p for p in list_checkpoints(root)}
    copies = {}
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(TMP_PREFIX):
            step = _step(p.name[len(TMP_PREFIX) :])
            if step is not None:
                copies[step] = p
    rejected = []
    for step in sorted(set(finals) | set(copies), reverse=True):
        if step in finals:
            problem = verify(finals[step])
            if problem is None:
                return finals[step], rejected
        if step in copies and (copies[step] / MANIFEST).is_file() and verify(copies[step]) is None:
            return copies[step], rejected
        if step in finals:
            rejected.append((finals[step], problem))
    return None, rejected


def promote(folder: Path) -> Path:
    """A complete temporary copy renamed into place (replacing a damaged folder of that step); others as they are."""
    if not folder.name.startswith(TMP_PREFIX):
        return folder
    final = folder.with_name(folder.name[len(TMP_PREFIX) :])
    if final.exists():
        old = folder.with_name(f"{TMP_PREFIX}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.replace(old)
    folder.replace(final)
    fsync_dir(final.parent)
    return final


def clean_debris(root: Path) -> list[Path]:
    """Removes unfinished checkpoint writes (``.tmp-*`` folders, ``*.tmp`` files) left by a killed run."""
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.name.startswith(TMP_PREFIX) or p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def prune(root: Path, keep: int) -> None:
    """Keeps the `keep` newest complete checkpoints and deletes every other step folder (older ones, and damaged
    ones such as a folder half deleted by a killed prune). Each is renamed aside before it is deleted, so a kill
    part-way through a delete leaves debris that `clean_debris` removes, never a half checkpoint."""
    folders = list_checkpoints(root)
    kept = [p for p in folders if _looks_complete(p)][:keep]
    oldest_kept = _step(kept[-1].name) if kept else None
    for old in folders:
        if old in kept or oldest_kept is None or _step(old.name) > oldest_kept:
            continue  # a damaged folder newer than the kept ones is left alone (the next write replaces it)
        aside = old.with_name(f"{TMP_PREFIX}old-{old.name}")
        try:
            old.replace(aside)
        except OSError:
            continue
        shutil.rmtree(aside, ignore_errors=True)
