"""The hf: / hf-config: backbone adapter: loading, layer groups, pooling, mismatches, layer-wise LR decay."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from text_toys import TINY_BERT, corpus, tiny_bert_folder

from transferkit.backbones import check_layer_groups, create_backbone, list_backbones
from transferkit.errors import ConfigError, UnknownNameError, WeightsError


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


def test_hf_folder_loads_with_groups_embeddings_layers_pooler(bert_dir):
    bb = create_backbone(f"hf:{bert_dir}")
    assert bb.num_features == 32 and bb.pooling == "pooler"  # the checkpoint has pooler weights
    groups = bb.layer_groups()
    check_layer_groups(bb, groups)
    assert [g[0].split(".")[1:4] for g in groups] == [
        ["embeddings", "word_embeddings", "weight"],
        ["encoder", "layer", "0"],
        ["encoder", "layer", "1"],
        ["pooler", "dense", "weight"],
    ]
    enc = bb.tokenizer(["the movie was great", "dull"], return_tensors="pt", padding=True)
    assert bb(**enc).shape == (2, 32)
    assert bb.data_config == {"max_length": 64}


def test_cls_and_mean_pooling_ignore_padding(bert_dir):
    bb = create_backbone(f"hf:{bert_dir}", pooling="mean").eval()
    assert bb.model.pooler is None  # unused pooler is dropped (no idle params in the optimizer)
    tok = bb.tokenizer
    alone = tok(["dull"], return_tensors="pt")
    padded = tok(["dull", "the movie was great and the plot was clever"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(bb(**alone)[0], bb(**padded)[0], atol=1e-5, rtol=1e-4)
    assert create_backbone(f"hf:{bert_dir}", pooling="cls").pooling == "cls"


def test_auto_pooling_reads_sentence_transformers_config(bert_dir, tmp_path):
    st = shutil.copytree(bert_dir, tmp_path / "st")
    (st / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert create_backbone(f"hf:{st}").pooling == "mean"


def test_fresh_model_from_config_and_dict_spec():
    from transferkit.backbones.hf_adapter import create_masked_lm, parse_spec
    from transferkit.data.tokenizer import train_wordpiece

    tok = train_wordpiece(corpus(200), vocab_size=150)
    bb = create_backbone("hf-config:bert", tokenizer=tok, model_config=TINY_BERT)
    assert bb.config.vocab_size == len(tok) and bb.pooling == "mean"  # a fresh pooler is untrained
    model, _ = create_masked_lm(parse_spec({"model_type": "bert", **TINY_BERT}), tokenizer=tok)
    assert type(model).__name__ == "BertForMaskedLM" and model.config.num_hidden_layers == 2
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        create_backbone("hf-config:bert", model_config=TINY_BERT)
    with pytest.raises(ConfigError, match="did you mean hidden_size"):
        create_backbone("hf-config:bert", tokenizer=tok, model_config={"hiden_size": 32})
    with pytest.raises(UnknownNameError, match="Did you mean: bert"):
        create_backbone("hf-config:bret", tokenizer=tok)


@pytest.mark.parametrize(
    "model_type,extra",
    [
        ("roberta", {}),
        ("distilbert", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
        ("deberta-v2", {}),
        ("electra", {"embedding_size": 16}),
    ],
)
def test_layer_groups_partition_other_encoders(model_type, extra):
    from transferkit.data.tokenizer import train_wordpiece

    tok = train_wordpiece(corpus(100), vocab_size=120)
    sizes = {} if model_type == "distilbert" else dict(TINY_BERT)
    bb = create_backbone(f"hf-config:{model_type}", tokenizer=tok, model_config={**sizes, **extra})
    groups = bb.layer_groups()
    check_layer_groups(bb, groups)
    assert len(groups) >= 3 and all("embed" in n for n in groups[0])
    assert all(".0." in n for n in groups[1]) and all(".1." in n for n in groups[2])
    enc = tok(["the movie was great"], return_tensors="pt")
    assert bb(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).shape == (1, 32)


def test_tokenizer_model_mismatch_and_bad_paths(bert_dir, tmp_path):
    from transformers import BertConfig, BertModel

    small = tmp_path / "small-vocab"
    BertModel(BertConfig(vocab_size=50, **TINY_BERT)).save_pretrained(str(small))
    with pytest.raises(WeightsError, match=r"Tokenizer/model mismatch: .* has \d+ tokens but .* has only 50"):
        create_backbone(f"hf:{small}", tokenizer=str(bert_dir))
    with pytest.raises(ConfigError, match="without a usable tokenizer"):
        create_backbone(f"hf:{small}")
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone(f"hf:{tmp_path}/missing")
    with pytest.raises(WeightsError, match="no config.json"):
        create_backbone(f"hf:{tmp_path}")


def test_list_backbones_hf_config_types():
    names = list_backbones(source="hf-config")
    assert "hf-config:bert" in names and "hf-config:roberta" in names
    assert list_backbones("bert", source="hf-config") == ["hf-config:bert"]
    assert all(n.startswith("hf:") for n in list_backbones(source="hf"))  # the local HF cache; may be empty


def test_layer_decay_gives_expected_lr_per_group(bert_dir):
    from transferkit.config import FinetuneConfig
    from transferkit.engine.optim import ParamGroupPlan
    from transferkit.models import create_model

    model = create_model(f"hf:{bert_dir}", num_classes=2)
    cfg = FinetuneConfig(lr=1e-4, head_lr_mult=10.0, layer_decay=0.5)
    plan = ParamGroupPlan(model, cfg)
    assert plan.num_groups == 4  # embeddings, layer 0, layer 1, pooler
    lr_of = {id(p): g["lr"] for g in plan.groups(plan.order(plan.num_groups)) for p in g["params"]}
    expected = {  # lr * layer_decay ** (L - 1 - i); the new head at lr * head_lr_mult
        "backbone.model.embeddings.": 1e-4 * 0.5**3,
        "backbone.model.encoder.layer.0.": 1e-4 * 0.5**2,
        "backbone.model.encoder.layer.1.": 1e-4 * 0.5,
        "backbone.model.pooler.": 1e-4,
        "head.": 1e-3,
    }
    for name, p in model.named_parameters():
        want = next(v for k, v in expected.items() if name.startswith(k))
        assert lr_of[id(p)] == pytest.approx(want), name


def test_layer_decay_reaches_each_vit_block():
    """layer_decay is an engine option; a timm ViT's blocks get one LR each, like a text encoder's layers."""
    pytest.importorskip("timm")
    from transferkit.config import FinetuneConfig
    from transferkit.engine.optim import ParamGroupPlan
    from transferkit.models import create_model

    model = create_model("timm:test_vit", num_classes=3, pretrained=False)
    plan = ParamGroupPlan(model, FinetuneConfig(lr=1e-3, head_lr_mult=1.0, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in plan.groups(plan.order(plan.num_groups)) for p in g["params"]}
    blocks = sorted({int(n.split("blocks.")[1].split(".")[0]) for n, _ in model.named_parameters() if "blocks." in n})
    block_lr = [
        {lr_of[id(p)] for n, p in model.named_parameters() if f"blocks.{b}." in n} for b in blocks
    ]  # fmt: skip
    assert all(len(s) == 1 for s in block_lr)
    lrs = [s.pop() for s in block_lr]
    assert all(later == pytest.approx(2 * earlier) for earlier, later in zip(lrs, lrs[1:]))
    assert lr_of[id(dict(model.named_parameters())["head.fc.weight"])] == pytest.approx(1e-3)
