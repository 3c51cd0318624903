"""Text readers, label maps, tokenizer training, padding and length-grouped batching (no model, no engine)."""

from __future__ import annotations

import json

import pytest
import torch
from text_toys import corpus, write_csv

from transferkit.data.text import (
    LabelMap,
    read_documents,
    read_records,
    resolve_splits,
)
from transferkit.data.text_batches import LengthGroupedBatchSampler, PadCollate, TokenizedTextDataset, tokenize_texts
from transferkit.errors import ConfigError, DataError


def test_csv_tsv_jsonl_and_dict_read_the_same(tmp_path):
    data = {"text": ["a good film", "a bad, bad film", 'she said "wow"'], "label": ["pos", "neg", "pos"]}
    csv_path = write_csv(tmp_path / "d.csv", data)
    tsv_path = write_csv(tmp_path / "d.tsv", data, delimiter="\t")
    tsv_path.write_text("text\tlabel\n" + "\n".join(f"{t}\t{lab}" for t, lab in zip(data["text"], data["label"])))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in zip(data["text"], data["label"])))
    for source in (csv_path, tsv_path, jsonl, data, [dict(text=t, label=lab) for t, lab in zip(*data.values())]):
        recs = read_records(source)
        assert recs.texts == data["text"], source
        assert recs.labels == data["label"]
        assert recs.pairs is None


def test_custom_columns_pairs_and_line_numbers(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('premise,hypothesis,y\n"a man, running",a person moves,1\n"multi\nline",x,0\nsky,blue,1\n')
    recs = read_records(path, text_column="premise", label_column="y", text_pair_column="hypothesis")
    assert recs.texts == ["a man, running", "multi\nline", "sky"]
    assert recs.pairs == ["a person moves", "x", "blue"]
    assert recs.lines == [2, 3, 5]  # the quoted newline makes row 2 span lines 3-4
    auto = read_records({"text": ["a", "b"], "text_pair": ["c", "d"], "label": [0, 1]})
    assert auto.pairs == ["c", "d"]


def test_missing_file_empty_file_and_missing_column(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_records(tmp_path / "empty.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_records(tmp_path / "empty.jsonl")
    path = write_csv(tmp_path / "cols.csv", {"review": ["x"], "stars": [1]})
    with pytest.raises(DataError, match=r"no text column 'text'; columns found: 'review', 'stars'.*text_column"):
        read_records(path)
    with pytest.raises(DataError, match=r"no label column 'label'.*'review', 'stars'.*label_column"):
        read_records(path, text_column="review")
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "d.xlsx").write_text("x")
        read_records(tmp_path / "d.xlsx")


def test_empty_texts_skip_or_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", {"text": ["ok", "  ", "", "fine"], "label": ["a", "b", "a", "b"]})
    with pytest.warns(UserWarning, match=r"2 of 4 rows have an empty or whitespace-only text \(lines 3, 4\)"):
        recs = read_records(path)
    assert recs.texts == ["ok", "fine"] and recs.labels == ["a", "b"]
    with pytest.raises(DataError, match=r"2 of 4 rows.*lines 3, 4.*empty_texts='skip'"):
        read_records(path, empty_texts="error")
    with pytest.raises(ConfigError, match="empty_texts"):
        read_records(path, empty_texts="drop")


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: line 3 is not valid UTF-8"):
        read_records(path)
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"one\ntwo\n\xff\xfe three\n")
    with pytest.raises(DataError, match="line 3 is not valid UTF-8"):
        read_documents(txt)


def test_bad_jsonl_line_and_missing_label_value(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_records(path)
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"line 2 has no 'label' value"):
        read_records(path)


def test_label_map_ints_strings_and_unseen_labels(tmp_path):
    lm = LabelMap.fit([2, 10, 1, 2])
    assert lm.names == ["1", "2", "10"]  # numeric order, names kept as strings
    csv_recs = read_records(write_csv(tmp_path / "v.csv", {"text": ["x", "y"], "label": ["10", "1.0"]}))
    assert lm.encode(csv_recs, "val") == [2, 0]  # "10" from CSV == 10 from JSON; "1.0" == 1
    bad = read_records(write_csv(tmp_path / "t.csv", {"text": ["x", "y", "z"], "label": ["1", "2", "7"]}))
    with pytest.raises(
        DataError, match=r"t.csv: line 4 has label '7' in the test split.*known labels: '1', '2', '10'"
    ):
        lm.encode(bad, "test")
    fixed = LabelMap.fit(["pos"], names=["neg", "pos", "neutral"])
    assert fixed.names == ["neg", "pos", "neutral"]


def test_resolve_splits_folder_and_dict(tmp_path):
    for name in ("train.csv", "dev.csv", "test.jsonl", "notes.md"):
        (tmp_path / name).write_text("text,label\na,b\n")
    assert resolve_splits(str(tmp_path)) == {
        "train": str(tmp_path / "train.csv"),
        "val": str(tmp_path / "dev.csv"),
        "test": str(tmp_path / "test.jsonl"),
    }
    assert resolve_splits({"train": "a.csv", "validation": "b.csv"}) == {"train": "a.csv", "val": "b.csv"}
    assert resolve_splits({"text": ["a"], "label": ["b"]}) == {"train": {"text": ["a"], "label": ["b"]}}
    with pytest.raises(DataError, match="no 'train' split"):
        resolve_splits({"val": "a.csv"})
    empty = tmp_path / "sub"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no train file"):
        resolve_splits(str(empty))


def test_read_documents_txt_folder_and_table(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\n  second doc  \n")
    sub = tmp_path / "more"
    sub.mkdir()
    (sub / "b.txt").write_text("third doc\n")
    assert read_documents(tmp_path / "a.txt") == ["first doc", "second doc"]
    assert read_documents(tmp_path) == ["first doc", "second doc", "third doc"]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "x y"}\n{"body": "z"}\n')
    assert read_documents(jsonl, text_column="body") == ["x y", "z"]
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="empty"):
        read_documents(tmp_path / "blank.txt")
    with pytest.raises(DataError, match="no .txt files"):
        read_documents(sub / "empty" if (sub / "empty").mkdir() is None else None)


