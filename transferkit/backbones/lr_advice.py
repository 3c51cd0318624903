"""Is a fine-tuning learning rate far outside what is known to work for the backbone's family?

A one-line warning for the user, not a rule: rates a little outside the band can be right for unusual data; rates
far outside it (``FAR`` times beyond either end) almost never are. ``lr`` is the rate of the pretrained weights, the
new head trains at ``lr * head_lr_mult`` (AdamW, full fine-tuning).

Bands (AdamW, full fine-tune of a pretrained backbone plus a new linear head):

- ``cnn`` (BatchNorm convnets: ResNet, EfficientNet, MobileNet, ConvNeXt-style nets from timm/torchvision): measured
  on ImageNet EfficientNet-Lite0 -> MNIST / 8x8 digits, 20 labels per class, 250 steps (benchmarks/efficacy_grids.py):
  test accuracy 0.932 / 0.956 at 1e-3, 0.935 / 0.948 at 3e-3, 0.857 / 0.897 at 3e-4: the band is 3e-4 .. 3e-3.
- ``vision-transformer`` (attention-based image backbones): the usual 1e-5 .. 1e-3 (DeiT / BEiT / timm recipes;
  not measured here).
- ``text-encoder`` (BERT-family encoders, ``hf:``): measured on MiniLM-L6 -> 300 tweets, 108 steps: 0.654 at 2e-5,
  0.681 at 5e-5, 0.659 at 2e-4; the usual range of BERT fine-tuning starts at 1e-5: the band is 1e-5 .. 2e-4.
- the head (``lr * head_lr_mult``): measured 1e-3 .. 3e-3 (vision) and 2.5e-4 .. 1e-3 (text) work, 1e-2 loses 2-3
  points on the digits: the band is 1e-4 .. 1e-2.

Example:
    >>> rate_warning("text-encoder", lr=1e-2, head_lr_mult=20)  # doctest: +ELLIPSIS
    'lr=0.01 is far above the rates known to work for fine-tuning a text encoder (about 1e-05 to 0.0002 ...'
    >>> rate_warning("cnn", lr=1e-3, head_lr_mult=1) is None
    True
"""

from __future__ import annotations

from torch import nn

BANDS: dict[str, tuple[float, float]] = {
    "cnn": (3e-4, 3e-3),
    "vision-transformer": (1e-5, 1e-3),
    "text-encoder": (1e-5, 2e-4),
}
HEAD_BAND = (1e-4, 1e-2)
FAR = 3.0  # "far outside": more than this factor beyond either end of a band
_NAMES = {
    "cnn": "a convolutional network",
    "vision-transformer": "a vision transformer",
    "text-encoder": "a text encoder",
}


def backbone_family(backbone: nn.Module) -> str | None:
    """``"text-encoder"`` for ``hf:`` backbones, ``"vision-transformer"`` / ``"cnn"`` for image backbones (attention
    modules vs BatchNorm), None when it cannot tell (a custom module with neither)."""
    if getattr(backbone, "source", None) in ("hf", "hf-config"):
        return "text-encoder"
    has_attention = has_batchnorm = False
    for m in backbone.modules():
        has_attention = has_attention or isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__
        has_batchnorm = has_batchnorm or isinstance(m, nn.modules.batchnorm._BatchNorm)
    if has_attention and not has_batchnorm:
        return "vision-transformer"
    if has_batchnorm:
        return "cnn"
    return None


def rate_warning(family: str | None, lr: float, head_lr_mult: float = 1.0, pretrained: bool = True) -> str | None:
    """One line saying which rate is far outside its family's band, or None when both are plausible (or nothing is
    known: random init, an unknown family)."""
    if not pretrained or family not in BANDS:
        return None
    problems = []
    lo, hi = BANDS[family]
    what = f"fine-tuning {_NAMES[family]}"
    if lr < lo / FAR or lr > hi * FAR:
        side = "below" if lr < lo else "above"
        band = f"about {lo:g} to {hi:g} with AdamW"
        problems.append(f"lr={lr:g} is far {side} the rates known to work for {what} ({band})")
    head = lr * head_lr_mult
    hlo, hhi = HEAD_BAND
    if head < hlo / FAR or head > hhi * FAR:
        side = "below" if head < hlo else "above"
        problems.append(
            f"the new head trains at lr*head_lr_mult={head:g}, far {side} what trains a new head well "
            f"(about {hlo:g} to {hhi:g})"
        )
    if not problems:
        return None
    return "; ".join(problems) + ". Expect a poor result unless this is deliberate."


__all__ = ["BANDS", "HEAD_BAND", "backbone_family", "rate_warning"]
