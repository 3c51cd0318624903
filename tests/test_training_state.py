"""Training state you can trust: every row of the "training state" issue as a test.

Each test reproduces a failure observed with the accelerate ``save_state`` checkpoints (commit 5dda0d7) and checks
the engine's answer: no unpickling on any load path, atomic verified checkpoints, one run per folder, a
non-finite guard, resume that is bit-identical (also after SIGKILL, also mid-epoch) or refused with the reason,
progress output that never touches the data order, hostile images refused cheaply, no remote code, and
``transferkit.errors`` exceptions instead of library tracebacks. The kill-point matrix and the 2-process runs
are marked slow.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from text_toys import corpus, sentiment, tiny_bert_folder, write_csv

import transferkit as tk
from transferkit.engine import checkpoint as ckpt
from transferkit.engine.callbacks import BestTracker, Callback
from transferkit.errors import ArtifactError, ConfigError, DataError, TrainingError, TransferkitError

SCRIPT = Path(__file__).parent / "fault_scripts" / "train.py"
# child processes import this checkout's transferkit (not whatever an editable install points at)
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "PYTHONPATH": os.pathsep.join([str(Path(tk.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]),
}
COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
# 24 training images at batch 4: 6 optimizer steps per epoch, 18 in all; a checkpoint every 2 steps. RandomResizedCrop
# + flip draw from the global torch generator, so a resume that restored the wrong RNG state would differ.
IMAGE_OPTS = dict(
    backbone="timm:test_resnet",
    pretrained=False,
    image_size=32,
    batch_size=4,
    epochs=3,
    lr=3e-3,
    quiet=True,
    save_every_steps=2,
    train_transforms="crop",
)
# Files accelerate's load_state would have unpickled.
ACCELERATE_FILES = (
    "custom_checkpoint_0.pkl",
    "random_states_0.pkl",
    "optimizer.bin",
    "pytorch_model.bin",
    "scheduler.bin",
    "scaler.pt",
)


# --- helpers ---------------------------------------------------------------------------------------------------


def make_images(root: Path, per_class: int, seed: int, names=tuple(COLORS)) -> Path:
    rng = np.random.default_rng(seed)
    for name, color in zip(names, COLORS.values()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(color) + rng.normal(0, 60, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("images")
    return {"train": str(make_images(root / "train", 8, 0)), "val": str(make_images(root / "val", 3, 1))}


def finetune(data, out: Path, **options):
    return tk.finetune("image-classification", data=data, output_dir=str(out), **{**IMAGE_OPTS, **options})


@pytest.fixture(scope="module")
def reference(image_data, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must match bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    finetune(image_data, out)
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    return load_file(str(path / "model.safetensors" if path.is_dir() else path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)}/{len(wa)} tensors differ, e.g. {differ[:3]}"


def meta(out: Path) -> dict:
    return json.loads((Path(out) / "transferkit.json").read_text())


class CrashAt(Callback):
    """Interrupts the run (KeyboardInterrupt, as Ctrl-C would) after optimizer step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, control, loss) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt


def crashed_run(data, out: Path, step: int = 9, **options) -> Path:
    with pytest.raises(KeyboardInterrupt):
        finetune(data, out, callbacks=(CrashAt(step),), **options)
    return out


def steps(out: Path) -> list[int]:
    return sorted(int(p.name[len(ckpt.PREFIX) :]) for p in ckpt.list_checkpoints(Path(out) / "checkpoints"))


def run_script(tmp_path: Path, data, out: Path, kill: str | None = None, task: str = "image-classification",
               options: dict | None = None, wait: bool = True, env: dict | None = None):  # fmt: skip
    spec = tmp_path / f"spec-{out.name}-{(kill or 'none').replace(':', '_')}.json"
    spec.write_text(json.dumps({"task": task, "data": data, "out": str(out), "kill": kill,
                                "options": options if options is not None else IMAGE_OPTS}))  # fmt: skip
    full_env = {**os.environ, **CHILD_ENV, **(env or {})}
    cmd = [sys.executable, str(SCRIPT), str(spec)]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


# --- payloads: a pickle whose unpickling writes a marker file ----------------------------------------------------


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pickled code ran')",))


