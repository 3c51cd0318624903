"""tk.rank_backbones on tiny random-init backbones and generated data: the table, each backbone's own preprocessing,
weight files, determinism, sample caps, output files, bad input, and the `transferkit rank` command."""

from __future__ import annotations

import csv
import doctest
import json

import numpy as np
import pytest
import torch
from text_toys import sentiment, tiny_bert_folder

from transferkit.backbones import create_backbone
from transferkit.data.transforms import build_transforms
from transferkit.errors import ConfigError, DataError, UnknownNameError, WeightsError
from transferkit.ranking import api
from transferkit.ranking.api import parse_candidates, rank_backbones, resolve_methods, stratified_sample
from transferkit.ranking.cli import rank_cli
from transferkit.ranking.scores import SCORES

IMG = {"image_size": 32, "quiet": True}


def write_folder(root, counts: dict[str, int], seed: int = 0, size: int = 40):
    """Class folders of noisy images whose class sets a colour and a stripe direction."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 200, size=(size, size, 3)).astype(np.int16)  # weak signals in strong noise
            img[..., c % 3] += 12
            if c % 2:
                img[::4] += 25
            else:
                img[:, ::4] += 25
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("imgs"), {"circle": 14, "square": 14, "star": 14})


def manual_features(backbone, paths, data_config, image_size=None):
    """What rank_backbones should compute: the backbone's own eval transform, eval mode, no gradients."""
    from transferkit.data.imageio import load_image
    from transferkit.tasks.image_classification import resolved_data_config

    tf = build_transforms(resolved_data_config(data_config, image_size), train=False)
    with torch.no_grad():
        return backbone.eval()(torch.stack([tf(load_image(str(p))) for p in paths])).numpy()


def sample_paths(result, folder, max_samples=1000, max_per_class=None):
    """The image files of the ranked sample (the train split as tk.finetune carves it, seed 42), in sample order."""
    from transferkit.data.images import resolve_image_data

    train = resolve_image_data(str(folder), seed=42).train
    picked = stratified_sample(train.targets, max_samples, max_per_class, 42)
    assert np.array_equal(np.asarray(train.targets)[picked], result.targets)
    return [train.paths[i] for i in picked]


# ---------------------------------------------------------------------------------------------------------------
# The table and the files
# ---------------------------------------------------------------------------------------------------------------


