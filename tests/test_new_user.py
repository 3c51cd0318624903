"""A new user's first hour: what a run says, the usual mistakes (one clear line, before training), and discovering
options."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from test_image_classification import make_folder
from text_toys import sentiment, tiny_bert_folder, write_csv
from torch import nn

import transferkit as tk
from transferkit.cli import main
from transferkit.errors import ConfigError, DataError, UnknownNameError

FAST = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, batch_size=8, lr=3e-3, report=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("newuser") / "data", per_class=8)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("bert") / "bert")


# --- what a run says -------------------------------------------------------------------------------------------
def test_a_run_says_what_it_does_and_what_it_restored(data_dir, tmp_path, capsys):
    r = tk.finetune("image-classification", data=str(data_dir), epochs=3, output_dir=str(tmp_path / "r"), **FAST)
    err = capsys.readouterr().err
    assert "transferkit image-classification: backbone timm:test_resnet (random init), head linear" in err
    assert "data: train 21, val 3 (val carved from train) | 3 classes" in err
    assert "device cpu, precision no, channels-last, 1 process(es), output " + str(tmp_path / "r") in err
    assert f"Restored epoch {r.best_epoch} of 3 (best val/accuracy" in err
    assert f"Model saved to {tmp_path / 'r' / 'model.safetensors'}" in err
    assert "\r" not in err  # not a terminal: plain lines, no carriage-return fragments
    meta = json.loads((tmp_path / "r" / "transferkit.json").read_text())
    assert meta["best_epoch"] == r.best_epoch and meta["best_reason"].startswith("best val/accuracy")
    with open(tmp_path / "r" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["best"]) for row in rows] == [int(i + 1 == r.best_epoch) for i in range(3)]


def test_ties_in_the_monitored_metric_go_to_the_lower_val_loss():
    from toy import ToyOptions, ToyTask, make_data

    from transferkit.config import FinetuneConfig
    from transferkit.engine.loop import Trainer

    class ConstantAccuracy(ToyTask):
        def eval_step(self, model, batch):  # real losses, but an accuracy that never changes
            losses, _ = super().eval_step(model, batch)
            return losses, None

    config = FinetuneConfig(quiet=True, epochs=4, batch_size=16, lr=1e-3)
    task = ConstantAccuracy(config, ToyOptions(metric_sequence=(0.5,)))
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=0)))  # val from the same classes
    out = Trainer(task, task.build_model(), splits, config, None).fit()
    losses = [row["val/loss"] for row in out.history]
    assert out.best_epoch == int(np.argmin(losses)) and out.best_epoch != 0
    assert "lowest val/loss" in out.best_reason


def test_monitor_is_what_early_stopping_watches(data_dir, tmp_path):
    from transferkit.config import FinetuneConfig
    from transferkit.engine.loop import Trainer
    from transferkit.tasks import get_task

    cfg = FinetuneConfig(monitor="val/f1_macro", early_stopping=True, quiet=True)
    task = get_task("image-classification")(cfg)
    trainer = Trainer(task, nn.Linear(2, 2), None, cfg, None)
    assert trainer.early_stopping.tracker.monitor == "val/f1_macro" == trainer.best.monitor
    assert trainer.early_stopping.tracker.mode == "max"


def test_masked_lm_saves_without_library_noise(tmp_path, capfd):
    from text_toys import corpus

    tiny = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    tk.pretrain("masked-lm", data=corpus(300), backbone="hf-config:bert", model_config=tiny, tokenizer="train",
                vocab_size=300, max_length=32, epochs=1, output_dir=str(tmp_path / "m"), quiet=True)  # fmt: skip
    out, err = capfd.readouterr()
    assert "Removed shared tensor" not in out + err


# --- output folders ---------------------------------------------------------------------------------------------
def test_keep_resume_state_false_leaves_only_what_load_needs(data_dir, tmp_path):
    out = tmp_path / "lean"
    tk.finetune("image-classification", data=str(data_dir), epochs=2, output_dir=str(out), keep_resume_state=False,
                quiet=True, **FAST)  # fmt: skip
    assert not list((out / "checkpoints").glob("step-*"))
    assert tk.load(out).predict([str(next(data_dir.rglob("*.png")))])[0]["label"] in {"red", "green", "blue"}


def test_best_weights_are_one_file_with_the_final_weights_and_resume_still_works(data_dir, tmp_path):
    out = tmp_path / "linked"
    opts = dict(output_dir=str(out), quiet=True, **FAST)
    tk.finetune("image-classification", data=str(data_dir), epochs=2, **opts)
    final, best = out / "model.safetensors", out / "checkpoints" / "best" / "model.safetensors"
    assert final.stat().st_ino == best.stat().st_ino  # a hard link: the weights are on disk once
    before = final.read_bytes()
    # training on replaces the files (never writes through the link), so each stays whole and verified
    res = tk.finetune("image-classification", data=str(data_dir), epochs=4, resume=True, **opts)
    assert len(res.history) == 4
    assert tk.load(out).predict([str(next(data_dir.rglob("*.png")))])[0]["label"] in {"red", "green", "blue"}
    if res.best_epoch <= 2:
        assert final.read_bytes() == before
    from transferkit.engine.checkpoint import verify

    assert verify(best.parent) is None


# --- mistakes: one clear line, before training --------------------------------------------------------------------
def test_a_text_backbone_for_an_image_task(data_dir, bert_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"is a hf: backbone, which serves text-classification.*timm:, tv:"):
        tk.finetune("image-classification", data=str(data_dir), backbone=f"hf:{bert_dir}", quiet=True,
                    output_dir=str(tmp_path / "r"))  # fmt: skip
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_head_of_the_wrong_width_fails_when_the_model_is_built(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"head outputs \(2, 5\).*3 classes"):
        tk.finetune("image-classification", data=str(data_dir), head=nn.Linear(96, 5), output_dir=str(tmp_path),
                    quiet=True, **FAST)  # fmt: skip


def test_an_empty_text_val_file_is_an_error(bert_dir, tmp_path):
    write_csv(tmp_path / "train.csv", sentiment(40))
    (tmp_path / "val.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"val.csv: the val split has no texts"):
        tk.finetune("text-classification", data=str(tmp_path), backbone=f"hf:{bert_dir}", quiet=True,
                    output_dir=str(tmp_path / "run"))  # fmt: skip


def test_a_wrong_task_name_lists_the_valid_ones(data_dir, capsys):
    with pytest.raises(UnknownNameError, match="Did you mean: image-classification"):
        tk.finetune("image-clasification", data=str(data_dir), backbone="timm:test_resnet")
    assert main(["list", "backbones", "--task", "imag-classification"]) == 1
    assert "Did you mean: image-classification" in capsys.readouterr().err
    assert main(["list", "backbones", "--source", "hf"]) == 0
    assert "local Hugging Face cache" in capsys.readouterr().err
    assert main(["list", "backbones", "--pattern", "no-such-net*"]) == 0
    assert "no backbone matches" in capsys.readouterr().err


def test_predict_a_folder_and_evaluate_a_split_folder(tmp_path, capsys):
    root = tmp_path / "splits"
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        make_folder(root / split, per_class=n)
    r = tk.finetune("image-classification", data=str(root), epochs=1, output_dir=str(tmp_path / "r"), quiet=True,
                    **FAST)  # fmt: skip
    preds = tk.load(tmp_path / "r").predict(str(root / "test"))
    assert len(preds) == 12  # every image in the folder, recursively
    metrics = tk.evaluate(tmp_path / "r", data=str(root))  # train/ val/ test/: the test split, not 3 "classes"
    assert metrics["accuracy"] == pytest.approx(r.metrics["test"]["accuracy"])
    assert main(["predict", str(tmp_path / "r"), str(root / "test"), "--output", str(tmp_path / "p.json")]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())) == 12


def test_integer_labels_come_back_as_ints(bert_dir, tmp_path):
    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return 24

        def __getitem__(self, i):
            img = np.full((16, 16, 3), 40 if i % 2 else 220, dtype=np.uint8)
            return img, i % 2

    tk.finetune("image-classification", data=Digits(), epochs=1, output_dir=str(tmp_path / "img"), quiet=True,
                **FAST)  # fmt: skip
    pred = tk.load(tmp_path / "img").predict([np.zeros((16, 16, 3), dtype=np.uint8)])[0]
    assert isinstance(pred["label"], int) and set(pred["probs"]) == {0, 1}
    data = sentiment(60)
    data["label"] = [int(v == "pos") for v in data["label"]]
    tk.finetune("text-classification", data=data, backbone=f"hf:{bert_dir}", epochs=1, quiet=True,
                output_dir=str(tmp_path / "txt"))  # fmt: skip
    pred = tk.load(tmp_path / "txt").predict(["a great film"])[0]
    assert isinstance(pred["label"], int) and set(pred["probs"]) == {0, 1}


def test_device_option(data_dir, tmp_path):
    r = tk.finetune("image-classification", data=str(data_dir), epochs=1, device="cpu", quiet=True,
                    output_dir=str(tmp_path / "cpu"), **FAST)  # fmt: skip
    assert next(r.model.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            tk.finetune("image-classification", data=str(data_dir), device="cuda", quiet=True,
                        output_dir=str(tmp_path / "gpu"), **FAST)  # fmt: skip
    with pytest.raises(ConfigError, match="device='tpu'"):
        tk.finetune("image-classification", data=str(data_dir), device="tpu", **FAST)


# --- discovering options ------------------------------------------------------------------------------------------
def test_options_lists_every_option_with_default_and_meaning(capsys):
    from transferkit.config import FinetuneConfig, field_names
    from transferkit.tasks.image_classification import ImageClassificationOptions

    assert main(["options", "image-classification"]) == 0
    out = capsys.readouterr().out
    for name in field_names(FinetuneConfig) + field_names(ImageClassificationOptions):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(f"{name}=")), None)
        assert line is not None, name
        assert len(line.split("  ", 2)[-1].strip()) > 5, line  # a description, not just the default
    assert "lr=0.001  learning rate of the pretrained weights" in out
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "head_lr_mult=1.0" in capsys.readouterr().out
    assert "transferkit options TASK" in tk.finetune.__doc__
    for command, flag in ((["evaluate", "--help"], "--data DATA"), (["list", "--help"], "--task TASK")):
        with pytest.raises(SystemExit):
            main(command)
        text = capsys.readouterr().out
        assert flag in text and "  run_dir" in text if command[0] == "evaluate" else flag in text


def test_finite_losses_after_a_clean_run(data_dir, tmp_path):
    r = tk.finetune("image-classification", data=str(data_dir), epochs=1, output_dir=str(tmp_path), quiet=True,
                    **FAST)  # fmt: skip
    assert all(math.isfinite(v) for v in r.history[0].values())


def test_a_learning_rate_far_from_the_known_range_is_one_warning(bert_dir, tmp_path):
    with pytest.warns(UserWarning, match=r"lr=0.01 is far from the rates that fine-tune pretrained text backbones"):
        tk.finetune("text-classification", data=sentiment(40), backbone=f"hf:{bert_dir}", lr=1e-2, epochs=1,
                    quiet=True, output_dir=str(tmp_path))  # fmt: skip


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(data_dir, tmp_path):
    out = tmp_path / "run"
    tk.finetune("image-classification", data=str(data_dir), epochs=1, output_dir=str(out), quiet=True, **FAST)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(DataError, match="does not exist"):
        tk.finetune("image-classification", data=str(tmp_path / "typo"), overwrite=True, output_dir=str(out), **FAST)
    assert (out / "model.safetensors").read_bytes() == before and tk.load(out).labels == ["blue", "green", "red"]
    assert not (out / ".overwritten").exists()
    tk.finetune("image-classification", data=str(data_dir), epochs=2, overwrite=True, output_dir=str(out),
                quiet=True, **FAST)  # fmt: skip
    assert (
        json.loads((out / "transferkit.json").read_text())["epochs_run"] == 2 and not (out / ".overwritten").exists()
    )


def test_resume_with_nothing_to_resume_says_so(data_dir, tmp_path):
    with pytest.warns(UserWarning, match="holds no run to resume; starting a new run"):
        res = tk.finetune("image-classification", data=str(data_dir), epochs=1, resume=True,
                          output_dir=str(tmp_path / "typo"), quiet=True, **FAST)  # fmt: skip
    assert len(res.history) == 1


def test_loading_a_run_whose_head_is_not_registered_says_how(data_dir, tmp_path):
    out = tmp_path / "custom"
    tk.finetune("image-classification", data=str(data_dir), epochs=1, output_dir=str(out), quiet=True, **FAST)
    meta = json.loads((out / "transferkit.json").read_text())
    meta["config"]["head"] = "bottleneck"  # as if registered with tk.register_head in the training process only
    (out / "transferkit.json").write_text(json.dumps(meta))
    with pytest.raises(
        ConfigError, match=r"head 'bottleneck', which is not registered in this process.*register_head"
    ):
        tk.load(out)
