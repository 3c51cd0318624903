"""text-classification end to end on a tiny BERT: finetune -> load -> predict -> evaluate, pairs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_toys import TINY_BERT, corpus, sentiment, tiny_bert_folder, write_csv

import transferkit as tk
from transferkit.errors import ConfigError, DataError

FAST = {"epochs": 4, "batch_size": 16, "lr": 2e-3, "head_lr_mult": 1.0, "quiet": True}  # random-init encoder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"), corpus(600))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews")
    return {
        "train": str(write_csv(folder / "train.csv", sentiment(480, seed=0))),
        "val": str(write_csv(folder / "val.csv", sentiment(80, seed=1))),
        "test": str(write_csv(folder / "test.csv", sentiment(80, seed=2))),
    }


@pytest.fixture(scope="module")
def run(bert_dir, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = tk.finetune("text-classification", data=files, backbone=f"hf:{bert_dir}", output_dir=str(out), **FAST)
    return result, out


def test_finetune_learns_and_reports_metrics(run):
    result, out = run
    assert result.labels == ["neg", "pos"]
    assert set(result.metrics["test"]) >= {"accuracy", "f1_macro", "loss"}
    assert result.metrics["test"]["accuracy"] >= 0.85, result.history
    assert {"train/loss", "val/accuracy", "val/f1_macro", "val/loss"} <= set(result.history[-1])
    meta = json.loads((out / "transferkit.json").read_text())
    assert meta["task_state"]["labels"] == ["neg", "pos"] and meta["task_state"]["pooling"] == "pooler"
    assert (out / "backbone" / "config.json").is_file() and (out / "backbone" / "tokenizer.json").is_file()


def test_load_predict_and_evaluate(run, files):
    _, out = run
    predictor = tk.load(out, device="cpu")
    preds = predictor.predict(["the movie was wonderful and the cast was superb", "the plot was dreadful"])
    assert [p["label"] for p in preds] == ["pos", "neg"]
    assert set(preds[0]["probs"]) == {"neg", "pos"} and preds[0]["score"] == max(preds[0]["probs"].values())
    assert predictor.predict("a single string is one input")[0]["label"] in ("neg", "pos")
    metrics = tk.evaluate(out, data=files["test"])
    assert metrics["accuracy"] >= 0.85 and "f1_macro" in metrics
    unknown = Path(files["test"]).with_name("unknown.csv")
    unknown.write_text("text,label\na fine film,pos\nan odd one,meh\n")
    with pytest.raises(DataError, match=r"line 3 has label 'meh' in the evaluation data, .*not trained on it"):
        tk.evaluate(out, data=str(unknown))
    with pytest.raises(DataError, match="single texts"):
        predictor.predict([("a", "b")])


def test_cli_predict_reads_text_files(run, files, tmp_path, capsys):
    """`transferkit predict RUN test.csv` classifies the file's rows (not the string "test.csv"); .txt: its lines."""
    from transferkit.cli import main

    _, out = run
    assert main(["predict", str(out), files["test"], "--output", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    truth = [line.split(",")[-1] for line in Path(files["test"]).read_text().splitlines()[1:]]
    assert len(rows) == len(truth) == 80
    assert rows[0]["input"]["text"] and sum(r["label"] == t for r, t in zip(rows, truth)) >= 68
    lines = tmp_path / "texts.txt"
    lines.write_text("the movie was wonderful and the cast was superb\n\nthe plot was dreadful\n")
    capsys.readouterr()
    assert main(["predict", str(out), str(lines), "a plain text argument"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [p.split("\t")[:2] for p in printed[:2]] == [
        ["the movie was wonderful and the cast was superb", "pos"],
        ["the plot was dreadful", "neg"],
    ]
    assert printed[2].startswith("a plain text argument\t")
    (tmp_path / "folder.csv").mkdir()
    assert main(["predict", str(out), str(tmp_path / "folder.csv")]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert main(["predict", str(out), str(tmp_path / "typo.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["predict", str(out), "--", "--debug"]) == 0  # after `--` it is a text like any other
    assert capsys.readouterr().out.startswith("--debug\t")
    (tmp_path / "other.csv").write_text("sentence,label\nhi,pos\n")
    assert main(["predict", str(out), str(tmp_path / "other.csv")]) == 1
    assert "no 'text' column" in capsys.readouterr().err


def test_text_pairs_use_token_types(bert_dir, tmp_path):
    base = sentiment(160, seed=3)
    # label: do the two reviews agree in sentiment?
    second = sentiment(160, seed=4)
    data = {
        "text": base["text"],
        "text_pair": second["text"],
        "label": ["same" if a == b else "diff" for a, b in zip(base["label"], second["label"])],
    }
    result = tk.finetune(
        "text-classification", data=data, backbone=f"hf:{bert_dir}", output_dir=str(tmp_path), **{**FAST, "epochs": 1}
    )
    assert result.labels == ["diff", "same"]
    predictor = tk.load(tmp_path, device="cpu")
    out = predictor.predict([("the movie was great", "the plot was superb")])
    assert out[0]["label"] in ("diff", "same")
    with pytest.raises(DataError, match="text pairs"):
        predictor.predict(["no second text"])


def test_scratch_model_with_trained_tokenizer_and_dict_backbone(tmp_path):
    result = tk.finetune(
        "text-classification",
        data=sentiment(200, seed=5),
        backbone={"model_type": "bert", **TINY_BERT},
        tokenizer="train",
        vocab_size=300,
        pooling="mean",
        group_by_length=False,
        output_dir=str(tmp_path),
        **{**FAST, "epochs": 1},
    )
    # the reported metrics are those of the restored best epoch
    assert result.metrics["val"]["accuracy"] == pytest.approx(result.history[result.best_epoch - 1]["val/accuracy"])
    predictor = tk.load(tmp_path, device="cpu")
    assert predictor.task.pooling == "mean" and len(predictor.task.tokenizer) <= 300


def test_bad_input_is_reported(bert_dir, files, tmp_path):
    bad_val = write_csv(tmp_path / "val.csv", {"text": ["fine", "odd"], "label": ["pos", "meh"]})
    with pytest.raises(DataError, match=r"line 3 has label 'meh' in the val split.*known labels: 'neg', 'pos'"):
        tk.finetune(
            "text-classification",
            data={"train": files["train"], "val": str(bad_val)},
            backbone=f"hf:{bert_dir}",
            output_dir=str(tmp_path / "o1"),
            **FAST,
        )
    with pytest.raises(DataError, match=r"no text column 'review'; columns found: 'text', 'label'"):
        tk.finetune(
            "text-classification",
            data=files["train"],
            backbone=f"hf:{bert_dir}",
            text_column="review",
            output_dir=str(tmp_path / "o2"),
            **FAST,
        )
    with pytest.raises(ConfigError, match="pooling"):
        tk.finetune(
            "text-classification",
            data=files["train"],
            backbone=f"hf:{bert_dir}",
            pooling="max",
            output_dir=str(tmp_path / "o3"),
            **FAST,
        )
    with pytest.raises(ConfigError, match="does not fit the pretrained embeddings"):
        tk.finetune(
            "text-classification",
            data=files["train"],
            backbone=f"hf:{bert_dir}",
            tokenizer="train",
            output_dir=str(tmp_path / "o4"),
            **FAST,
        )
    with pytest.raises(ConfigError, match="max_length=100 is longer than"):
        tk.finetune(
            "text-classification",
            data=files["train"],
            backbone=f"hf:{bert_dir}",
            max_length=100,
            output_dir=str(tmp_path / "o5"),
            **FAST,
        )
    with pytest.raises(ConfigError, match=r"Unknown option.*'max_len' \(did you mean max_length"):
        tk.finetune(
            "text-classification",
            data=files["train"],
            backbone=f"hf:{bert_dir}",
            max_len=32,
            output_dir=str(tmp_path / "o6"),
            **FAST,
        )


def test_length_grouped_batches_pad_less(bert_dir):
    from transferkit.config import FinetuneConfig
    from transferkit.tasks import get_task

    task_cls = get_task("text-classification")
    data = sentiment(400, seed=6)
    pads = {}
    for grouped in (True, False):
        task = task_cls(FinetuneConfig(backbone=f"hf:{bert_dir}"), task_cls.Options(group_by_length=grouped))
        raw = task.read_data(data)
        task.build_model(raw)
        splits = task.build_datasets(raw)
        torch.manual_seed(0)
        batches = list(task.make_loader(splits.train, "train", 16, shuffle=True))
        assert all(len(b["labels"]) == 16 for b in batches) and len(batches) == len(splits.train) // 16
        pads[grouped] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert pads[True] < 0.5 * pads[False]
