"""One contract for every domain: multi-scale views, pretrained-vs-new groups, split steps, metric sync, the config
path (every freeze string, YAML scalars, precedence) and the module boundaries."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_image_classification import make_folder
from torch import nn

import transferkit as tk
from transferkit.backbones import create_backbone
from transferkit.config import FinetuneConfig, coerce, parse_override
from transferkit.engine.optim import ParamGroupPlan
from transferkit.errors import ConfigError

ROOT = Path(tk.__file__).parent
FAST = dict(
    backbone="timm:test_resnet", pretrained=False, image_size=32, batch_size=8, quiet=True, lr=3e-3, report=False
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("contracts") / "data", per_class=8)


# --- multi-scale views -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "reductions"),
    [
        ("timm:test_resnet", [2, 4, 8, 16, 32]),
        ("timm:test_efficientnet", [2, 4, 8, 16, 32]),
        ("tv:resnet18", [2, 4, 8, 16, 32]),
        ("tv:mobilenet_v2", [2, 4, 8, 16, 32]),
    ],
)
def test_multi_scale_view_strides_channels_and_shared_weights(name, reductions):
    bb = create_backbone(name, pretrained=False)
    params = {id(p) for p in bb.parameters()}
    view = bb.features()
    assert view.reductions == reductions
    maps = view(torch.zeros(2, 3, 64, 64))
    assert [m.shape[1] for m in maps] == view.channels
    assert [64 // m.shape[-1] for m in maps] == reductions
    assert all(id(p) in params for p in view.parameters())  # the same tensors, not copies
    groups = view.layer_groups()
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in view.named_parameters()) and len(groups) > 2
    # a subset of levels, e.g. strides 8-32 for a detector
    assert bb.features([2, 3, 4]).reductions == [8, 16, 32] if name.startswith("tv") else True
    with pytest.raises(ConfigError, match="out_indices"):
        bb.features([4, 2])


def test_one_classification_state_dict_initialises_the_view(tmp_path):
    from safetensors.torch import save_file

    src = create_backbone("tv:mobilenet_v2", pretrained=False)
    torch.nn.init.normal_(src.model.features[3].conv[0][0].weight)
    state = {k.removeprefix("model."): v for k, v in src.state_dict().items()}
    state["classifier.1.weight"], state["classifier.1.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    save_file(state, str(tmp_path / "mobilenet_v2.safetensors"))
    view = create_backbone("tv:mobilenet_v2", pretrained=str(tmp_path / "mobilenet_v2.safetensors")).features()
    w = dict(view.named_parameters())["model.features.3.conv.0.0.weight"]
    torch.testing.assert_close(w, src.model.features[3].conv[0][0].weight)


def test_text_backbones_have_no_multi_scale_view(tmp_path):
    from text_toys import corpus, tiny_bert_folder

    bb = create_backbone(f"hf:{tiny_bert_folder(tmp_path / 'bert', corpus(100))}")
    with pytest.raises(ConfigError, match="no multi-scale view"):
        bb.features()


# --- pretrained vs new ---------------------------------------------------------------------------------------------
class WithNeck(nn.Module):
    """A dense-style model: a pretrained body, a neck (like an FPN) and a head; only the body is pretrained."""

    is_pretrained = True

    def __init__(self) -> None:
        super().__init__()
        self.body = create_backbone("timm:test_resnet", pretrained=False).features([2, 3, 4])
        self.neck = nn.ModuleList(nn.Conv2d(c, 16, 1) for c in self.body.channels)
        self.head = nn.Conv2d(16, 3, 1)

    def layer_groups(self):
        return [[f"body.{n}" for n in g] for g in self.body.layer_groups()]

    def forward(self, x):
        return [self.head(n(f)) for n, f in zip(self.neck, self.body(x))]


def test_neck_is_new_not_frozen_with_the_body_and_not_at_the_body_lr():
    model = WithNeck()
    plan = ParamGroupPlan(model, FinetuneConfig(lr=1e-4, head_lr_mult=10.0, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in plan.groups(plan.order(plan.num_groups)) for p in g["params"]}
    for name, p in model.named_parameters():
        if name.startswith(("neck.", "head.")):
            assert lr_of[id(p)] == pytest.approx(1e-3), name
        else:
            assert lr_of[id(p)] <= 1e-4 + 1e-12, name
    plan.set_trainable(0)  # freeze="backbone": the body freezes, the neck trains
    assert all(p.requires_grad == (not n.startswith("body.")) for n, p in model.named_parameters())


def test_random_init_trains_everything_at_lr():
    model = tk.create_model("timm:test_resnet", num_classes=3, pretrained=False)
    plan = ParamGroupPlan(model, FinetuneConfig(lr=1e-3, head_lr_mult=10.0))
    assert {g["lr"] for g in plan.groups(plan.order(plan.num_groups))} == {1e-3}


# --- split steps, metrics -----------------------------------------------------------------------------------------
def test_named_losses_are_logged_and_summed(tmp_path):
    from toy import ToyOptions, ToyTask, make_data

    class TwoLosses(ToyTask):
        def train_step(self, model, batch):
            x, y = batch
            logits = model(x)
            return {"loss_ce": torch.nn.functional.cross_entropy(logits, y), "loss_l2": 1e-3 * logits.pow(2).mean()}

        def eval_step(self, model, batch):
            x, y = batch
            return None, (model(x).argmax(1), y)  # no validation loss: none is reported

    from transferkit.engine.loop import Trainer

    config = FinetuneConfig(quiet=True, epochs=2, batch_size=16)
    task = TwoLosses(config, ToyOptions())
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
    out = Trainer(task, task.build_model(), splits, config, None).fit()
    row = out.history[0]
    assert row["train/loss"] == pytest.approx(row["train/loss_ce"] + row["train/loss_l2"], rel=1e-5)
    assert "val/loss" not in row and "val/accuracy" in row
    assert "loss" not in out.metrics["test"]


def test_evaluation_loss_is_a_mean_over_samples(data_dir, tmp_path):
    tk.finetune("image-classification", data=str(data_dir), epochs=1, output_dir=str(tmp_path / "r"), **FAST)
    losses = [tk.evaluate(tmp_path / "r", data=str(data_dir), batch_size=bs)["loss"] for bs in (64, 7, 2)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and losses[0] == pytest.approx(losses[2], rel=1e-5)


def test_metrics_sync_with_a_fake_two_process_accelerator():
    from transferkit.metrics.classification import ClassificationMetrics

    class TwoProcesses:
        num_processes, device = 2, torch.device("cpu")

        def reduce(self, t, op):
            return t * 2  # the other process saw the same counts

    m = ClassificationMetrics(2)
    m.update((torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])))
    m.sync(TwoProcesses())
    assert int(m.confusion.sum()) == 6 and m.compute()["accuracy"] == pytest.approx(2 / 3)


TWO_PROCESS_EVAL = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import transferkit as tk
    data, out = sys.argv[1:3]
    r = tk.finetune("image-classification", data={"train": data, "test": data}, backbone="timm:test_resnet",
                    pretrained=False, image_size=32, epochs=1, batch_size=4, eval_batch_size=3, quiet=True,
                    output_dir=out, lr=3e-3)
    if os.environ["RANK"] == "0":
        json.dump(r.metrics["test"], open(os.path.join(os.path.dirname(out), "dist_test.json"), "w"))
    """
)


