"""Every recipe runs as a script with tiny overrides, and every recipe config holds only valid options."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_readme import _write_data
from text_toys import corpus

import transferkit as tk
from transferkit.config import resolve_options
from transferkit.errors import ConfigError
from transferkit.tasks import get_task

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONFIGS = sorted((RECIPES / "configs").rglob("*.yaml"))


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_config_holds_valid_options(path):
    config = yaml.safe_load(path.read_text())
    sections = [config["pretrain"], config["finetune"]] if "pretrain" in config else [config]
    for section in sections:
        resolve_options(get_task(section["task"]), section, {})  # types checked, unknown keys refused
    assert (RECIPES / f"{path.parent.name}.py").is_file()


def test_recipes_readme_lists_every_recipe_and_config():
    text = (RECIPES / "README.md").read_text()
    for path in CONFIGS:
        assert f"configs/{path.parent.name}/{path.name}" in text, path
    for script in RECIPES.glob("*.py"):
        assert f"recipes/{script.name}" in text, script


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    _write_data(root)
    return root / "data"


TINY_BERT = "{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"
FAST = ["pretrained=false", "quiet=true", "report=false"]
CASES = {
    "image_classification": lambda d, o: [f"data={d / 'pets'}", "backbone=timm:test_resnet", "image_size=32",
                                          "epochs=1", "num_workers=0", f"output_dir={o}", *FAST],
    "semantic_segmentation": lambda d, o: [f"data={d / 'roads'}", "backbone=timm:test_resnet", "image_size=64",
                                           "epochs=1", "batch_size=4", f"output_dir={o}", *FAST],
    "object_detection": lambda d, o: [f"data={d / 'peds'}", "backbone=timm:test_resnet", "epochs=1",
                                      "batch_size=2", "max_steps=2", f"output_dir={o}", *FAST],
    "pretrain_mlm": lambda d, o: [f"data={d / 'corpus.txt'}", f"model_config={TINY_BERT}", "vocab_size=300",
                                  "max_length=32", "epochs=1", f"output_dir={o}", "quiet=true", "report=false"],
}  # fmt: skip


@pytest.mark.parametrize("name", ["image_classification", "semantic_segmentation", "object_detection",
                                  "pretrain_mlm"])  # fmt: skip
def test_recipe_runs_with_tiny_overrides(name, data, tmp_path, capsys):
    result = _recipe(name).main(CASES[name](data, tmp_path / "run"))
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_dir"] == str(tmp_path / "run") == result.output_dir
    assert printed["metrics"] and (tmp_path / "run" / "model.safetensors").is_file()


def test_text_recipe_and_the_pipeline_recipe(data, tmp_path, capsys):
    from text_toys import tiny_bert_folder

    bert = tiny_bert_folder(tmp_path / "bert", corpus(200))
    args = [f"data={data / 'reviews'}", f"backbone=hf:{bert}", "epochs=1", "max_length=32"]
    _recipe("text_classification").main([*args, f"output_dir={tmp_path / 'cls'}", "quiet=true", "report=false"])
    assert set(json.loads(capsys.readouterr().out)["metrics"]["test"]) >= {"accuracy", "f1_macro"}
    pre, fine = _recipe("pretrain_then_finetune").main([
        f"pretrain.data={data / 'corpus.txt'}", f"pretrain.output_dir={tmp_path / 'mlm'}",
        f"pretrain.model_config={TINY_BERT}", "pretrain.vocab_size=300", "pretrain.max_length=32",
        "pretrain.epochs=1", "pretrain.quiet=true", "pretrain.report=false",
        f"finetune.data={data / 'reviews'}", f"finetune.output_dir={tmp_path / 'cls2'}", "finetune.epochs=1",
        "finetune.quiet=true", "finetune.report=false", "finetune.max_length=32",
    ])  # fmt: skip
    assert tk.load(fine.output_dir).task.config.backbone.endswith(str(tmp_path / "cls2" / "backbone"))
    meta = json.loads((tmp_path / "cls2" / "transferkit.json").read_text())
    assert meta["config"]["backbone"] == f"hf:{tmp_path / 'mlm'}"  # fine-tuned from the pretraining run


def test_a_recipe_with_an_unknown_key_is_one_line_suggesting_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _recipe("image_classification").main(["epochz=1", f"output_dir={tmp_path}"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown option(s): 'epochz' (did you mean epochs") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        _recipe("pretrain_then_finetune").main(["epochs=1"])
    assert "must name its section: pretrain.epochs=" in capsys.readouterr().err


def test_a_recipe_runs_as_a_script(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(RECIPES / "image_classification.py"), *CASES["image_classification"](data, tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["output_dir"] == str(tmp_path)


def test_recipe_config_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image-classification\nlr: fast\n")
    with pytest.raises(ConfigError, match="lr='fast' is invalid"):
        resolve_options(get_task("image-classification"), str(bad), {})
