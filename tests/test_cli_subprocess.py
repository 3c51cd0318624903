"""Every `transferkit` subcommand as a user runs it: the installed console script in a subprocess (exit codes,
stdout/stderr, files), on a tiny random-init model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_image_classification import make_folder

EXE = Path(sys.executable).with_name("transferkit")
pytestmark = pytest.mark.skipif(not EXE.exists() and shutil.which("transferkit") is None,
                                reason="the transferkit console script is not installed")  # fmt: skip


def tk_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(EXE) if EXE.exists() else shutil.which("transferkit")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_every_subcommand_in_a_subprocess(tmp_path):
    data = make_folder(tmp_path / "data", per_class=6)
    run = tmp_path / "run"
    r = tk_cmd("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip()
    r = tk_cmd("list", "tasks", cwd=tmp_path)
    assert r.returncode == 0 and "object-detection" in r.stdout.split()
    r = tk_cmd("options", "image-classification", cwd=tmp_path)
    assert r.returncode == 0 and "epochs=auto" in r.stdout
    r = tk_cmd("finetune", "image-classification", "--data", str(data), "--backbone", "timm:test_resnet",
               "--output-dir", str(run), "pretrained=false", "image_size=32", "epochs=1", "quiet=true",
               cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["output_dir"] == str(run) and (run / "report.html").is_file()
    r = tk_cmd("evaluate", str(run), "--data", str(data), "--output", str(tmp_path / "m.json"), cwd=tmp_path)
    assert r.returncode == 0 and "accuracy" in json.loads((tmp_path / "m.json").read_text())
    r = tk_cmd("predict", str(run), str(data / "red"), "--output", str(tmp_path / "p.json"), cwd=tmp_path)
    assert r.returncode == 0 and len(json.loads((tmp_path / "p.json").read_text())) == 6
    (run / "report.html").unlink()
    r = tk_cmd("report", str(run), cwd=tmp_path)
    assert r.returncode == 0 and (run / "report.html").is_file()
    r = tk_cmd("rank", "image-classification", "--data", str(data), "timm:test_resnet", "timm:test_efficientnet",
               "--pretrained", "false", "--method", "knn", "image_size=32", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and "ranked by knn" in r.stdout
    # a user error: one line on stderr, exit 1; a usage error: exit 2
    r = tk_cmd("finetune", "image-classification", "--data", str(tmp_path / "nowhere"), "--backbone",
               "timm:test_resnet", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "nowhere" in r.stderr
    r = tk_cmd("finetune", "--no-such-flag", cwd=tmp_path)
    assert r.returncode == 2
