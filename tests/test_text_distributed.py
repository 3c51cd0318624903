"""Two processes (torchrun, gloo on the CPU) for the text tasks: length-grouped batches are sharded consistently,
masked-LM's fast head runs under DDP, and every rank ends with the same metrics. Slow: ``pytest -m slow``."""

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
    sys.path.insert(0, sys.argv[2])
    import transferkit as tk
    from text_toys import TINY_BERT, corpus, sentiment
    out = sys.argv[1]
    common = dict(model_config=TINY_BERT, tokenizer="train", vocab_size=300, quiet=True, batch_size=8)
    mlm = tk.pretrain("masked-lm", data=corpus(600), backbone="hf-config:bert", max_length=32, epochs=2,
                      output_dir=os.path.join(out, "mlm"), **common)
    cls = tk.finetune("text-classification", data={"train": sentiment(160), "test": sentiment(40, seed=9)},
                      backbone="hf-config:bert", epochs=2, lr=2e-3,
                      output_dir=os.path.join(out, "cls"), **common)
    result = {"rank": os.environ["RANK"], "mlm": mlm.metrics["val"], "test": cls.metrics["test"],
              "steps": [len(mlm.history), len(cls.history)]}
    with open(os.path.join(out, "result_" + os.environ["RANK"] + ".json"), "w") as f:
        json.dump(result, f)
    """
)


@pytest.mark.slow
def test_text_tasks_on_two_processes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(command + [tests_dir], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result_{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["mlm"] == pytest.approx(results[1]["mlm"])
    assert results[0]["test"] == pytest.approx(results[1]["test"])
    assert results[0]["mlm"]["perplexity"] < 300
