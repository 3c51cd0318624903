"""The engine on a toy task: param groups, freezing, schedules, early stopping, best restore, resume."""

from __future__ import annotations

import math

import pytest
import torch
from toy import ToyOptions, ToyTask, make_data

from transferkit.config import FinetuneConfig
from transferkit.engine.callbacks import Callback
from transferkit.engine.loop import Trainer
from transferkit.engine.optim import ParamGroupPlan
from transferkit.engine.schedules import lr_multiplier
from transferkit.errors import ConfigError


def run(tmp_path=None, options=None, **cfg):
    cfg.setdefault("quiet", True)
    cfg.setdefault("epochs", 3)
    cfg.setdefault("batch_size", 16)
    config = FinetuneConfig(**cfg)
    task = ToyTask(config, options or ToyOptions())
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
    model = task.build_model()
    trainer = Trainer(task, model, splits, config, tmp_path)
    return trainer, trainer.fit()


def test_param_groups_layer_decay_and_no_weight_decay():
    config = FinetuneConfig(lr=0.5, head_lr_mult=2.0, layer_decay=0.1, weight_decay=0.05)
    model = ToyTask(config).build_model()
    plan = ParamGroupPlan(model, config)
    assert plan.num_groups == 3
    groups = plan.groups(plan.order(3))
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs[("head", 0.05)] == 1.0  # new: lr * head_lr_mult
    assert math.isclose(lrs[("backbone.2", 0.05)], 0.5)  # top pretrained group: lr
    assert math.isclose(lrs[("backbone.1", 0.05)], 0.05)  # one further down: x 0.1
    assert math.isclose(lrs[("backbone.0", 0.05)], 0.005)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        is_no_decay = name.endswith("bias") or "stem.1." in name  # stem.1 is the BatchNorm
        assert (id(p) in no_decay) == is_no_decay, name


def test_frozen_backbone_is_bit_identical_and_not_in_optimizer(tmp_path):
    config = FinetuneConfig(freeze="backbone", quiet=True, epochs=2, batch_size=16)
    task = ToyTask(config, ToyOptions())
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(task, model, splits, config, None)
    trainer.fit()
    after = trainer.model.state_dict()
    for k, v in before.items():
        if k.startswith("backbone."):  # weights *and* BatchNorm running stats
            assert torch.equal(v, after[k]), k
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_backbone_then_unfreeze_adds_groups_and_trains_backbone(tmp_path):
    seen = []

    class Spy(Callback):
        def on_epoch_start(self, state, control):
            seen.append(trainer_ref[0].model.backbone.stem[0].weight.requires_grad)

    trainer_ref = []
    config = FinetuneConfig(
        freeze="backbone-then-unfreeze",
        unfreeze_epoch=1,
        quiet=True,
        epochs=3,
        restore_best=False,
        batch_size=16,
        callbacks=(Spy(),),
    )
    task = ToyTask(config, ToyOptions())
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=1)))
    model = task.build_model()
    stem_before = model.backbone.stem[0].weight.detach().clone()
    trainer = Trainer(task, model, splits, config, None)
    trainer_ref.append(trainer)
    trainer.fit()
    assert seen == [False, True, True]
    assert not torch.equal(stem_before, trainer.model.backbone.stem[0].weight)


def test_unknown_freeze_strategy():
    with pytest.raises(ConfigError, match="freeze"):
        FinetuneConfig(freeze="sometimes")


def test_schedule_warmup_then_cosine():
    assert lr_multiplier(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_multiplier(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_multiplier(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_multiplier(99, 100, 10, "constant") == 1.0


def test_early_stopping_stops_at_expected_epoch_and_restores_best(tmp_path):
    # val accuracy per epoch: best at epoch 2, then 2 epochs without improvement -> stop after epoch 4
    seq = (0.5, 0.8, 0.7, 0.75, 0.9, 0.95)
    trainer, out = run(tmp_path, ToyOptions(metric_sequence=seq + (0.123,)), epochs=6, early_stopping={"patience": 2})
    assert [row["epoch"] for row in out.history] == [1, 2, 3, 4]
    assert out.stopped_early and out.best_epoch == 1
    assert out.metrics["val"]["accuracy"] == 0.8
    from safetensors.torch import load_file

    best = load_file(out.best_checkpoint)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert (tmp_path / "history.csv").read_text().count("\n") == 5


def test_monitor_must_exist():
    with pytest.raises(ConfigError, match="not among the logged metrics"):
        run(None, monitor="val/nonexistent", epochs=1)


class Crash(Callback):
    def on_epoch_start(self, state, control):
        if state.epoch == 2:
            raise KeyboardInterrupt


def test_resume_matches_uninterrupted_run(tmp_path):
    _, full = run(tmp_path / "a", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", epochs=4, callbacks=(Crash(),))
    trainer, resumed = run(tmp_path / "b", epochs=4, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    a, b = full.history[-1], resumed.history[-1]
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    assert a["val/accuracy"] == pytest.approx(b["val/accuracy"])


class StepCounter(Callback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, state, control, loss):
        self.steps += 1


def test_gradient_accumulation_counts_optimizer_steps():
    plain, accum = StepCounter(), StepCounter()
    run(None, epochs=1, batch_size=16, callbacks=(plain,))  # 96 samples -> 6 batches
    run(None, epochs=1, batch_size=16, grad_accum_steps=4, callbacks=(accum,))  # 6 batches -> 2 steps
    assert (plain.steps, accum.steps) == (6, 2)


def test_bf16_mixed_precision_trains_on_cpu():
    _, out = run(None, epochs=2, mixed_precision="bf16")
    assert all(math.isfinite(row["train/loss"]) for row in out.history)
    assert out.history[-1]["train/loss"] < out.history[0]["train/loss"]


def test_fp16_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ConfigError, match="fp16"):
        run(None, epochs=1, mixed_precision="fp16")
