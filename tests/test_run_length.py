"""batch_size="auto" / epochs="auto": the run length from the training-set size, through every entry point."""

from __future__ import annotations

import doctest
import json

import pytest
from test_image_classification import make_folder

import transferkit as tk
from transferkit.cli import main
from transferkit.engine import run_length
from transferkit.engine.run_length import auto_batch_size, auto_epochs, resolve_run_length
from transferkit.errors import ConfigError
from transferkit.tasks import get_task


def test_doctests():
    assert doctest.testmod(run_length).failed == 0


@pytest.mark.parametrize(
    ("n", "batch", "epochs"),
    [
        (50, 8, 84),  # 6 steps an epoch: 84 epochs reach 500 steps
        (200, 8, 20),  # 25 steps an epoch
        (400, 16, 20),
        (639, 16, 13),  # 39 steps an epoch
        (640, 32, 25),  # 20 steps an epoch
        (100_000, 32, 10),  # 3,125 steps an epoch: the 10-epoch floor
        (3, 8, 100),  # fewer images than a batch: one step an epoch, capped at 100 epochs
    ],
)
def test_image_classification_run_length(n, batch, epochs):
    task = get_task("image-classification")
    assert auto_batch_size(n, task.auto_batch_bounds) == batch
    assert auto_epochs(n, batch, min_steps=task.min_steps, min_epochs=task.min_epochs) == epochs


def test_text_classification_run_length():
    task = get_task("text-classification")
    batch = auto_batch_size(300, task.auto_batch_bounds)
    assert (batch, auto_epochs(300, batch, min_steps=task.min_steps, min_epochs=task.min_epochs)) == (16, 6)


def test_numbers_given_are_kept_and_accumulation_counts():
    task = get_task("image-classification")
    cfg = tk.FinetuneConfig(batch_size=4, epochs=2)
    assert resolve_run_length(cfg, task, 1000) is cfg
    # the user's batch with an automatic length: 1000 // 4 = 250 batches, 125 optimizer steps an epoch
    cfg = tk.FinetuneConfig(batch_size=4, epochs="auto", grad_accum_steps=2)
    assert resolve_run_length(cfg, task, 1000).epochs == 10
    cfg = tk.FinetuneConfig(batch_size=64, epochs="auto", grad_accum_steps=4)
    assert resolve_run_length(cfg, task, 1000).epochs == 100  # 15 batches -> 4 steps an epoch: 125, capped
    # batch_size is per process: two processes see half the data each
    assert resolve_run_length(tk.FinetuneConfig(batch_size="auto"), task, 700, num_processes=2).batch_size == 16


def test_defaults_resolve_in_the_run_and_are_recorded(tmp_path):
    data = make_folder(tmp_path / "data", per_class=12)  # 36 images, 4 held out for val: 32 train
    res = tk.finetune(
        "image-classification",
        data=str(data),
        backbone="timm:test_resnet",
        pretrained=False,
        image_size=32,
        quiet=True,
        save_checkpoints=False,
        report=False,
        max_steps=3,
        output_dir=str(tmp_path / "run"),
    )
    config = json.loads((tmp_path / "run" / "transferkit.json").read_text())["config"]
    n_train = 36 - round(36 * 0.1)
    assert config["batch_size"] == 8
    assert config["epochs"] == auto_epochs(n_train, 8, min_steps=500, min_epochs=10)
    assert len(res.history) >= 1


@pytest.mark.parametrize("via", ["python", "yaml", "cli"])
def test_explicit_values_and_auto_in_every_form(tmp_path, via):
    data = make_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    common = {"backbone": "timm:test_resnet", "pretrained": False, "image_size": 32, "quiet": True, "report": False}
    if via == "python":
        tk.finetune("image-classification", data=str(data), output_dir=str(out), batch_size="auto", epochs=2, **common)
    elif via == "yaml":
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            "task: image-classification\nbackbone: timm:test_resnet\npretrained: false\nimage_size: 32\n"
            "quiet: true\nreport: false\nbatch_size: auto\nepochs: 2\n"
        )
        tk.finetune(data=str(data), config=str(cfg), output_dir=str(out))
    else:
        argv = ["finetune", "image-classification", "--data", str(data), "--output-dir", str(out)]
        argv += [f"{k}={v}" for k, v in common.items()] + ["batch_size=auto", "epochs=2"]
        assert main(argv) == 0
    config = json.loads((out / "transferkit.json").read_text())["config"]
    assert (config["batch_size"], config["epochs"]) == (8, 2)


def test_bad_values_say_what_is_expected(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=3)
    with pytest.raises(ConfigError, match=r"epochs='many' is invalid; expected an integer or 'auto'"):
        tk.finetune("image-classification", data=str(data), backbone="timm:test_resnet", epochs="many")
    with pytest.raises(ConfigError, match=r"batch_size=0 is invalid; expected an integer >= 1, or 'auto'"):
        tk.finetune("image-classification", data=str(data), backbone="timm:test_resnet", batch_size=0)
    code = main(["finetune", "image-classification", "--data", str(data), "--backbone", "timm:test_resnet",
                 "batch_size=autp"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size='autp' is invalid" in err[0]


def test_resume_keeps_the_batch_auto_chose(tmp_path):
    data = make_folder(tmp_path / "data", per_class=12)
    opts = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, quiet=True, report=False,
                output_dir=str(tmp_path / "run"))  # fmt: skip
    tk.finetune("image-classification", data=str(data), epochs=1, **opts)  # batch_size "auto" -> 8
    saved = json.loads((tmp_path / "run" / "transferkit.json").read_text())
    assert saved["fingerprint"]["batch_size"] == saved["config"]["batch_size"] == 8
    res = tk.finetune("image-classification", data=str(data), epochs=2, resume=True, **opts)
    assert len(res.history) == 2
    # the number auto chose is the same run; another number is not
    res = tk.finetune("image-classification", data=str(data), epochs=3, resume=True, batch_size=8, **opts)
    assert len(res.history) == 3
    with pytest.raises(ConfigError, match=r"batch_size: 8 -> 16"):
        tk.finetune("image-classification", data=str(data), epochs=4, resume=True, batch_size=16, **opts)


def test_auto_is_refused_where_it_was_not_measured(tmp_path):
    cfg = tk.FinetuneConfig(batch_size="auto")
    with pytest.raises(ConfigError, match=r"batch_size='auto'.*image and text classification only.*batch_size=8"):
        resolve_run_length(cfg, get_task("semantic-segmentation"), 100)


def test_bools_are_not_numbers():
    for bad in (True, 2.5):
        with pytest.raises(ConfigError, match="an integer >= 1, or 'auto'"):
            tk.FinetuneConfig(epochs=bad)


def test_resume_without_numbers_keeps_the_runs_own(tmp_path):
    data = make_folder(tmp_path / "data", per_class=12)
    opts = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, quiet=True, report=False,
                output_dir=str(tmp_path / "run"))  # fmt: skip
    tk.finetune("image-classification", data=str(data), epochs=2, batch_size=16, **opts)
    # "auto" on resume means the run's numbers: batch 16 is not refused, and 2 epochs are done
    with pytest.raises(ConfigError, match="finished after 2 epoch"):
        tk.finetune("image-classification", data=str(data), resume=True, **opts)
    res = tk.finetune("image-classification", data=str(data), resume=True, epochs=3, **opts)
    assert len(res.history) == 3
    assert json.loads((tmp_path / "run" / "transferkit.json").read_text())["config"]["batch_size"] == 16
