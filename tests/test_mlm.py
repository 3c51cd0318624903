"""masked-lm: data, masking, perplexity going down, a transformers-compatible output, pretrain -> finetune."""

from __future__ import annotations

import json
import math

import pytest
import torch
from text_toys import TINY_BERT, corpus, sentiment, tiny_bert_folder

import transferkit as tk
from transferkit.errors import ConfigError, DataError

SCRATCH = {
    "backbone": "hf-config:bert",
    "model_config": TINY_BERT,
    "tokenizer": "train",
    "vocab_size": 400,
    "max_length": 32,
    "batch_size": 32,
    "quiet": True,
}


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "part1.txt").write_text("\n".join(corpus(1500, seed=1)) + "\n")
    (folder / "part2.txt").write_text("\n\n".join(corpus(1500, seed=2)) + "\n")  # blank lines only separate docs
    out = tmp_path_factory.mktemp("mlm")
    result = tk.pretrain("masked-lm", data=str(folder), output_dir=str(out), epochs=3, lr=2e-3, **SCRATCH)
    return result, out


def test_pretraining_lowers_held_out_perplexity(mlm_run):
    result, out = mlm_run
    ppl = [row["val/perplexity"] for row in result.history]
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    assert ppl[-1] < ppl[0] and ppl[-1] < vocab / 4, ppl  # random init sits near the vocabulary size
    assert result.metrics["val"]["perplexity"] == pytest.approx(min(ppl))
    state = json.loads((out / "transferkit.json").read_text())["task_state"]
    assert state["max_length"] == 32 and state["val_blocks"] > 0


def test_output_is_a_transformers_folder(mlm_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    _, out = mlm_run
    model, info = AutoModelForMaskedLM.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.mask_token == "[MASK]" and model.config.vocab_size == len(tok)
    predictor = tk.load(out, device="cpu")
    preds = predictor.predict(["the movie was [MASK] and the plot was [MASK]", "no mask here"])
    assert len(preds[0]["predictions"]) == 2 and len(preds[0]["predictions"][0]) == 5
    assert preds[1]["predictions"] == []
    metrics = tk.evaluate(out, data=corpus(200, seed=7))
    assert metrics["perplexity"] < 100


def test_cli_predict_reads_the_text_column_of_a_file(mlm_run, tmp_path):
    from transferkit.cli import main

    _, out = mlm_run
    table = tmp_path / "masked.csv"
    table.write_text("text,label\nthe movie was [MASK],pos\n")
    assert main(["predict", str(out), str(table), "--output", str(tmp_path / "p.json")]) == 0
    row = json.loads((tmp_path / "p.json").read_text())[0]
    assert row["input"] == "the movie was [MASK]"  # the text, not the row's repr
    assert len(row["predictions"]) == 1


def test_pretrain_then_finetune_starts_from_pretrained_weights(mlm_run, tmp_path):
    from safetensors.torch import load_file

    _, out = mlm_run
    bb = tk.create_backbone(f"hf:{out}")
    saved = load_file(str(out / "model.safetensors"))
    torch.testing.assert_close(
        bb.model.embeddings.word_embeddings.weight, saved["bert.embeddings.word_embeddings.weight"]
    )
    assert bb.pooling == "mean"  # a masked-LM checkpoint has no trained pooler, and its [CLS] learned nothing
    result = tk.finetune(
        "text-classification",
        data=sentiment(300, seed=3),
        backbone=f"hf:{out}",
        output_dir=str(tmp_path),
        epochs=3,
        batch_size=16,
        lr=2e-3,
        head_lr_mult=1.0,
        quiet=True,
    )
    assert result.metrics["val"]["accuracy"] >= 0.8, result.history


def test_masking_follows_80_10_10(tmp_path):
    from transferkit.config import FinetuneConfig
    from transferkit.tasks import get_task

    task_cls = get_task("masked-lm")
    opts = {k: v for k, v in SCRATCH.items() if k not in ("backbone", "batch_size", "quiet")}
    task = task_cls(FinetuneConfig(backbone="hf-config:bert"), task_cls.Options(**opts))
    raw = task.read_data(corpus(3000, seed=4))
    task.build_model(raw)  # trains the tokenizer the blocks are cut with
    splits = task.build_datasets(raw)
    torch.manual_seed(0)
    batch = next(iter(task.make_loader(splits.train, "train", len(splits.train), shuffle=True)))
    assert batch["input_ids"].shape[1] == 32
    chosen = batch["labels"] != -100
    assert 0.12 < chosen.float().mean() < 0.16  # 15% of non-special tokens
    assert not (chosen & torch.isin(batch["labels"], torch.tensor(task.tokenizer.all_special_ids))).any()
    as_mask = (batch["input_ids"] == task.tokenizer.mask_token_id) & chosen
    unchanged = (batch["input_ids"] == batch["labels"]) & chosen
    assert 0.75 < as_mask.sum() / chosen.sum() < 0.85
    assert 0.07 < unchanged.sum() / chosen.sum() < 0.14  # 10% kept (+ random draws that hit the same token)
    # validation masks are fixed: two passes give the same batch
    first = next(iter(task.make_loader(splits.val, "val", 8, shuffle=False)))
    again = next(iter(task.make_loader(splits.val, "val", 8, shuffle=False)))
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])