@pytest.mark.slow
def test_two_process_metrics_equal_single_process_metrics(tmp_path):
    data = make_folder(tmp_path / "data", per_class=7)  # 21 images: shards of unequal size, no padding
    script = tmp_path / "run.py"
    script.write_text(TWO_PROCESS_EVAL)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(data)]
    proc = subprocess.run([*cmd, str(tmp_path / "run")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    distributed = json.loads((tmp_path / "dist_test.json").read_text())
    single = tk.evaluate(tmp_path / "run", data=str(data), batch_size=5)
    assert distributed["accuracy"] == pytest.approx(single["accuracy"])
    assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-5)


# --- the config path ------------------------------------------------------------------------------------------
FREEZE = ["none", "backbone", "backbone-then-unfreeze", "gradual", "top-1", "top-2"]


@pytest.mark.parametrize("freeze", FREEZE)
def test_every_freeze_string_through_python_cli_and_yaml(freeze, data_dir, tmp_path, capsys):
    from transferkit.cli import main

    common = dict(FAST, epochs=2, freeze=freeze)
    r = tk.finetune("image-classification", data=str(data_dir), output_dir=str(tmp_path / "py"), **common)
    assert len(r.history) == 2
    args = ["finetune", "image-classification", "--data", str(data_dir), "--output-dir", str(tmp_path / "cli")]
    args += [f"{k}={v}" for k, v in {**common, "pretrained": "false", "quiet": "true"}.items()]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(f"freeze: {freeze}\nepochs: 1\n")
    cfg, _, _ = resolve("image-classification", str(yaml_file), {})
    assert cfg.freeze == freeze


def resolve(task, config, options):
    from transferkit.config import resolve_options
    from transferkit.tasks import get_task

    return resolve_options(get_task(task), config, options)


def test_unknown_freeze_strings_are_rejected_with_the_vocabulary():
    with pytest.raises(ConfigError, match="'top-N'"):
        FinetuneConfig(freeze="top_2")


def test_a_negative_num_workers_is_a_config_error_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"num_workers=-1 is invalid; expected an integer >= 0"):
        tk.finetune("image-classification", data=str(tmp_path), backbone="timm:test_resnet", num_workers=-1)


