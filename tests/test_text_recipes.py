"""The text recipes run as scripts: pretrain (masked-LM) -> fine-tune (text classification), tiny sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from text_toys import corpus, sentiment, write_csv

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_then_finetune_recipes(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("\n".join(corpus(800)) + "\n")
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    write_csv(reviews / "train.csv", sentiment(200, seed=1))
    write_csv(reviews / "test.csv", sentiment(60, seed=2))
    tiny = "{num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"
    _recipe("pretrain_mlm").main([
        f"data={tmp_path / 'corpus.txt'}", f"output_dir={tmp_path / 'mlm'}", f"model_config={tiny}",
        "vocab_size=300", "max_length=32", "epochs=1", "quiet=true",
    ])  # fmt: skip
    assert (tmp_path / "mlm" / "config.json").is_file()
    capsys.readouterr()
    _recipe("text_classification").main([
        f"data={reviews}", f"backbone=hf:{tmp_path / 'mlm'}", f"output_dir={tmp_path / 'cls'}", "max_length=32",
        "epochs=1", "quiet=true", "early_stopping=null",
    ])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["labels"] == ["neg", "pos"] and set(printed["metrics"]["test"]) >= {"accuracy", "f1_macro", "loss"}
