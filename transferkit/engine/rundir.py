"""One run per output folder: a lock while a run is active, no silent reuse of a folder that holds another run,
and a resume that checks it continues the same run before it touches any file."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from ..errors import ConfigError

LOCK_FILE = ".transferkit.lock"
# What a run leaves in its folder (removed by overwrite=True); anything else in the folder is the user's.
RUN_FILES = (
    "transferkit.json",
    "model.safetensors",
    "history.csv",
    "report.html",
    "lr_find.json",
    "lr_find.png",
    "lr_schedule.csv",
)
RUN_DIRS = ("checkpoints", "backbone", "report", "compare")


class RunLock:
    """An exclusive lock on an output folder, held while a run writes to it.

    ``fcntl.flock`` on an open file: the operating system releases it when the process dies (even by SIGKILL), so
    a stale lock never blocks a later run; the file names the holder's pid and host for the error message.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"output_dir={str(folder)!r} is a file; pass a folder.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(
                f"output_dir={str(folder)!r} cannot be written ({e.strerror or e}). Pass a folder you can write to."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is in use by a run that is still active ({holder}). Wait for it to finish, stop "
                "it, or pass another output_dir."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:  # the previous holder removed the file between our open and our lock: lock the new one
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            # removed while still held, so that no other process can lock the file we are about to let go of
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_status(folder: Path) -> dict[str, Any] | None:
    """The run metadata in `folder` (transferkit.json), None if there is none; a damaged file raises."""
    path = Path(folder) / "transferkit.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path} is damaged ({e}); pass overwrite=True to start a new run in {folder}, or another output_dir."
        ) from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} does not hold a run description; pass overwrite=True or another output_dir.")
    return meta


def has_run(folder: Path) -> bool:
    folder = Path(folder)
    return any((folder / f).exists() for f in RUN_FILES) or (folder / "checkpoints").is_dir()


def prepare_folder(folder: Path, *, resume: Any, overwrite: bool) -> dict[str, Any] | None:
    """Decides what a new run may do with `folder`. Returns the previous run's metadata when resuming.

    - resume=False and the folder holds a run: an error unless `overwrite` (then the old run is set aside in
      ``.overwritten/``: `restore_aside` puts it back if the new run fails before it starts, `drop_aside` deletes it
      once the new run has begun, so a typo in the data never costs the old run);
    - resume=True: the previous metadata (the engine checks that the run matches and what is left to do);
      nothing there: a fresh start.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output_dir={str(folder)!r} is a file; pass a folder.")
    if overwrite:
        set_aside(folder)
        return None
    previous = read_status(folder) if folder.is_dir() else None
    if not resume:
        if folder.is_dir() and has_run(folder):
            status = (previous or {}).get("status", "unknown")
            raise ConfigError(
                f"{folder} already holds a run (status: {status}). Pass resume=True to continue it, overwrite=True "
                "to replace it, or another output_dir."
            )
        return None
    if previous is None and resume is True:  # nothing to resume (a typo in output_dir?): say so, then start
        import warnings

        warnings.warn(f"resume=True, but {folder} holds no run to resume; starting a new run there.", stacklevel=2)
    return previous


ASIDE = ".overwritten"


def set_aside(folder: Path) -> Path | None:
    """Moves a run's files into ``folder/.overwritten`` (renames: instant, nothing copied)."""
    folder = Path(folder)
    if not folder.is_dir() or not has_run(folder):
        return None
    aside = folder / ASIDE
    if aside.exists():  # left by a run that died between setting aside and starting: that run never began
        restore_aside(folder)
    aside.mkdir()
    for name in (*RUN_FILES, *RUN_DIRS):
        if (folder / name).exists():
            (folder / name).rename(aside / name)
    return aside


def restore_aside(folder: Path) -> None:
    """Puts a set-aside run back (replacing whatever the failed new run wrote under the same names)."""
    aside = Path(folder) / ASIDE
    if not aside.is_dir():
        return
    for entry in aside.iterdir():
        target = Path(folder) / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)
    aside.rmdir()


def drop_aside(folder: Path) -> None:
    aside = Path(folder) / ASIDE
    if aside.is_dir():
        shutil.rmtree(aside)


def remove_run(folder: Path) -> None:
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)


def compare(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run fingerprints (``key: saved -> now``)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key != "data":  # name the option inside (task_options)
            diffs += [f"{key}.{d}" for d in compare(a, b)]
        else:
            diffs.append(f"{key}: {_short(a)} -> {_short(b)}")
    return diffs


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