def test_ranks_images_with_every_method_and_writes_files(folder, tmp_path, capsys):
    result = rank_backbones(
        "image-classification",
        str(folder),
        ["timm:test_resnet", "timm:test_efficientnet"],
        pretrained=False,
        method="all",
        output_dir=tmp_path,
        image_size=32,
    )
    assert result.methods[0] == api.AUTO_METHOD and sorted(result.methods) == sorted(SCORES)
    assert [r["rank"] for r in result.rows] == [1, 2]
    assert result.recommendation == result.rows[0]["name"] and result.rows[0]["recommended"]
    primary = [r[result.method] for r in result.rows]
    assert primary == sorted(primary, reverse=True) and primary[0] > primary[1]
    dims = {r["backbone"]: r["feature_dim"] for r in result.rows}
    assert dims == {"timm:test_resnet": 96, "timm:test_efficientnet": 256}
    for r in result.rows:
        assert all(np.isfinite(r[m]) for m in SCORES)
        assert r["params"] == sum(p.numel() for p in create_backbone(r["backbone"], pretrained=False).parameters())
        assert r["samples"] == result.samples
    # train split as tk.finetune sees it: 10% of each class (1 image) carved out for validation
    assert result.split == "train" and result.per_class == {"circle": 13, "square": 13, "star": 13}

    printed = capsys.readouterr().out
    assert "Recommended: " + result.recommendation in printed and "not comparable across data sets" in printed
    assert str(result) in printed

    with open(tmp_path / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in result.rows]
    assert float(rows[0][result.method]) == pytest.approx(result.rows[0][result.method])
    saved = json.loads((tmp_path / "ranking.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows)) and saved["ranked_by"] == result.method
    assert saved["recommendation"] == result.recommendation and "not comparable" in saved["note"]
    assert sorted(result.files) == sorted([str(tmp_path / "ranking.csv"), str(tmp_path / "ranking.json")])


def test_each_backbone_gets_its_own_data_config(folder):
    """test_resnet normalises with mean = std = 0.5 (like EfficientNet-Lite), test_efficientnet with ImageNet
    statistics; without image_size each runs at its own input size (160 px)."""
    result = rank_backbones(
        "image-classification", str(folder), ["timm:test_resnet", "timm:test_efficientnet"], pretrained=False,
        method="knn", quiet=True, return_features=True, max_per_class=4,
    )  # fmt: skip
    paths = sample_paths(result, folder, max_per_class=4)
    for name in ("timm:test_resnet", "timm:test_efficientnet"):
        torch.manual_seed(42)  # rank_backbones seeds random-init candidates with the run's seed
        bb = create_backbone(name, pretrained=False)
        assert bb.data_config["input_size"] == (3, 160, 160)
        own = manual_features(bb, paths, bb.data_config)
        np.testing.assert_allclose(result.features[f"{name} (random init)"], own, rtol=1e-4, atol=1e-5)
        other_stats = dict(bb.data_config, mean=(0.2, 0.3, 0.4), std=(0.9, 0.8, 0.7))
        assert not np.allclose(manual_features(bb, paths, other_stats), own, atol=1e-3)
    assert create_backbone("timm:test_resnet", pretrained=False).data_config["mean"] == (0.5, 0.5, 0.5)
    assert create_backbone("timm:test_efficientnet", pretrained=False).data_config["mean"] == (0.485, 0.456, 0.406)


def test_candidates_with_weight_files(folder, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    trained = create_backbone("timm:test_resnet", pretrained=False)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(1.5).add_(0.01)
    weights = tmp_path / "digits-run" / "model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))

    result = rank_backbones(
        "image-classification",
        str(folder),
        [("timm:test_resnet", str(weights)), {"backbone": "timm:test_resnet", "pretrained": False, "name": "scratch"}],
        method=["knn", "logme"],
        return_features=True,
        **IMG,
    )
    assert set(result.features) == {"timm:test_resnet (digits-run)", "scratch"}
    assert {r["pretrained"] for r in result.rows} == {str(weights), False}
    paths = sample_paths(result, folder)
    expected = manual_features(trained, paths, trained.data_config, 32)
    np.testing.assert_allclose(result.features["timm:test_resnet (digits-run)"], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(result.features["scratch"], expected, atol=1e-3)

    # one pretrained= for every candidate that does not name its own
    shared = rank_backbones(
        "image-classification", str(folder), ["timm:test_resnet"], pretrained=str(weights), method="knn", **IMG
    )
    assert shared.rows[0]["pretrained"] == str(weights)
    assert shared.rows[0]["knn"] == next(r["knn"] for r in result.rows if r["name"].endswith("(digits-run)"))


def test_same_call_same_table_and_seed_changes_the_sample(folder):
    kw = dict(pretrained=False, method="all", max_per_class=6, **IMG)
    cands = ["timm:test_resnet", "timm:test_efficientnet"]
    torch.manual_seed(1)  # the global RNG state must not matter (random-init candidates are seeded by `seed`)
    a = rank_backbones("image-classification", str(folder), cands, **kw)
    torch.manual_seed(2)
    b = rank_backbones("image-classification", str(folder), cands, **kw)
    timing = ("load_seconds", "feature_seconds", "score_seconds")
    strip = [[{k: v for k, v in r.items() if k not in timing} for r in x.rows] for x in (a, b)]
    assert strip[0] == strip[1]
    kw["method"] = "knn"
    c = rank_backbones("image-classification", str(folder), cands, seed=7, return_features=True, **kw)
    d = rank_backbones("image-classification", str(folder), cands, seed=42, return_features=True, **kw)
    assert not np.allclose(c.features[c.rows[0]["name"]], d.features[c.rows[0]["name"]])


# ---------------------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------------------


def test_stratified_sample_caps_large_classes_and_keeps_small_ones():
    y = [0] * 50 + [1] * 6 + [2] * 20
    idx = stratified_sample(y, max_samples=30, max_per_class=None, seed=0)
    counts = np.bincount(np.asarray(y)[idx])
    assert counts.tolist() == [12, 6, 12]
    assert np.array_equal(idx, stratified_sample(y, 30, None, seed=0))
    assert not np.array_equal(idx, stratified_sample(y, 30, None, seed=1))
    assert np.bincount(np.asarray(y)[stratified_sample(y, None, 5, 0)]).tolist() == [5, 5, 5]
    assert len(stratified_sample(y, None, None, 0)) == len(y)


def test_imbalanced_folder_is_balanced_by_the_caps(tmp_path):
    root = write_folder(tmp_path, {"many": 30, "few": 5})
    result = rank_backbones(
        "image-classification", str(root), ["timm:test_resnet"], pretrained=False, method="knn", max_samples=14,
        val_fraction=0.2, **IMG,
    )  # fmt: skip
    assert result.per_class == {"few": 4, "many": 10} and result.samples == 14


# ---------------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------------


def test_ranks_text_encoders_with_their_tokenizer_and_pooling(tmp_path):
    from transferkit.data.text_batches import PadCollate

    bert = tiny_bert_folder(tmp_path / "bert")
    data = {"train": sentiment(60, seed=0), "val": sentiment(20, seed=1)}
    result = rank_backbones(
        "text-classification",
        data,
        [f"hf:{bert}", (f"hf:{bert}", False)],
        method=["logme", "sfda", "hscore", "knn"],  # the linear probe's L-BFGS is the slow one; images cover it
        quiet=True,
        return_features=True,
    )
    labels = data["train"]["label"]
    assert [r["feature_dim"] for r in result.rows] == [32, 32]
    assert result.per_class == {"neg": labels.count("neg"), "pos": labels.count("pos")}
    assert all(np.isfinite(r[m]) for r in result.rows for m in result.methods)
    names = {r["name"] for r in result.rows}
    assert names == {f"hf:{bert}", f"hf:{bert} (random init)"}

    bb = create_backbone(f"hf:{bert}").eval()
    texts = [data["train"]["text"][i] for i in range(60)]
    batch = PadCollate(bb.tokenizer.pad_token_id)(
        [(torch.tensor(t), None, -1) for t in bb.tokenizer(texts)["input_ids"]]
    )
    with torch.no_grad():
        expected = bb(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(result.features[f"hf:{bert}"], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(result.features[f"hf:{bert} (random init)"], expected, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_backbone_is_reported_before_any_work(folder, monkeypatch):
    def fail(*a, **k):  # no backbone may be built before every name was checked
        raise AssertionError("a backbone was built before the names were checked")

    monkeypatch.setattr(api, "_build", fail)
    with pytest.raises(UnknownNameError, match=r"timm:resnet_10t.*Did you mean: .*resnet10t"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet", "timm:resnet_10t"], **IMG)
    with pytest.raises(UnknownNameError, match="no known source prefix"):
        rank_backbones("image-classification", str(folder), ["resnet18"], **IMG)
    with pytest.raises(ConfigError, match="does not serve image-classification"):
        rank_backbones("image-classification", str(folder), ["hf:some/model"], **IMG)
    with pytest.raises(WeightsError, match="missing.pth"):
        rank_backbones("image-classification", str(folder), [("timm:test_resnet", "missing.pth")], **IMG)


def test_unknown_method_task_and_options(folder):
    with pytest.raises(ConfigError, match=r"Unknown ranking method 'log_me'. Did you mean: logme"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], method="log_me", **IMG)
    with pytest.raises(ConfigError, match="Unknown ranking method"):
        resolve_methods(["knn", "nope"])
    with pytest.raises(UnknownNameError, match="Did you mean: image-classification"):
        rank_backbones("image-clasification", str(folder), ["timm:test_resnet"])
    with pytest.raises(ConfigError, match="supports image-classification, text-classification"):
        rank_backbones("semantic-segmentation", str(folder), ["timm:test_resnet"])
    with pytest.raises(ConfigError, match="imag_size"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], imag_size=32, quiet=True)
    with pytest.raises(ConfigError, match="max_samples"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], max_samples=0, **IMG)
    with pytest.raises(ConfigError, match="split='tset'"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], split="tset", **IMG)


def test_malformed_candidates():
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_candidates([])
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_candidates("timm:resnet18")
    with pytest.raises(ConfigError, match="unique"):
        parse_candidates([{"backbone": "timm:a", "name": "x"}, {"backbone": "timm:b", "name": "x"}])
    with pytest.raises(ConfigError, match="unknown key"):
        parse_candidates([{"backbone": "timm:a", "weights": "x.pth"}])
    with pytest.raises(ConfigError, match="pretrained=3"):
        parse_candidates([("timm:a", 3)])
    names = [c.name for c in parse_candidates(["timm:a", "timm:a", ("timm:a", False)], pretrained=True)]
    assert names == ["timm:a", "timm:a #2", "timm:a (random init)"]


def test_one_class_and_single_sample_classes_are_data_errors(tmp_path, folder):
    one = write_folder(tmp_path / "one", {"only": 8})
    with pytest.raises(DataError, match="at least 2"):
        rank_backbones("image-classification", str(one), ["timm:test_resnet"], **IMG)
    split = tmp_path / "split"
    write_folder(split / "train", {"a": 6, "b": 6})
    write_folder(split / "val", {"a": 3, "b": 1})
    with pytest.raises(DataError, match=r"\['b'\] have a single sample in the val split"):
        rank_backbones("image-classification", str(split), ["timm:test_resnet"], split="val", **IMG)
    with pytest.raises(DataError, match="raise max_per_class"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], max_per_class=1, **IMG)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def test_cli_ranks_and_writes_files(folder, tmp_path, capsys):
    from safetensors.torch import save_file

    bb = create_backbone("timm:test_resnet", pretrained=False)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in bb.state_dict().items()}, str(weights))
    out = tmp_path / "rank"
    code = rank_cli(
        ["image-classification", "--data", str(folder), "timm:test_efficientnet", f"timm:test_resnet@{weights}",
         "--pretrained", "false", "--method", "knn,logme", "--output-dir", str(out), "image_size=32", "seed=3"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "ranked by knn" in printed and "timm:test_resnet (w)" in printed
    saved = json.loads((out / "ranking.json").read_text())
    assert saved["methods"] == ["knn", "logme"] and saved["seed"] == 3
    assert {r["pretrained"] for r in saved["rows"]} == {False, str(weights)}

    listing = tmp_path / "candidates.yaml"
    listing.write_text("- timm:test_resnet\n- {backbone: timm:test_efficientnet, name: effnet}\n")
    assert rank_cli(["image-classification", "--data", str(folder), "--candidates", str(listing), "--pretrained",
                     "false", "--method", "knn", "--json", "image_size=32"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in report["rows"]} == {"timm:test_resnet (random init)", "effnet"}


def test_cli_errors_exit_with_status_1(folder, capsys):
    assert rank_cli(["image-classification", "--data", str(folder), "timm:resnet_10t", "image_size=32"]) == 1
    assert "Did you mean" in capsys.readouterr().err
    assert rank_cli(["image-classification", "--data", str(folder), "image_size=32"]) == 1
    assert "at least one candidate" in capsys.readouterr().err
    assert rank_cli(["image-classification", "--data", str(folder), "resnet18"]) == 1
    assert "neither a candidate" in capsys.readouterr().err


def test_docstring_examples():
    failures, _ = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_transferkit_rank_as_users_type_it(folder, tmp_path, capsys):
    from transferkit.cli import main

    argv = ["rank", "image-classification", "--data", str(folder), "timm:test_resnet", "timm:test_efficientnet",
            "--pretrained", "false", "--method", "knn", "--output-dir", str(tmp_path / "r"),
            "image_size=32"]  # fmt: skip
    assert main(argv) == 0
    assert "ranked by knn" in capsys.readouterr().out
    assert (tmp_path / "r" / "ranking.csv").is_file()
    assert main(["rank", "image-classification", "--data", str(tmp_path / "nowhere"), "timm:test_resnet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]


def test_rank_flags_given_as_options_and_debug(folder, capsys):
    from transferkit.cli import main

    argv = ["rank", "image-classification", "--data", str(folder), "timm:test_resnet", "device=cpu"]
    assert main(argv) == 1
    assert "device is a flag of `transferkit rank`: write --device cpu" in capsys.readouterr().err
    with pytest.raises(UnknownNameError):
        main(["--debug", "rank", "image-classification", "--data", str(folder), "timm:resnet_10t", "image_size=32"])


def test_output_dir_that_is_a_file(folder, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        rank_backbones("image-classification", str(folder), ["timm:test_resnet"], pretrained=False, output_dir=f)