def test_yaml_and_command_line_scalars_are_typed(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("lr: 3e-4\nepochs: 4\nbetas: [0.9, 0.98]\nquiet: yes\nwarmup: 0\n")  # PyYAML: '3e-4' is a str
    cfg, _, _ = resolve("image-classification", str(yaml_file), {})
    assert (cfg.lr, cfg.epochs, cfg.betas, cfg.quiet) == (3e-4, 4, (0.9, 0.98), True)
    key, value = parse_override("lr=1e-3")
    assert coerce(FinetuneConfig, {key: value}) == {"lr": 1e-3}
    with pytest.raises(ConfigError, match=r"epochs='many' is invalid; expected an integer"):
        coerce(FinetuneConfig, {"epochs": "many"})
    with pytest.raises(ConfigError, match=r"image_size"):
        tk.finetune("image-classification", data=str(tmp_path), backbone="timm:test_resnet", image_size="big")


def test_config_precedence_yaml_then_keywords(data_dir, tmp_path):
    yaml_file = tmp_path / "c.yaml"
    out = tmp_path / "from-yaml"
    yaml_file.write_text(
        f"task: image-classification\ndata: {data_dir}\nbackbone: timm:test_resnet\npretrained: false\n"
        f"output_dir: {out}\nepochs: 3\nimage_size: 32\nbatch_size: 8\nquiet: true\n"
    )
    r = tk.finetune(config=str(yaml_file), epochs=1)  # keyword beats YAML; pretrained/output_dir from the YAML
    assert len(r.history) == 1 and r.output_dir == str(out)
    meta = json.loads((out / "transferkit.json").read_text())
    assert meta["config"]["pretrained"] is False and meta["config"]["epochs"] == 1


def test_cli_config_supplies_task_and_data(data_dir, tmp_path, capsys):
    from transferkit.cli import main

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        f"task: image-classification\ndata: {data_dir}\nbackbone: timm:test_resnet\npretrained: false\n"
        f"output_dir: {tmp_path / 'cli'}\nepochs: 3\nimage_size: 32\nquiet: true\n"
    )
    assert main(["finetune", "--config", str(yaml_file), "epochs=1", "lr=1e-3"]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_dir"] == str(tmp_path / "cli")
    assert json.loads((tmp_path / "cli" / "transferkit.json").read_text())["config"]["lr"] == 1e-3


def test_registered_custom_head_loads_in_a_fresh_process(data_dir, tmp_path):
    module = tmp_path / "myheads.py"
    module.write_text(
        textwrap.dedent(
            """
            import transferkit as tk
            from torch import nn

            @tk.register_head("bottleneck-test")
            def bottleneck(backbone, num_classes, hidden=16):
                layers = [nn.Linear(backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
                return nn.Sequential(*layers)
            """
        )
    )
    train = textwrap.dedent(
        f"""
        import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(tmp_path)!r})
        import myheads, transferkit as tk
        tk.finetune("image-classification", data={str(data_dir)!r}, backbone="timm:test_resnet", pretrained=False,
                    image_size=32, epochs=1, quiet=True, head="bottleneck-test", head_kwargs={{"hidden": 8}},
                    output_dir={str(tmp_path / "run")!r})
        """
    )
    predict = textwrap.dedent(
        f"""
        import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(tmp_path)!r})
        import myheads, transferkit as tk
        p = tk.load({str(tmp_path / "run")!r})
        print(p.model.head[0].out_features, p.predict([{str(next(data_dir.rglob("*.png")))!r}])[0]["label"])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for code in (train, predict):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    hidden, label = proc.stdout.split()
    assert hidden == "8" and label in {"red", "green", "blue"}


# --- module boundaries ------------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(("." * node.level) + node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("engine", ("tasks", "backbones", "heads", "data")),
        ("metrics", ("tasks",)),
        ("backbones", ("data.images", "data.text", "data.masks", "data.coco", "tasks")),
    ],
)
def test_module_boundaries(folder, forbidden):
    for path in (ROOT / folder).glob("*.py"):
        for name in _imports(path):
            stripped = name.lstrip(".")
            assert not any(stripped == f or stripped.startswith(f + ".") for f in forbidden), f"{path.name}: {name}"


def test_a_callback_stop_request_stops_the_run(data_dir, tmp_path):
    class StopAfterFirst(tk.Callback):
        def on_epoch_end(self, state, control, logs):
            control.should_stop = True

        def state_dict(self):
            return {"seen": 1}

    r = tk.finetune("image-classification", data=str(data_dir), epochs=4, output_dir=str(tmp_path / "r"),
                    callbacks=(StopAfterFirst(),), **FAST)  # fmt: skip
    assert len(r.history) == 1 and r.stopped_early
    from transferkit.engine.checkpoint import list_checkpoints, read_json

    state = read_json(list_checkpoints(tmp_path / "r" / "checkpoints")[0] / "state.json")
    assert state["callbacks"]["StopAfterFirst"] == {"seen": 1}  # saved by name, not by position