def test_train_wordpiece_saves_a_loadable_bert_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from transferkit.data.tokenizer import train_wordpiece

    tok = train_wordpiece(corpus(300), vocab_size=200, output_dir=tmp_path / "tok")
    assert 50 < len(tok) <= 200
    enc = tok("the movie was great", "the plot was dull")
    assert enc["input_ids"][0] == tok.cls_token_id and tok.sep_token_id in enc["input_ids"]
    assert set(enc["token_type_ids"]) == {0, 1}
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again("the movie was great")["input_ids"] == tok("the movie was great")["input_ids"]
    assert again.mask_token == "[MASK]" and again.pad_token_id == 0


def test_pad_collate_and_length_grouping():
    ids = [torch.arange(1, n + 1) for n in (3, 9, 4, 8, 2, 7)]
    ds = TokenizedTextDataset(ids, None, [0, 1, 0, 1, 0, 1])
    batch = PadCollate(pad_id=0)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 9)
    assert batch["attention_mask"].sum(1).tolist() == [3, 9]
    assert batch["labels"].tolist() == [0, 1] and "token_type_ids" not in batch
    gen = torch.Generator()
    sampler = LengthGroupedBatchSampler(ds.lengths, batch_size=2, shuffle=True, mega_batch=3, generator=gen)
    gen.manual_seed(1)
    batches = list(sampler)
    gen.manual_seed(1)
    assert list(sampler) == batches  # the order depends on the generator's seed alone (the engine reseeds per epoch)
    assert sorted(i for b in batches for i in b) == list(range(6)) and len(sampler) == 3
    spread = sum(max(ds.lengths[i] for i in b) - min(ds.lengths[i] for i in b) for b in batches)
    assert spread == 5  # the minimum: neighbours in length share a batch (9/8, 7/4, 3/2)
    assert list(LengthGroupedBatchSampler(ds.lengths, 4, shuffle=False)) == [[1, 3, 5, 2], [0, 4]]
    dropping = LengthGroupedBatchSampler(ds.lengths, batch_size=4, shuffle=True, drop_last=True)
    assert len(dropping) == 1 and [len(b) for b in dropping] == [4]


def test_tokenize_pairs_truncates_to_max_length():
    from transferkit.data.tokenizer import train_wordpiece

    tok = train_wordpiece(corpus(200), vocab_size=200)
    long = " ".join(["the movie was great"] * 20)
    ids, types = tokenize_texts(tok, [long, "short"], [long, "pair"], max_length=16)
    assert len(ids[0]) == 16 and len(types[0]) == 16 and types[1].tolist().count(1) >= 2