def test_fast_head_matches_transformers_loss():
    from transferkit.config import FinetuneConfig
    from transferkit.models.masked_lm import MaskedLMModel
    from transferkit.tasks import get_task

    task_cls = get_task("masked-lm")
    opts = {k: v for k, v in SCRATCH.items() if k not in ("backbone", "batch_size", "quiet")}
    task = task_cls(FinetuneConfig(backbone="hf-config:bert"), task_cls.Options(**opts))
    raw = task.read_data(corpus(500, seed=5))
    model = task.build_model(raw).eval()
    splits = task.build_datasets(raw)
    assert isinstance(model, MaskedLMModel)
    assert set(model.state_dict()) == set(model.hf_model.state_dict())
    batch = next(iter(task.make_loader(splits.val, "val", 16, shuffle=False)))
    loss = task.train_step(model, batch)
    _, (sums, counts) = task.eval_step(model, batch)
    reference = model.hf_model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    assert float(sums.sum() / counts.sum()) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_continued_pretraining_from_a_checkpoint(tmp_path):
    bert_dir = tiny_bert_folder(tmp_path / "base", corpus(300))
    with pytest.warns(UserWarning, match="no trained masked-LM head"):
        result = tk.pretrain(
            "masked-lm",
            data=corpus(400, seed=6),
            backbone=f"hf:{bert_dir}",
            output_dir=str(tmp_path / "out"),
            epochs=1,
            max_length=32,
            lr=5e-5,
            quiet=True,
        )
    row = result.history[0]
    assert row["val/perplexity"] == pytest.approx(math.exp(row["val/loss"]), rel=1e-6)  # token-weighted loss
    with pytest.raises(ConfigError, match="does not fit the pretrained embeddings"):
        tk.pretrain(
            "masked-lm",
            data=corpus(400),
            backbone=f"hf:{bert_dir}",
            tokenizer="train",
            output_dir=str(tmp_path / "o2"),
            quiet=True,
        )


def test_bad_corpora(tmp_path):
    opts = dict(SCRATCH, epochs=1)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        tk.pretrain("masked-lm", data=str(tmp_path / "empty.txt"), output_dir=str(tmp_path / "o1"), **opts)
    with pytest.raises(DataError, match="does not exist"):
        tk.pretrain("masked-lm", data=str(tmp_path / "missing.txt"), output_dir=str(tmp_path / "o2"), **opts)
    with pytest.raises(DataError, match="less than one block of max_length=32"):
        tk.pretrain("masked-lm", data=["a tiny corpus"] * 2, output_dir=str(tmp_path / "o3"), **opts)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"no text column 'text'; columns found: 'body'"):
        tk.pretrain("masked-lm", data=str(jsonl), output_dir=str(tmp_path / "o4"), **opts)
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        tk.pretrain(
            "masked-lm",
            data=corpus(50),
            output_dir=str(tmp_path / "o5"),
            **{k: v for k, v in opts.items() if k != "tokenizer"},
        )


def test_resume_reuses_the_trained_tokenizer(tmp_path):
    """tokenizers breaks ties between equal merge counts differently per run, so a resumed run must not retrain."""
    import json as _json

    class StopAfterOneEpoch(tk.Callback):
        def on_epoch_end(self, state, control, logs):
            control.should_stop = True

    opts = dict(SCRATCH, data=corpus(600, seed=8), output_dir=str(tmp_path), epochs=2)
    first = tk.pretrain("masked-lm", callbacks=(StopAfterOneEpoch(),), **opts)
    vocab = _json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    resumed = tk.pretrain("masked-lm", resume=True, **opts)
    assert _json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"] == vocab
    assert len(resumed.history) == 2 and resumed.history[0] == pytest.approx(first.history[0])
