"""channels_last: NHWC weights for image classification and segmentation, through Python, the CLI and YAML."""

from __future__ import annotations

import json

import pytest
import torch
from test_image_classification import make_folder
from torch import nn

import transferkit as tk
from transferkit.cli import main
from transferkit.engine.memory_format import apply_channels_last, match_state_layout, wants_channels_last
from transferkit.errors import ConfigError
from transferkit.tasks.image_classification import ImageClassificationTask
from transferkit.tasks.object_detection import ObjectDetectionTask
from transferkit.tasks.semantic_segmentation import SemanticSegmentationTask
from transferkit.tasks.text_classification import TextClassificationTask

CL = torch.channels_last


def _conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]


def _run(tmp_path, name: str, **kw):
    data = make_folder(tmp_path / "data", per_class=6)
    opts = dict(pretrained=False, epochs=1, image_size=32, quiet=True, save_checkpoints=False, report=False)
    res = tk.finetune("image-classification", data=str(data), backbone="timm:test_resnet",
                      output_dir=str(tmp_path / name), **{**opts, **kw})  # fmt: skip
    return data, res


def test_auto_trains_an_image_classifier_in_nhwc_and_its_weights_load_back(tmp_path):
    data, res = _run(tmp_path, "r")
    convs = _conv_weights(res.model)
    assert convs and all(w.is_contiguous(memory_format=CL) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # really NHWC, not a layout both formats share
    predictor = tk.load(res.output_dir)  # model.safetensors was written from NHWC weights
    x = torch.rand(2, 3, 32, 32)
    res.model.eval()
    with torch.no_grad():
        want = res.model.cpu()(x)
        got = predictor.model.cpu()(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    img = next(data.rglob("*.png"))
    assert predictor.predict([str(img)])[0]["label"] in {"red", "green", "blue"}


def test_false_keeps_nchw_and_the_summary_says_which(tmp_path, capsys):
    _, res = _run(tmp_path, "off", channels_last=False, quiet=False)
    assert all(w.is_contiguous() for w in _conv_weights(res.model))
    err = capsys.readouterr().err
    assert "precision no, 1 process(es)" in err and "channels-last" not in err


def test_cli_and_yaml_take_the_option(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=6)
    common = ["--data", str(data), "--backbone", "timm:test_resnet", "pretrained=false", "epochs=1",
              "image_size=32", "save_checkpoints=false", "report=false"]  # fmt: skip
    code = main(["finetune", "image-classification", "--output-dir", str(tmp_path / "cli"), *common,
                 "channels_last=false"])  # fmt: skip
    assert code == 0
    assert "channels-last" not in capsys.readouterr().err
    assert json.loads((tmp_path / "cli" / "transferkit.json").read_text())["config"]["channels_last"] is False
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: image-classification\nchannels_last: auto\n")
    assert main(["finetune", "--config", str(cfg), "--output-dir", str(tmp_path / "yaml"), *common]) == 0
    assert "precision no, channels-last, 1 process(es)" in capsys.readouterr().err
    cfg.write_text("task: image-classification\nchannels_last: true\n")
    assert main(["finetune", "--config", str(cfg), "--output-dir", str(tmp_path / "yaml2"), *common]) == 0
    assert json.loads((tmp_path / "yaml2" / "transferkit.json").read_text())["config"]["channels_last"] is True


@pytest.mark.parametrize("value", ["fast", 1, "nhwc"])
def test_a_wrong_value_is_one_clear_error(tmp_path, capsys, value):
    data = make_folder(tmp_path / "data", per_class=2)
    with pytest.raises(ConfigError, match=r"channels_last=.* is invalid; expected"):
        tk.finetune("image-classification", data=str(data), backbone="timm:test_resnet", channels_last=value)
    code = main(["finetune", "image-classification", "--data", str(data), "--backbone", "timm:test_resnet",
                 f"channels_last={value}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "channels_last" in err[0]


def test_auto_follows_the_task_and_leaves_models_without_convs_alone():
    assert wants_channels_last("auto", ImageClassificationTask)
    assert wants_channels_last("auto", SemanticSegmentationTask)
    assert not wants_channels_last("auto", ObjectDetectionTask)  # torchvision detectors keep NCHW
    assert not wants_channels_last("auto", TextClassificationTask)
    assert wants_channels_last(True, ObjectDetectionTask) and not wants_channels_last(False, ImageClassificationTask)
    mlp = nn.Sequential(nn.Linear(4, 4))
    assert apply_channels_last(mlp, True, None) is False
    conv = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert apply_channels_last(conv, True, None) and conv[0].weight.is_contiguous(memory_format=CL)


def test_a_resumed_optimizer_gets_its_parameters_layout():
    conv = nn.Conv2d(3, 4, 3).to(memory_format=CL)
    opt = torch.optim.AdamW(conv.parameters(), lr=1e-3)
    conv(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    saved = {k: {n: t.contiguous() if torch.is_tensor(t) else t for n, t in v.items()}
             for k, v in opt.state_dict()["state"].items()}  # fmt: skip
    fresh = torch.optim.AdamW(conv.parameters(), lr=1e-3)
    fresh.load_state_dict({"state": saved, "param_groups": opt.state_dict()["param_groups"]})
    assert not fresh.state[conv.weight]["exp_avg"].is_contiguous(memory_format=CL)
    match_state_layout(fresh)
    for name in ("exp_avg", "exp_avg_sq"):
        moved = fresh.state[conv.weight][name]
        assert moved.stride() == conv.weight.stride()
        torch.testing.assert_close(moved, opt.state[conv.weight][name], rtol=0, atol=0)
    assert fresh.state[conv.weight]["step"].shape == ()  # scalars untouched