def make_payload(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PAYLOAD_RAN"
    payload = tmp_path / "payload.bin"
    torch.save(Payload(str(marker)), payload)
    # the payload is live: anything that unpickles it runs code (as accelerate's load_state did)
    torch.load(payload, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return payload, marker


def plant(path: Path, payload: Path) -> None:
    shutil.copyfile(payload, path)


def reseal(folder: Path) -> None:
    """Rewrites a checkpoint's manifest to match its (tampered) files, as an attacker could."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != ckpt.MANIFEST)
    listed = json.loads((folder / ckpt.MANIFEST).read_text())["files"]
    info = {n: {"size": (folder / n).stat().st_size, "sha256": ckpt.sha256(folder / n)} for n in files if n in listed}
    (folder / ckpt.MANIFEST).write_text(json.dumps({"files": info}))


# --- resume executes code --------------------------------------------------------------------------------------


def test_no_pickle_on_any_load_path(image_data, tmp_path):
    payload, marker = make_payload(tmp_path)
    base = crashed_run(image_data, tmp_path / "base", step=9)
    newest = ckpt.latest_complete(base / "checkpoints")[0]
    names = sorted(p.name for p in newest.iterdir())

    # 1. Every file of the newest checkpoint replaced by the payload, the manifest resealed so the loader really
    #    reads it: every resume (resume=True, resume=<checkpoint>, resume=<output folder>) refuses with a
    #    transferkit error and runs nothing.
    for i, name in enumerate(names):
        out = tmp_path / f"tampered-{i}"
        shutil.copytree(base, out)
        folder = out / "checkpoints" / newest.name
        plant(folder / name, payload)
        if name != ckpt.MANIFEST:
            reseal(folder)
        variants = (True, str(folder), str(out)) if name in (ckpt.STATE, "model.safetensors") else (True,)
        for resume in variants:
            with pytest.raises(TransferkitError) as info:
                finetune(image_data, out, resume=resume)
            assert not marker.exists(), f"unpickled {name} (resume={resume!r})"
            assert newest.name in str(info.value) or name in str(info.value) or str(out) in str(info.value), (
                name,
                str(info.value),
            )

    # 2. Files accelerate would have unpickled, planted next to the checkpoint, in checkpoints/ and in the output
    #    folder: ignored, and the resume ends with the uninterrupted run's weights.
    out = tmp_path / "extras"
    shutil.copytree(base, out)
    for folder in (out / "checkpoints" / newest.name, out / "checkpoints", out, out / "checkpoints" / "best"):
        for name in ACCELERATE_FILES:
            plant(folder / name, payload)
    (out / "checkpoints" / "last").mkdir()  # accelerate's folder name
    for name in ACCELERATE_FILES:
        plant(out / "checkpoints" / "last" / name, payload)
    finetune(image_data, out, resume=True)
    assert not marker.exists()

    # 3. The finished output folder: tk.load / tk.evaluate with the payload in each file they read.
    tk.load(out).predict([str(next(Path(image_data["val"]).rglob("*.png")))])
    tk.evaluate(out, data=image_data["val"])
    assert not marker.exists()
    for target, kwargs in (
        ("model.safetensors", {}),
        ("transferkit.json", {}),
        ("checkpoints/best/model.safetensors", {"checkpoint": "best"}),
    ):
        victim = tmp_path / f"load-{target.replace('/', '_')}"
        shutil.copytree(out, victim)
        plant(victim / target, payload)
        with pytest.raises(ArtifactError, match=r"model\.safetensors|transferkit\.json"):
            tk.load(victim, **kwargs)
        if not kwargs:
            with pytest.raises(ArtifactError):
                tk.evaluate(victim, data=image_data["val"])
        assert not marker.exists(), target


# --- checkpoint replacement not atomic ----------------------------------------------------------------------


def test_kill_between_delete_and_rename_resumes_from_the_complete_copy(image_data, reference, tmp_path):
    # The same step written twice (a run stopped by max_steps mid-epoch checkpoints that step again at the epoch's
    # end) replaces the folder: killed after the old one is gone and before the new one is renamed into place, only
    # the complete temporary copy is left. Resume must use it, not restart from step 0.
    out = crashed_run(image_data, tmp_path / "run", step=9)
    newest = ckpt.latest_complete(out / "checkpoints")[0]
    newest.rename(newest.with_name(ckpt.TMP_PREFIX + newest.name))
    for old in ckpt.list_checkpoints(out / "checkpoints"):
        shutil.rmtree(old)
    resumed = finetune(image_data, out, resume=True)
    assert meta(out)["resumed_from"].endswith(newest.name)
    assert len(resumed.history) == 3
    assert_same_weights(out, reference)


def test_partly_deleted_and_unfinished_checkpoints_are_skipped_and_cleaned(image_data, reference, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=11, keep_checkpoints=3)
    assert steps(out) == [6, 8, 10]
    root = out / "checkpoints"
    # killed part-way through deleting step 6 (the oldest): half its files gone, manifest kept
    for f in sorted((root / ckpt.checkpoint_name(6)).iterdir())[:3]:
        if f.name != ckpt.MANIFEST:
            f.unlink()
    # killed while writing step 10: the model written, no manifest; plus the debris of a write of step 12
    (root / ckpt.checkpoint_name(10) / ckpt.MANIFEST).unlink()
    debris = root / (ckpt.TMP_PREFIX + ckpt.checkpoint_name(12))
    debris.mkdir()
    (debris / "model.safetensors").write_bytes(b"half a file")
    (root / "state.json.tmp").write_text("{")
    with pytest.warns(UserWarning, match=r"Skipping damaged checkpoint.*step-000000010: no manifest"):
        finetune(image_data, out, resume=True, keep_checkpoints=3)
    assert meta(out)["resumed_from"].endswith(ckpt.checkpoint_name(8))
    assert not debris.exists() and not (root / "state.json.tmp").exists()
    assert all(ckpt.verify(p) is None for p in ckpt.list_checkpoints(root))
    assert_same_weights(out, reference)


def test_keep_checkpoints_keeps_the_newest_k_and_the_best(image_data, tmp_path):
    out = tmp_path / "run"
    finetune(image_data, out, keep_checkpoints=2)
    assert steps(out) == [16, 18]
    assert ckpt.verify(out / "checkpoints" / "best") is None
    assert not list((out / "checkpoints").glob(ckpt.TMP_PREFIX + "*"))


# --- a new run in a used folder mixes with the old -------------------------------------------------------------


def test_a_finished_run_is_not_overwritten_without_overwrite(image_data, tmp_path):
    out = tmp_path / "run"
    finetune(image_data, out, epochs=1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run.*overwrite=True"):
        finetune(image_data, out, epochs=1)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_renamed_classes_never_pair_new_labels_with_old_weights(image_data, tmp_path):
    renamed = {"train": str(make_images(tmp_path / "r-train", 8, 0, names=("rouge", "vert", "bleu"))),
               "val": str(make_images(tmp_path / "r-val", 3, 1, names=("rouge", "vert", "bleu")))}  # fmt: skip
    out = crashed_run(image_data, tmp_path / "run", step=9)
    files_before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # resume=True with other classes: refused before any file is touched, naming the labels
    with pytest.raises(ConfigError, match="labels"):
        finetune(renamed, out, resume=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files_before

    # the interrupted run is not loadable as a finished one; its best epoch so far is, with its own labels
    with pytest.raises(ArtifactError, match="checkpoint='best'"):
        tk.load(out)
    assert set(tk.load(out, checkpoint="best").predict([str(next(Path(image_data["val"]).rglob("*.png")))])[0][
        "probs"]) == {"red", "green", "blue"}  # fmt: skip

    # a new run there (overwrite=True) killed before its first checkpoint: no old weights under the new labels,
    # and resuming it starts it from scratch, not from the old run's checkpoint
    with pytest.raises(KeyboardInterrupt):
        finetune(renamed, out, overwrite=True, callbacks=(CrashAt(1),))
    assert meta(out)["task_state"]["labels"] == ["bleu", "rouge", "vert"] and meta(out)["status"] == "interrupted"
    assert steps(out) == [] and not (out / "model.safetensors").exists()
    for kwargs in ({}, {"checkpoint": "best"}):
        with pytest.raises(ArtifactError):
            tk.load(out, **kwargs)
    finetune(renamed, out, resume=True)
    fresh = tmp_path / "fresh"
    finetune(renamed, fresh)
    assert meta(out)["resumed_from"] is None
    assert_same_weights(out, fresh)


# --- NaN training is silent --------------------------------------------------------------------------------------


def test_divergence_stops_the_run_naming_the_step_and_last_checkpoint(image_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step \d+ .*Last good checkpoint: .*(step-\d+|none)") as info:
        finetune(image_data, out, lr=1e6, epochs=3, save_every_steps=None)
    assert meta(out)["status"] == "failed" and "TrainingError" in meta(out)["error"]
    last = ckpt.latest_complete(out / "checkpoints")[0]
    if last is not None:
        assert last.name in str(info.value)
        assert all(torch.isfinite(t).all() for t in weights(last).values() if t.is_floating_point())
    with pytest.raises(ArtifactError, match="failed"):
        tk.load(out)


class NaNInputs(Callback):
    """Replaces the inputs of the given training forward passes (1-based) by NaN: a broken sample."""

    def __init__(self, calls: tuple[int, ...]) -> None:
        self.calls, self.n = calls, 0

    def on_train_start(self, state, control):
        model = state.model
        forward = model.forward

        def poisoned(x, *args, **kwargs):
            if model.training and torch.is_grad_enabled():
                self.n += 1
                if self.n in self.calls:
                    x = torch.full_like(x, float("nan"))
            return forward(x, *args, **kwargs)

        model.forward = poisoned

    def on_train_end(self, state, control):
        del state.model.forward


class LossLog(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, state, control, loss):
        self.losses.append(float(loss))


def test_a_nan_step_stops_the_run_naming_it_and_the_last_checkpoint(image_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step 3 \(epoch 1\).*Last good checkpoint: .*step-000000002"):
        finetune(image_data, out, callbacks=(NaNInputs((3,)),))
    assert meta(out)["status"] == "failed"


def test_nonfinite_skip_skips_and_counts_steps(image_data, tmp_path):
    out = tmp_path / "run"
    log = LossLog()
    result = finetune(image_data, out, nonfinite="skip", epochs=1, callbacks=(NaNInputs((3, 4)), log))
    assert [i + 1 for i, v in enumerate(log.losses) if v != v] == [3, 4]
    assert meta(out)["skipped_steps"] == 2 and meta(out)["status"] == "finished"
    # neither the weights nor the BatchNorm statistics keep anything of the skipped steps
    bad = [k for k, t in weights(out).items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, bad
    assert result.metrics["val"]["loss"] == result.metrics["val"]["loss"]


def test_nan_metrics_never_win_best():
    tracker = BestTracker("val/accuracy", "max")
    assert tracker.update(0.5, 0, 0.7)
    assert not tracker.update(float("nan"), 1, 0.6)
    assert not tracker.update(0.9, 2, float("nan"))  # the best accuracy, but a NaN loss: a broken model
    assert tracker.best_epoch == 0
    loss = BestTracker("val/loss")
    assert loss.update(0.9, 0) and not loss.update(float("nan"), 1) and loss.best_epoch == 0


def test_a_nan_epoch_is_never_restored_as_best(tmp_path):
    from toy import ToyOptions, ToyTask, make_data

    from transferkit.config import FinetuneConfig
    from transferkit.engine.loop import Trainer

    class NaNSecondEval(ToyTask):
        def eval_step(self, model, batch):
            losses, outputs = super().eval_step(model, batch)
            return (losses * float("nan") if self.evals == 2 else losses), outputs

    config = FinetuneConfig(quiet=True, epochs=3, batch_size=16)
    task = NaNSecondEval(config, ToyOptions(metric_sequence=(0.5, 0.9, 0.6, 0.6)))  # epoch 2 has the top accuracy
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
    outcome = Trainer(task, task.build_model(), splits, config, tmp_path).fit()
    assert outcome.history[1]["val/loss"] != outcome.history[1]["val/loss"]
    assert outcome.best_epoch == 2  # epoch 3 (0.6), not the NaN epoch 2 (0.9)


# --- silent resume failures ------------------------------------------------------------------------------------


def test_resume_mid_epoch_matches_the_uninterrupted_run(image_data, reference, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=9)  # mid epoch 2; checkpoint of step 8
    assert steps(out) == [8]
    finetune(image_data, out, resume=True)
    assert meta(out)["resumed_from"].endswith(ckpt.checkpoint_name(8))
    assert_same_weights(out, reference)
    ref_hist = (reference / "history.csv").read_text().splitlines()
    got_hist = (out / "history.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in got_hist] == [line.split(",")[:3] for line in ref_hist]


def test_resume_with_loader_workers_matches_the_uninterrupted_run(image_data, tmp_path):
    # Worker processes augment with generators a checkpoint cannot save; per-item seeds make the crop/flip of each
    # item depend on (seed, epoch, position) only. Without them both resumes below differed from the reference.
    ref = tmp_path / "ref"
    finetune(image_data, ref, num_workers=2)
    for step in (6, 9):  # the end of epoch 1; mid epoch 2 (a resume that skips batches)
        out = crashed_run(image_data, tmp_path / f"crash-{step}", step=step, num_workers=2)
        finetune(image_data, out, resume=True, num_workers=2)
        assert_same_weights(out, ref)
    # and two fresh runs with workers agree
    again = tmp_path / "again"
    finetune(image_data, again, num_workers=2)
    assert_same_weights(again, ref)


def test_text_resume_with_loader_workers_matches_the_uninterrupted_run(text_setup, tmp_path):
    # length-grouped batches shuffle with the loader's generator, from which fresh workers also draw a base seed
    _, files, options = text_setup
    options = {**options, "num_workers": 2}
    ref = tmp_path / "ref"
    tk.finetune("text-classification", data=files, output_dir=str(ref), **options)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tk.finetune("text-classification", data=files, output_dir=str(out), callbacks=(CrashAt(7),), **options)
    tk.finetune("text-classification", data=files, output_dir=str(out), resume=True, **options)
    assert_same_weights(out, ref)


def test_per_item_seeds_follow_seed_epoch_and_position_only():
    from torch.utils.data import BatchSampler, RandomSampler

    from transferkit.engine.seeding import SeededBatches, SeededItems

    gen = torch.Generator()
    batches = SeededBatches(BatchSampler(RandomSampler(range(10), generator=gen), 4, True), seed=3, generator=gen)
    batches.set_epoch(1)
    first = list(batches)
    gen.manual_seed(999)  # a draw from the shared generator (the workers' base seed) does not move the order
    assert list(batches) == first and len(first) == len(batches) == 2
    batches.set_epoch(2)
    second = list(batches)
    assert [s for b in second for _, s in b] != [s for b in first for _, s in b]
    assert len({s for b in first for _, s in b}) == 8
    items = SeededItems([lambda: torch.rand(1)] * 10)
    draw = lambda key: items[key]()  # noqa: E731 - the item is a function that draws from the global generator
    with torch.random.fork_rng(devices=[]):  # SeededItems reseeds the global generators: leave other tests theirs
        py_state, np_state = random.getstate(), np.random.get_state()
        assert torch.equal(draw((0, 5)), draw((0, 5))) and not torch.equal(draw((0, 5)), draw((0, 6)))
        random.setstate(py_state)
        np.random.set_state(np_state)
    assert len(items) == 10


def test_the_batch_order_with_loader_workers_is_the_one_without():
    # a checkpoint written with num_workers=0 may resume with workers (num_workers may change on resume): the
    # batches it skips must be the ones it already trained on
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from transferkit.engine.loop import _reseed
    from transferkit.engine.seeding import SeededBatches, SeededItems

    plain = DataLoader(list(range(12)), batch_size=4, shuffle=True, generator=torch.Generator())
    gen = torch.Generator()
    sampler = SeededBatches(BatchSampler(RandomSampler(range(12), generator=gen), 4, False), 7, gen)
    seeded = DataLoader(SeededItems(list(range(12))), batch_sampler=sampler, generator=gen, num_workers=2,
                        persistent_workers=True)  # fmt: skip
    for epoch in range(3):
        _reseed(plain, 7, epoch)
        _reseed(seeded, 7, epoch)
        assert [b.tolist() for b in seeded] == [b.tolist() for b in plain]
        assert sampler.epoch == epoch


def test_missing_or_damaged_rng_state_is_not_swallowed(image_data, tmp_path):
    base = crashed_run(image_data, tmp_path / "base", step=9)
    for how in ("missing", "damaged", "wrong-shape"):
        out = tmp_path / how
        shutil.copytree(base, out)
        folder = ckpt.latest_complete(out / "checkpoints")[0]
        rng = folder / "rng-0.safetensors"
        if how == "missing":
            rng.unlink()
        elif how == "damaged":
            rng.write_bytes(rng.read_bytes()[:100])
        else:  # a valid safetensors file without the generators, manifest resealed: still refused
            from safetensors.torch import save_file

            save_file({"torch": torch.zeros(3, dtype=torch.uint8)}, str(rng))
            reseal(folder)
        with pytest.raises((ConfigError, ArtifactError), match=r"rng-0|step-"):
            finetune(image_data, out, resume=True)


def test_deleted_run_state_is_not_a_silent_fresh_start(image_data, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=9)
    for folder in ckpt.list_checkpoints(out / "checkpoints"):
        shutil.rmtree(folder)
    with pytest.raises(ConfigError, match="checkpoint"):
        finetune(image_data, out, resume=True)
    # a finished run whose resume state was dropped (keep_resume_state=False) cannot be continued either
    done = tmp_path / "done"
    finetune(image_data, done, epochs=1, keep_resume_state=False)
    assert steps(done) == []
    with pytest.raises(ConfigError, match="keep_resume_state|checkpoint"):
        finetune(image_data, done, epochs=2, resume=True)
    assert meta(done)["status"] == "finished" and meta(done)["config"]["epochs"] == 1


def test_resume_refuses_other_options_before_touching_files(image_data, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=9)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for change, name in (
        ({"lr": 1e-2}, "lr"),
        ({"backbone": "timm:test_efficientnet"}, "backbone"),
        ({"seed": 1}, "seed"),
        ({"freeze": "backbone"}, "freeze"),
        ({"image_size": 40}, "image_size"),
        ({"batch_size": 8}, "batch_size"),
        ({"head": "mlp"}, "head"),
        ({"train_transforms": "default"}, "train_transforms"),
    ):
        with pytest.raises(ConfigError, match=rf"not the run in .*{name}") as info:
            finetune(image_data, out, resume=True, **change)
        assert "overwrite=True" in str(info.value)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, name
    two_classes = {"train": str(make_images(tmp_path / "two", 8, 0, names=("red", "green"))),
                   "val": str(make_images(tmp_path / "two-val", 3, 1, names=("red", "green")))}  # fmt: skip
    with pytest.raises(ConfigError, match="not the run in .*labels"):
        finetune(two_classes, out, resume=True)
    more = tmp_path / "more"  # the same classes, one more image: other data
    shutil.copytree(image_data["train"], more)
    shutil.copyfile(more / "red" / "0.png", more / "red" / "extra.png")
    with pytest.raises(ConfigError, match="not the run in .*data"):
        finetune({"train": str(more), "val": image_data["val"]}, out, resume=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_from_another_runs_checkpoint_is_refused(image_data, tmp_path):
    a = crashed_run(image_data, tmp_path / "a", step=9)
    b = tmp_path / "b"
    with pytest.raises(ConfigError, match="backbone"):
        finetune(image_data, b, backbone="timm:test_efficientnet", resume=str(a / "checkpoints"))
    assert not (b / "model.safetensors").exists()


def test_options_changed_on_resume_are_applied_and_recorded(image_data, tmp_path):
    from transferkit.engine.schedules import lr_multiplier

    out = crashed_run(image_data, tmp_path / "run", step=9)
    result = finetune(image_data, out, resume=True, epochs=4, early_stopping={"patience": 5})
    assert len(result.history) == 4
    m = meta(out)
    assert m["config"]["epochs"] == 4 and m["epochs_run"] == 4
    assert m["config"]["early_stopping"]["patience"] == 5
    # the schedule follows the new length from the resume on: its last step is the end of a 4-epoch cosine
    rows = (out / "lr_schedule.csv").read_text().splitlines()[1:]
    last_step, last_lr = int(rows[-1].split(",")[0]), float(rows[-1].split(",")[1])
    assert last_step == 24
    assert last_lr == pytest.approx(3e-3 * lr_multiplier(24, 24, 0, "cosine", {}, 6), rel=1e-4, abs=1e-9)


def test_early_stopping_watching_another_metric_after_resume_starts_its_count_anew(tmp_path):
    from toy import ToyOptions, ToyTask, make_data

    from transferkit.config import FinetuneConfig
    from transferkit.engine.loop import Trainer

    class CrashAtEpoch3(Callback):
        def on_epoch_start(self, state, control):
            if state.epoch == 2:
                raise KeyboardInterrupt

    def trainer(**cfg):
        config = FinetuneConfig(quiet=True, epochs=4, batch_size=16, **cfg)
        task = ToyTask(config, ToyOptions(metric_sequence=(0.01, 0.02, 0.03, 0.04, 0.05)))  # below any loss
        splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
        return Trainer(task, task.build_model(), splits, config, tmp_path)

    with pytest.raises(KeyboardInterrupt):
        trainer(early_stopping={"monitor": "val/accuracy", "patience": 3}, callbacks=(CrashAtEpoch3(),)).fit()
    resumed = trainer(early_stopping={"monitor": "val/loss", "patience": 3}, resume=True)
    outcome = resumed.fit()
    tracker = resumed.early_stopping.tracker
    # the best val/loss of the epochs it watched, never the saved best accuracy
    assert tracker.best == min(row["val/loss"] for row in outcome.history[2:])


# --- quiet changes results ----------------------------------------------------------------------------------------


def test_progress_output_never_changes_the_data_order(image_data, reference, tmp_path, monkeypatch, capsys):
    from transferkit.engine import progress

    monkeypatch.setattr(progress, "is_terminal", lambda stream=None: True)  # draw real tqdm bars
    out = tmp_path / "verbose"
    finetune(image_data, out, quiet=False, save_every_steps=None)  # nor does checkpointing
    assert "epoch 1/3" in capsys.readouterr().err
    assert_same_weights(out, reference)


# --- unfinishable run -----------------------------------------------------------------------------------------


def test_a_truncated_best_checkpoint_does_not_make_the_run_unfinishable(image_data, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=9)
    best = out / "checkpoints" / "best" / "model.safetensors"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = finetune(image_data, out, resume=True, quiet=False)
    assert meta(out)["status"] == "finished" and len(result.history) == 3
    assert result.best_epoch in (2, 3)  # chosen among the epochs whose weights exist
    assert ckpt.verify(out / "checkpoints" / "best") is None
    tk.load(out).predict([str(next(Path(image_data["val"]).rglob("*.png")))])


# --- mid-epoch kill loses the epoch: SIGKILL ------------------------------------------------------------------


def test_sigkill_inside_a_checkpoint_write_resumes_bit_identical(image_data, reference, tmp_path):
    out = tmp_path / "run"
    proc = run_script(tmp_path, image_data, out, kill="ckpt-model:10")  # mid epoch 2, model written, no manifest
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert steps(out) == [8] and (out / "checkpoints" / (ckpt.TMP_PREFIX + ckpt.checkpoint_name(10))).is_dir()
    assert meta(out)["status"] == "training"  # killed: no chance to mark it
    finetune(image_data, out, resume=True)
    assert meta(out)["resumed_from"].endswith(ckpt.checkpoint_name(8)) and meta(out)["status"] == "finished"
    assert_same_weights(out, reference)


KILL_POINTS = [
    "step:3",  # mid epoch 1, after the first checkpoint (step 2)
    "step:1",  # before any checkpoint
    "ckpt-model:6",  # inside the epoch-end write
    "ckpt-manifest:8",  # manifest written, not renamed
    "ckpt-renamed:12",  # renamed, older not yet pruned
    "prune:14",  # half of the older checkpoint deleted
    "best:2",  # new best weights written, no manifest
    "epoch-end:3",  # after the last evaluation, before the last checkpoint
    "final",  # training done, final model half written
]


@pytest.mark.slow
@pytest.mark.parametrize("kill", KILL_POINTS)
def test_sigkill_anywhere_resumes_bit_identical_image(image_data, reference, tmp_path, kill):
    out = tmp_path / "run"
    proc = run_script(tmp_path, image_data, out, kill=kill)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = run_script(tmp_path, image_data, out, options={**IMAGE_OPTS, "resume": True})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert meta(out)["status"] == "finished"
    assert_same_weights(out, reference)


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    bert = tiny_bert_folder(root / "bert", corpus(300))
    files = {
        "train": str(write_csv(root / "train.csv", sentiment(48, seed=0))),
        "val": str(write_csv(root / "val.csv", sentiment(16, seed=1))),
    }
    # dropout in the encoder: a resume that restored the wrong RNG state would differ
    options = dict(backbone=f"hf:{bert}", epochs=2, batch_size=8, lr=2e-3, head_lr_mult=1.0, quiet=True,
                   save_every_steps=2,
                   model_config={"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1})  # fmt: skip
    return bert, files, options


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["step:3", "ckpt-model:8", "epoch-end:1", "prune:10"])
def test_sigkill_anywhere_resumes_bit_identical_text(text_setup, tmp_path, kill):
    _, files, options = text_setup
    ref = tmp_path / "ref"
    assert run_script(tmp_path, files, ref, task="text-classification", options=options).returncode == 0
    out = tmp_path / "run"
    proc = run_script(tmp_path, files, out, kill=kill, task="text-classification", options=options)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = run_script(tmp_path, files, out, task="text-classification", options={**options, "resume": True})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(out, ref)


# --- two runs, one folder -----------------------------------------------------------------------------------------


HOLD_LOCK = """
import sys, time
from pathlib import Path
from transferkit.engine.rundir import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(300)
"""


def test_a_second_run_gets_an_error_naming_the_active_runs_pid(image_data, tmp_path):
    # a run holds the lock of its folder: a second run started from inside it is refused, naming this process
    out = tmp_path / "run"
    refusals = []

    class SecondRun(Callback):
        def on_train_start(self, state, control):
            for kwargs in ({"resume": True}, {"overwrite": True}, {}):
                with pytest.raises(ConfigError, match=rf"in use by a run that is still active \(pid {os.getpid()}\b"):
                    finetune(image_data, out, epochs=1, **kwargs)
                refusals.append(kwargs)

    finetune(image_data, out, epochs=1, callbacks=(SecondRun(),))
    assert len(refusals) == 3 and meta(out)["status"] == "finished"
    tk.load(out)

    # another process holding the lock; killed (SIGKILL, as a run can be), it leaves a stale lock file that blocks
    # nothing: the OS drops a flock with its process
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], env={**os.environ, **CHILD_ENV},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        with pytest.raises(ConfigError, match=rf"still active \(pid {holder.pid}\b"):
            finetune(image_data, out, epochs=2, resume=True)
        with pytest.raises(ConfigError, match=rf"still active \(pid {holder.pid}\b"):
            finetune(image_data, out, epochs=1, overwrite=True)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert (out / ".transferkit.lock").exists()
    finetune(image_data, out, epochs=2, resume=True)
    assert meta(out)["epochs_run"] == 2


@pytest.mark.slow
def test_two_real_runs_in_one_folder(image_data, tmp_path):
    out = tmp_path / "run"
    first = run_script(tmp_path, image_data, out, kill="wait", options={**IMAGE_OPTS, "epochs": 1}, wait=False)
    try:
        started = Path(str(out) + ".started")
        deadline = time.time() + 120
        while not started.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert started.exists(), first.communicate()[1][-2000:]
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        second = run_script(tmp_path, image_data, out, options={**IMAGE_OPTS, "epochs": 1, "overwrite": True})
        assert second.returncode == 1 and f"still active (pid {first.pid} " in second.stderr, second.stderr[-2000:]
        assert "ConfigError" in second.stderr
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        Path(str(out) + ".go").write_text("")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert meta(out)["status"] == "finished"
    tk.load(out)


# --- hostile images -------------------------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (3 * width)
    idat = zlib.compress(row * 8, 9)  # a few rows; a decoder would still allocate the whole image
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_huge_png_header_is_refused_before_decoding(image_data, tmp_path, monkeypatch):
    from transferkit.data import imageio

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20000, 20000))
    decoded = []
    monkeypatch.setattr(imageio, "_pil_to_tensor", lambda img: decoded.append(img) or torch.zeros(3, 1, 1))
    big = tmp_path / "big.png"
    big.write_bytes(png_claiming(10000, 10000))  # 1e8 pixels: over max_image_pixels, under PIL's own error limit
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL's own note about the 1e8 pixels
        for path in (bomb, big):
            assert imageio.header_problem(str(path)) is not None
            with pytest.raises(DataError, match=rf"{path.name}.*(max_image_pixels|decompression bomb)"):
                imageio.read_image_file(str(path))
        assert "max_image_pixels" in imageio.header_problem(str(big))
    assert time.perf_counter() - t0 < 2 and not decoded
    monkeypatch.undo()

    data = tmp_path / "train"
    shutil.copytree(image_data["train"], data)
    shutil.copyfile(bomb, data / "red" / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png"):
        finetune({"train": str(data), "val": image_data["val"]}, tmp_path / "a", epochs=1)
    with pytest.warns(UserWarning, match="1 unreadable"):
        finetune({"train": str(data), "val": image_data["val"]}, tmp_path / "b", epochs=1, skip_bad_files=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for path in (bomb, big):
            with pytest.raises(DataError, match="max_image_pixels|decompression bomb"):
                tk.load(tmp_path / "b").predict([str(path)])


def test_a_file_that_fails_to_decode_after_the_header_check_is_skipped(image_data, tmp_path):
    from transferkit.data.imageio import header_problem

    data = tmp_path / "train"
    shutil.copytree(image_data["train"], data)
    good = (data / "red" / "0.png").read_bytes()
    # a PNG with a valid header and IEND but corrupt pixel data: passes the up-front check, fails to decode
    start = good.index(b"IDAT") + 4
    broken = good[:start] + bytes(b ^ 0x5A for b in good[start : start + 64]) + good[start + 64 :]
    (data / "red" / "broken.png").write_bytes(broken)
    # a JPEG whose Huffman table is damaged, its end-of-image marker intact (the up-front check reads only the ends)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpeg = bytearray(buf.getvalue())
    at = jpeg.index(b"\xff\xc4") + 4
    jpeg[at : at + 4] = b"\xff\xff\xff\xff"
    (data / "green" / "broken.jpg").write_bytes(bytes(jpeg))
    for name in ("red/broken.png", "green/broken.jpg"):
        assert header_problem(str(data / name)) is None, name
    splits = {"train": str(data), "val": image_data["val"]}
    with pytest.raises(DataError, match=r"broken\.(png|jpg)"):
        finetune(splits, tmp_path / "a", epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(splits, tmp_path / "b", epochs=2, skip_bad_files=True)
    skipped = [str(w.message) for w in caught if "skip_bad_files" in str(w.message)]
    assert any("broken.png" in m for m in skipped) and any("broken.jpg" in m for m in skipped), skipped
    assert meta(tmp_path / "b")["status"] == "finished" and len(result.history) == 2


# --- custom code from folders ------------------------------------------------------------------------------------


def plant_remote_code(folder: Path, marker: Path) -> None:
    """A model folder whose config asks for custom code (auto_map) that would write `marker` when imported."""
    code = f"open({str(marker)!r}, 'w').write('remote code ran')\nfrom transformers import BertConfig as EvilConfig\n"
    (folder / "evil_config.py").write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil_config.EvilConfig", "AutoModel": "evil_config.EvilConfig"}
    config["model_type"] = "evil"
    (folder / "config.json").write_text(json.dumps(config))


def test_no_custom_code_from_model_or_run_folders(text_setup, tmp_path, monkeypatch):
    bert, files, options = text_setup
    marker = tmp_path / "REMOTE_CODE_RAN"

    def no_prompt(*args, **kwargs):
        raise AssertionError(f"asked the user: {args}")

    monkeypatch.setattr("builtins.input", no_prompt)
    evil = tmp_path / "evil-bert"
    shutil.copytree(bert, evil)
    plant_remote_code(evil, marker)
    with pytest.raises(TransferkitError, match="evil-bert"):
        tk.finetune("text-classification", data=files, output_dir=str(tmp_path / "x"),
                    **{**options, "backbone": f"hf:{evil}", "epochs": 1})  # fmt: skip
    assert not marker.exists()

    out = tmp_path / "run"
    tk.finetune("text-classification", data=files, output_dir=str(out), **{**options, "epochs": 1})
    tk.load(out).predict(["the movie was great"])
    plant_remote_code(out / "backbone", marker)
    with pytest.raises(TransferkitError):
        tk.load(out)
    assert not marker.exists()


def test_text_run_folder_with_pickles_loads_nothing(text_setup, tmp_path):
    _, files, options = text_setup
    payload, marker = make_payload(tmp_path)
    out = tmp_path / "run"
    tk.finetune("text-classification", data=files, output_dir=str(out), **{**options, "epochs": 1})
    for name in ("pytorch_model.bin", "training_args.bin", "tokenizer.pkl"):
        plant(out / "backbone" / name, payload)
        plant(out / name, payload)
    tk.load(out).predict(["the plot was dull"])
    assert not marker.exists()
    for name in sorted(p.name for p in (out / "backbone").iterdir() if p.suffix == ".json"):
        victim = tmp_path / f"victim-{name}"
        shutil.copytree(out, victim)
        plant(victim / "backbone" / name, payload)
        with contextlib.suppress(TransferkitError):  # refusing is fine; running the payload is not
            tk.load(victim).predict(["the plot was dull"])
        assert not marker.exists(), name


# --- raw tracebacks --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(image_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    finetune(image_data, out, epochs=1)
    return out


def test_damaged_model_file_is_an_artifact_error(finished, tmp_path):
    for damage in ("truncated", "empty", "garbage", "other-model"):
        out = tmp_path / damage
        shutil.copytree(finished, out)
        f = out / "model.safetensors"
        if damage == "truncated":
            f.write_bytes(f.read_bytes()[:1000])
        elif damage == "empty":
            f.write_bytes(b"")
        elif damage == "garbage":
            f.write_bytes(os.urandom(4096))
        else:
            from safetensors.torch import save_file

            save_file({"weight": torch.zeros(3, 3)}, str(f))
        with pytest.raises(ArtifactError, match=r"model\.safetensors"):
            tk.load(out)


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        "{}",
        '{"task": "image-classification"}',
        '{"task": "image-classification", "config": {}, "status": "finished"}',
        '{"task": "image-classification", "config": {"backbone": 3}, "status": "finished", "task_state": {}}',
        '{"task": "image-classification", "config": [], "status": "finished", "task_state": {"labels": 1}}',
        '{"task": "no-such-task", "config": {}, "status": "finished", "task_state": {}}',
        '{"task": "image-classification", "config": {"epochs": "many"}, "status": "finished", '
        '"task_state": {"labels": ["a", "b"], "data_config": {"input_size": [3, 32, 32]}}}',
        "not json",
        "",
    ],
)
def test_a_transferkit_json_of_the_wrong_shape_is_an_artifact_error(finished, tmp_path, content):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "transferkit.json").write_text(content)
    with pytest.raises(TransferkitError, match=r"transferkit\.json|no-such-task"):
        tk.load(out)


def test_a_transferkit_json_of_the_wrong_shape_on_resume_is_a_config_error(image_data, tmp_path):
    out = crashed_run(image_data, tmp_path / "run", step=9)
    for content in ("[]", "not json", '{"status": "training", "fingerprint": 5}'):
        (out / "transferkit.json").write_text(content)
        with pytest.raises(ConfigError, match=r"transferkit\.json|fingerprint|overwrite=True"):
            finetune(image_data, out, resume=True)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_last_good_one(image_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = ckpt.CheckpointWriter.model

    def full_disk(self, model):
        if self.final.name == ckpt.checkpoint_name(10):
            (self.tmp / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, model)

    monkeypatch.setattr(ckpt.CheckpointWriter, "model", full_disk)
    with pytest.raises((ArtifactError, TrainingError), match=r"(?s)space.*checkpoints.*step-000000008") as info:
        finetune(image_data, out)
    assert str(out) in str(info.value)
    assert steps(out) == [8] and ckpt.verify(out / "checkpoints" / ckpt.checkpoint_name(8)) is None
    assert not list((out / "checkpoints").glob(ckpt.TMP_PREFIX + "*"))  # the partial write is removed
    assert meta(out)["status"] == "failed"
    monkeypatch.undo()
    finetune(image_data, out, resume=True)  # and the run can go on from it


def test_a_full_disk_reported_by_safetensors_is_an_artifact_error(image_data, tmp_path, monkeypatch):
    # safetensors raises its own SafetensorError for a failed write ("I/O error: ... (os error 28)"), not OSError
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "run"
    original = safetensors.torch.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        if "step-000000010" in str(filename) and "optimizer" in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return original(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(ArtifactError, match=r"(?s)No space left on device.*step-000000008"):
        finetune(image_data, out)
    assert steps(out) == [8] and not list((out / "checkpoints").glob(ckpt.TMP_PREFIX + "*"))


@pytest.mark.slow
def test_a_real_write_failure_mid_run_is_an_artifact_error(image_data, tmp_path):
    # a real OS-level failure: after step 9 the child may not write files over 1 MB (the model file is 1.5 MB)
    out = tmp_path / "run"
    proc = run_script(tmp_path, image_data, out, kill="fsize:9")
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("transferkit.errors.ArtifactError") and "step-000000008" in last, last
    assert "File too large" in last and str(out) in last
    assert meta(out)["status"] == "failed" and steps(out) == [8]
    assert not list((out / "checkpoints").glob(ckpt.TMP_PREFIX + "*"))
    finetune(image_data, out, resume=True)
    assert meta(out)["status"] == "finished"


def test_a_full_disk_while_saving_the_final_model_is_an_artifact_error(image_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = ckpt.save_weights

    def full_disk(model, path):
        if Path(path) == out / "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        original(model, path)

    monkeypatch.setattr(ckpt, "save_weights", full_disk)
    with pytest.raises(ArtifactError, match=rf"(?s){out.name}.*space"):
        finetune(image_data, out, epochs=1)
    assert meta(out)["status"] == "failed"


def test_an_unwritable_output_dir_is_a_config_error(image_data, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for target in (a_file, a_file / "run"):
        with pytest.raises(ConfigError, match=rf"{a_file.name}"):
            finetune(image_data, target, epochs=1)
    assert a_file.read_text() == "not a folder"


def test_shape_mismatched_weights_are_transferkit_errors(image_data, finished, tmp_path):
    from safetensors.torch import save_file

    from transferkit.errors import WeightsError

    other = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(1, 1, 1, 1), "fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises((WeightsError, ArtifactError, ConfigError), match="other.safetensors"):
        finetune(image_data, tmp_path / "run", epochs=1, pretrained=str(other))
    # a finished run's weights loaded into a model with another number of classes (a tampered transferkit.json)
    out = tmp_path / "tampered"
    shutil.copytree(finished, out)
    m = meta(out)
    m["task_state"]["labels"] = m["task_state"]["labels"] + ["extra"]
    (out / "transferkit.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        tk.load(out)


# --- accelerate launch --num_processes 2 --cpu -------------------------------------------------------------------


def test_a_single_process_launch_that_asked_for_several_warns(monkeypatch):
    from transferkit.engine.loop import warn_single_process_launch

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    with pytest.warns(UserWarning, match="started one"):
        warn_single_process_launch()
    monkeypatch.setenv("RANK", "0")  # a real multi-process launch: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_single_process_launch()


LAUNCH_PROBE = """
import warnings, os
warnings.simplefilter("always")
from transferkit.config import FinetuneConfig
from transferkit.engine.loop import make_accelerator
acc = make_accelerator(FinetuneConfig(quiet=True))
print("PROCESSES", acc.num_processes, os.environ.get("RANK"))
"""


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_warns_for_real(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(LAUNCH_PROBE)
    env = {**os.environ, **CHILD_ENV}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("PROCESSES 1") == 1, proc.stdout  # one process, though two were asked for
    assert "started one" in proc.stderr


TWO_PROCESS = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import transferkit as tk
from transferkit.engine.callbacks import Callback
spec = json.loads(open(sys.argv[1]).read())

class Kill(Callback):
    def on_step_end(self, state, control, loss):
        if spec.get("kill") and state.global_step == spec["kill"] and os.environ["RANK"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)

tk.finetune("image-classification", data=spec["data"], output_dir=spec["out"], callbacks=(Kill(),),
            **spec["options"])
"""


@pytest.mark.slow
def test_two_processes_killed_and_resumed_match_the_uninterrupted_run(image_data, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS)
    env = {**os.environ, **CHILD_ENV}
    opts = {**IMAGE_OPTS, "batch_size": 2}  # 2 processes x 2: the same 6 steps per epoch

    def launch(out: Path, kill: int | None, resume: bool = False):
        spec = tmp_path / f"{out.name}-{kill}-{resume}.json"
        spec.write_text(json.dumps({"data": image_data, "out": str(out), "kill": kill,
                                    "options": {**opts, "resume": resume}}))  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(spec)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)

    ref = tmp_path / "ref"
    proc = launch(ref, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    assert launch(out, 9).returncode != 0
    assert steps(out) == [8]
    proc = launch(out, None, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert meta(out)["resumed_from"].endswith(ckpt.checkpoint_name(8))
    assert_same_weights(out, ref)
