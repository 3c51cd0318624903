"""Two processes (torchrun, gloo on the CPU): every process trains, evaluates and stops together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import transferkit as tk
    data, out, freeze = sys.argv[1:4]
    r = tk.finetune("image-classification", data={"train": data, "test": data}, backbone="timm:test_resnet",
                    pretrained=False, image_size=32, epochs=3, batch_size=4, quiet=True, output_dir=out, lr=3e-3,
                    freeze=freeze, early_stopping={"patience": 2})
    result = {"rank": os.environ["RANK"], "test": r.metrics["test"], "epochs": len(r.history)}
    with open(os.path.join(os.path.dirname(out), "result_" + os.environ["RANK"] + ".json"), "w") as f:
        json.dump(result, f)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("freeze", ["none", "backbone-then-unfreeze"])
def test_two_processes_agree(tmp_path, freeze):
    from test_image_classification import make_folder

    data = make_folder(tmp_path / "data", per_class=8)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            str(script),
            str(data),
            str(tmp_path / "out"),
            freeze,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result_{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(r["rank"] for r in results) == ["0", "1"]
    assert results[0]["test"] == results[1]["test"]  # metrics are gathered over both processes
    assert results[0]["epochs"] == results[1]["epochs"]
    assert (tmp_path / "out" / "model.safetensors").is_file()
