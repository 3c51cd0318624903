"""Segmentation and detection on two processes (torchrun, CPU/gloo): the run finishes, files are written once, and
the test metrics gathered over both shards equal a single-process evaluation of the saved model. Slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from detection_toys import write_shapes
from test_segmentation import CLASSES, make_split

import transferkit as tk

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import transferkit as tk
    task, data, out = sys.argv[1:4]
    data = json.loads(data)
    opts = dict(backbone="timm:test_resnet", pretrained=False, epochs=1, batch_size=2, eval_batch_size=3, lr=1e-3,
                quiet=True, output_dir=out, report=False)
    if task == "semantic-segmentation":
        opts.update(head="unet", image_size=32)
    else:
        opts.update(head_kwargs={"fpn_channels": 16})
    r = tk.finetune(task, data=data, **opts)
    if os.environ["RANK"] == "0":
        json.dump(r.metrics["test"], open(os.path.join(os.path.dirname(out), "dist_test.json"), "w"))
    """
)


def _two_processes(tmp_path: Path, task: str, data: dict) -> dict:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), task,
           json.dumps(data), str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "dist_test.json").read_text())


def test_segmentation_on_two_processes(tmp_path):
    root = tmp_path / "seg"
    make_split(root / "train", 8, seed=0)
    make_split(root / "test", 5, seed=100)  # 5 images: shards of 3 and 2, no padding
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    data = {"train": str(root / "train"), "test": str(root / "test")}
    distributed = _two_processes(tmp_path, "semantic-segmentation", data)
    single = tk.evaluate(tmp_path / "run", data=str(root / "test"), batch_size=4)
    assert distributed["miou"] == pytest.approx(single["miou"], abs=1e-6)
    assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-4)
    meta = json.loads((tmp_path / "run" / "transferkit.json").read_text())
    assert meta["status"] == "finished"


def test_detection_on_two_processes(tmp_path):
    root = tmp_path / "det"
    write_shapes(root / "train", n=8, seed=0, first_id=1000)
    write_shapes(root / "test", n=5, seed=2, first_id=7000)
    data = {"train": str(root / "train"), "test": str(root / "test")}
    distributed = _two_processes(tmp_path, "object-detection", data)
    single = tk.evaluate(tmp_path / "run", data=str(root / "test"), batch_size=4)
    assert distributed["map"] == pytest.approx(single["map"], abs=1e-6)
    predictions = json.loads((tmp_path / "run" / "predictions_test.json").read_text())
    assert {p["image_id"] for p in predictions} <= set(range(7000, 7005))  # each image's boxes once, from both shards
    assert len(predictions) == len({(p["image_id"], tuple(p["bbox"]), p["score"]) for p in predictions})
