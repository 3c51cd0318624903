"""One tk.finetune run for the training-state tests, in its own process, optionally killed with SIGKILL at a chosen
point (``--kill``). Run as ``python train.py SPEC.json``; SPEC holds the task, data, output folder and options.

Kill points (``"where:n"``), each an ``os.kill(os.getpid(), SIGKILL)``, the signal nothing can catch:
- ``step:N``: after optimizer step N (before a checkpoint of that step is written);
- ``ckpt-model:N``: inside the checkpoint write of step N, after the model file, before the manifest;
- ``ckpt-manifest:N``: after the manifest of step N is written, before the folder is renamed into place;
- ``ckpt-renamed:N``: after the checkpoint of step N is in place, before older ones are pruned;
- ``prune:N``: part-way through deleting the older checkpoints after step N (half their files gone);
- ``best:E``: after the best weights of epoch E (1-based) are written, before their manifest;
- ``epoch-end:E``: after epoch E's evaluation, before its checkpoint;
- ``final``: after training, while the final model.safetensors is written.
- ``wait``: not a kill: the run writes ``<out>.started`` when training starts and waits for ``<out>.go``;
- ``fsize:N``: not a kill: after step N every file write beyond 1 MB fails (RLIMIT_FSIZE, a real OS-level
  EFBIG, as a full disk gives ENOSPC).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import transferkit as tk  # noqa: E402
from transferkit.engine import checkpoint as ckpt  # noqa: E402
from transferkit.engine import loop  # noqa: E402
from transferkit.engine.callbacks import Callback  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def step_of(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[-1])


class KillAt(Callback):
    def __init__(self, where: str, n: int) -> None:
        self.where, self.n = where, n

    def on_step_end(self, state, control, loss) -> None:
        if self.where == "step" and state.global_step == self.n:
            die()
        if self.where == "fsize" and state.global_step == self.n:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    def on_epoch_end(self, state, control, logs) -> None:
        if self.where == "epoch-end" and state.epoch + 1 == self.n:
            die()


class WaitForGo(Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, state, control) -> None:
        Path(self.out + ".started").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not Path(self.out + ".go").exists() and time.time() < deadline:
            time.sleep(0.05)


def install_kill(where: str, n: int, out: str) -> None:
    """Monkeypatches the checkpoint code of this process to die at the requested point."""
    if where == "ckpt-model":
        original = ckpt.CheckpointWriter.model

        def model(self, m):
            original(self, m)
            if step_of(self.final) == n:
                die()

        ckpt.CheckpointWriter.model = model
    elif where in ("ckpt-manifest", "ckpt-renamed"):
        original_fsync = ckpt.fsync_dir

        def fsync_dir(path):
            original_fsync(path)
            path = Path(path)
            if where == "ckpt-manifest" and path.name == f"{ckpt.TMP_PREFIX}{ckpt.checkpoint_name(n)}":
                die()
            if where == "ckpt-renamed" and path.name == "checkpoints" and (path / ckpt.checkpoint_name(n)).is_dir():
                die()

        ckpt.fsync_dir = fsync_dir
    elif where == "prune":
        original_prune = ckpt.prune

        def prune(root, keep):
            if (root / ckpt.checkpoint_name(n)).is_dir():
                for old in ckpt.list_checkpoints(root)[keep:]:
                    files = sorted(old.iterdir())
                    for f in files[: max(1, len(files) // 2)]:
                        f.unlink()
                    die()
            original_prune(root, keep)

        ckpt.prune = prune
    elif where == "best":
        original_best = loop.Trainer._write_best

        def write_best(self, model):
            if len(self._history_rows()) == n:
                ckpt.save_weights(model, self.output_dir / "checkpoints" / "best" / "model.safetensors")
                die()
            original_best(self, model)

        loop.Trainer._write_best = write_best
    elif where == "final":
        original_save = ckpt.save_weights

        def save_weights(model, path):
            if Path(path).resolve() == (Path(out) / "model.safetensors").resolve():
                tmp = Path(path).with_name(Path(path).name + ".tmp")
                tmp.write_bytes(b"partial")
                die()
            original_save(model, path)

        ckpt.save_weights = save_weights


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    options = dict(spec["options"])
    callbacks = []
    kill = spec.get("kill")
    if kill == "wait":
        callbacks.append(WaitForGo(spec["out"]))
    elif kill:
        where, _, n = kill.partition(":")
        n = int(n or 0)
        if where in ("step", "epoch-end", "fsize"):
            callbacks.append(KillAt(where, n))
        else:
            install_kill(where, n, spec["out"])
    result = tk.finetune(spec["task"], data=spec["data"], output_dir=spec["out"], callbacks=tuple(callbacks),
                         **options)  # fmt: skip
    Path(spec["out"] + ".result.json").write_text(
        json.dumps({"epochs": len(result.history), "best_epoch": result.best_epoch, "metrics": result.metrics})
    )


if __name__ == "__main__":
    main()
