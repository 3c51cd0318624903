"""Engine depth: every schedule (warmup in steps or a fraction, relative rates kept), the LR range test, EMA, the
average of the best epochs, SGD, BatchNorm policies, trackers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_image_classification import make_folder
from toy import ToyOptions, ToyTask, make_data

import transferkit as tk
from transferkit.config import FinetuneConfig
from transferkit.engine.loop import Trainer
from transferkit.engine.schedules import Schedule, lr_multiplier
from transferkit.errors import ConfigError

FAST = dict(
    backbone="timm:test_resnet", pretrained=False, image_size=32, batch_size=8, lr=3e-3, quiet=True, report=False
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("depth") / "data", per_class=8)


def fit(**cfg):
    cfg.setdefault("quiet", True)
    cfg.setdefault("epochs", 3)
    cfg.setdefault("batch_size", 16)
    config = FinetuneConfig(**cfg)
    task = ToyTask(config, ToyOptions())
    splits = task.prepare_data((make_data(96, seed=0), make_data(48, seed=0)))
    trainer = Trainer(task, task.build_model(), splits, config, cfg.get("output_dir"))
    return trainer, trainer.fit()


# --- schedules --------------------------------------------------------------------------------------------------
def test_schedule_shapes():
    assert [lr_multiplier(s, 10, 0, "step", {"step_epochs": 2}, steps_per_epoch=2) for s in range(0, 10, 2)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        pytest.approx(0.01),
    ]
    assert lr_multiplier(4, 10, 0, "step", {"milestones": [2], "gamma": 0.5}, steps_per_epoch=2) == 0.5
    assert lr_multiplier(5, 10, 0, "polynomial", {"power": 2.0}) == pytest.approx(0.25)
    one = [lr_multiplier(s, 100, 0, "one-cycle") for s in range(100)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0, abs=1e-3) and one[-1] < 1e-3
    assert one.index(max(one)) == 30  # pct_start 0.3
    with pytest.raises(ConfigError, match="do not apply to schedule='cosine'"):
        lr_multiplier(0, 10, 0, "cosine", {"gamma": 0.1})


def test_warmup_in_steps_or_a_fraction_and_relative_rates_kept():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "base_lr": 1.0, "lr": 1.0},
                           {"params": [torch.zeros(1, requires_grad=True)], "base_lr": 0.1, "lr": 0.1}])  # fmt: skip
    for warmup in (4, 0.4):  # 4 steps, or 40 % of 10 steps
        sched = Schedule(opt, 10, 4 if warmup == 4 else round(warmup * 10), "linear")
        seen = []
        for _ in range(10):
            seen.append([g["lr"] for g in opt.param_groups])
            sched.step()
        assert [a for a, _ in seen[:4]] == pytest.approx([0.25, 0.5, 0.75, 1.0])
        assert all(b == pytest.approx(a / 10) for a, b in seen)  # the new layers keep their relative rate


def test_reduce_on_plateau_lowers_all_groups():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    opt.param_groups[0]["base_lr"] = 1.0
    sched = Schedule(opt, 100, 0, "plateau", {"patience": 2, "factor": 0.5}, monitor_mode="max")
    changed = [sched.epoch_end(v) for v in (0.5, 0.6, 0.6, 0.55, 0.6, 0.59)]
    assert changed == [False, False, False, True, False, True]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "step", "polynomial", "one-cycle", "plateau"])
def test_every_schedule_trains_through_the_public_api(schedule, data_dir, tmp_path):
    r = tk.finetune("image-classification", data=str(data_dir), epochs=2, schedule=schedule,
                    output_dir=str(tmp_path), **FAST)  # fmt: skip
    assert len(r.history) == 2 and all(math.isfinite(row["train/loss"]) for row in r.history)


# --- lr="auto" -------------------------------------------------------------------------------------------------
def test_lr_range_test_picks_a_rate_and_leaves_the_run_untouched(tmp_path):
    trainer, out = fit(lr="auto", output_dir=tmp_path)
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1e-6 <= out.lr <= 1e-1 and out.lr == pytest.approx(found["suggestion"])
    assert (tmp_path / "lr_find.png").is_file() and len(found["lrs"]) == len(found["losses"]) >= 5
    # the real run then starts exactly as it would with that rate given by hand
    _, manual = fit(lr=out.lr)
    assert [r["train/loss"] for r in manual.history] == pytest.approx([r["train/loss"] for r in out.history])


# --- weight averaging ---------------------------------------------------------------------------------------------
def test_ema_is_evaluated_and_saved(data_dir, tmp_path):
    plain = tk.finetune("image-classification", data=str(data_dir), epochs=2, output_dir=str(tmp_path / "p"), **FAST)
    ema = tk.finetune("image-classification", data=str(data_dir), epochs=2, ema=0.9, output_dir=str(tmp_path / "e"),
                      **FAST)  # fmt: skip
    assert ema.history[0]["train/loss"] == pytest.approx(plain.history[0]["train/loss"])  # same training
    a = dict(plain.model.named_parameters())["head.fc.weight"]
    b = dict(ema.model.named_parameters())["head.fc.weight"]
    assert not torch.allclose(a, b)  # but the averaged weights are the model


def test_average_of_the_best_epochs_is_kept_only_if_not_worse():
    trainer, out = fit(epochs=4, average_top_k=3)
    assert out.metrics["val"]["accuracy"] >= max(r["val/accuracy"] for r in out.history) - 1e-12
    assert out.best_reason.startswith(("average of the weights of epochs", "best val/accuracy"))


# --- optimizer, BatchNorm -------------------------------------------------------------------------------------------
def test_sgd_with_momentum():
    trainer, out = fit(optimizer="sgd", momentum=0.9, lr=0.05)
    opt = trainer._ctx["inner_opt"]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert out.history[-1]["train/loss"] < out.history[0]["train/loss"]


@pytest.mark.parametrize("policy", ["eval-when-frozen", "train", "frozen"])
def test_batchnorm_policies_on_a_frozen_backbone(policy):
    from torchvision.ops.misc import FrozenBatchNorm2d

    trainer, _ = fit(freeze="backbone", batchnorm=policy, epochs=1)
    bn = trainer.model.backbone.stem[1]  # the toy backbone's BatchNorm1d, frozen with its layer
    moved = not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    # "train": the statistics follow the new data although the weights are frozen; otherwise they stay put
    # ("frozen" converts only BatchNorm2d layers of pretrained weights to FrozenBatchNorm2d; a BatchNorm1d is kept)
    assert moved == (policy == "train")
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in trainer.model.modules())


def test_frozen_batchnorm_policy_on_pretrained_weights(data_dir, tmp_path):
    from safetensors.torch import save_file
    from torchvision.ops.misc import FrozenBatchNorm2d

    src = tk.create_backbone("timm:test_resnet", pretrained=False)
    save_file({k.removeprefix("model."): v for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    options = {**FAST, "pretrained": str(tmp_path / "w.safetensors")}
    r = tk.finetune("image-classification", data=str(data_dir), epochs=1, batchnorm="frozen",
                    output_dir=str(tmp_path / "run"), **options)  # fmt: skip
    assert any(isinstance(m, FrozenBatchNorm2d) for m in r.model.backbone.modules())
    again = tk.load(tmp_path / "run")  # tk.load converts the same layers before loading the weights
    assert any(isinstance(m, FrozenBatchNorm2d) for m in again.model.backbone.modules())


# --- trackers -------------------------------------------------------------------------------------------------------
def test_a_tracker_that_is_not_installed_is_one_clear_error(data_dir, tmp_path):
    pytest.importorskip("accelerate")
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="log_with='tensorboard'"):
        tk.finetune("image-classification", data=str(data_dir), epochs=1, log_with="tensorboard",
                    output_dir=str(tmp_path), **FAST)  # fmt: skip
