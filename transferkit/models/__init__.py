"""Models and the one registered model factory every task goes through.

A model kind (``classifier``, ``masked-lm``, ``segmenter``, ``detector``) is a builder in the ``MODELS``
registry. Whatever it builds follows one contract with the engine: ``layer_groups()`` lists the pretrained
parameters (stem -> top) and ``is_pretrained`` says whether they hold pretrained weights; every other parameter
(a head, a neck, an FPN, a decoder) is new and trains at ``lr * head_lr_mult``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones import create_backbone, split_name
from ..errors import ConfigError
from ..heads import build_head
from ..registry import BACKBONE_SOURCES, Registry

MODELS: Registry[Any] = Registry("model kind")
# kinds whose builders live in modules imported on first use (they import smp / torchvision detection)
_MODEL_MODULES = {"segmenter": "transferkit.models.segmentation", "detector": "transferkit.models.detection"}


class TransferModel(nn.Module):
    """``head(backbone(x))``: a classifier. The backbone is pretrained (its layer groups), the head is new.

    Example:
        >>> model = create_model("timm:test_resnet", num_classes=3, pretrained=False)
        >>> model.head.fc.out_features
        3
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, is_pretrained: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.is_pretrained = is_pretrained

    def layer_groups(self) -> list[list[str]]:
        """The backbone's layer groups (pretrained, stem -> top); the head is new."""
        groups = self.backbone.layer_groups() if hasattr(self.backbone, "layer_groups") else []
        return [[f"backbone.{n}" for n in g] for g in groups]

    def forward(self, *args: Any, **kwargs: Any):
        return self.head(self.backbone(*args, **kwargs))


def create_model(
    backbone: Any,
    num_classes: int | None = None,
    *,
    kind: str = "classifier",
    task: str | None = None,
    head: Any = None,
    pretrained: bool | str = True,
    head_kwargs: dict[str, Any] | None = None,
    default_head: str = "linear",
    **kwargs: Any,
) -> nn.Module:
    """Builds a model of `kind` around `backbone` through the ``MODELS`` registry.

    Args:
        backbone: a source-prefixed name (``"timm:resnet18"``) or an nn.Module backbone.
        num_classes: output width (classes) where the kind has one.
        kind: ``"classifier"`` (backbone + head), ``"masked-lm"``, and the dense kinds registered by their tasks.
        task: the task asking; a backbone whose source does not serve it is refused with one clear line.
        head: a registered head name, an nn.Module, a class or a factory.
        pretrained: True (library weights), False (random init) or a local weights file/folder.
        head_kwargs: extra arguments for the head factory.
        **kwargs: passed to the kind's builder (e.g. backbone options, a tokenizer).

    Example:
        >>> model = create_model("timm:test_resnet", num_classes=3, pretrained=False)
        >>> len(model.layer_groups()) > 1, model.is_pretrained
        (True, False)
    """
    if task is not None:
        check_backbone_fits(backbone, task)
    if kind not in MODELS and kind in _MODEL_MODULES:
        import importlib

        importlib.import_module(_MODEL_MODULES[kind])
    builder = MODELS.get(kind)
    return builder(
        backbone,
        num_classes,
        head=head,
        pretrained=pretrained,
        head_kwargs=dict(head_kwargs or {}),
        default_head=default_head,
        **kwargs,
    )


def check_backbone_fits(backbone: Any, task: str) -> None:
    """One clear line when a backbone's source does not serve `task` (e.g. an hf: text encoder for images)."""
    if not isinstance(backbone, str) or ":" not in backbone:
        return
    source, _ = split_name(backbone)
    serves = BACKBONE_SOURCES.meta(source).get("tasks", ())
    if task not in serves:
        fits = sorted(s for s in BACKBONE_SOURCES if task in BACKBONE_SOURCES.meta(s).get("tasks", ()))
        raise ConfigError(
            f"backbone={backbone!r} is a {source}: backbone, which serves {', '.join(serves)}, not {task}. For {task} "
            f"use a backbone from {', '.join(s + ':' for s in fits)} (see tk.list_backbones(task={task!r}))."
        )


@MODELS.register("classifier")
def build_classifier(
    backbone: Any,
    num_classes: int | None,
    *,
    head: Any = None,
    pretrained: bool | str = True,
    head_kwargs: dict[str, Any] | None = None,
    default_head: str = "linear",
    example_input: Any = None,
    **backbone_kwargs: Any,
) -> TransferModel:
    """Backbone + head; with `example_input` (a batch the task builds) the output width is checked now."""
    if num_classes is None:
        raise ConfigError("A classifier needs num_classes.")
    bb = create_backbone(backbone, pretrained=pretrained, **backbone_kwargs)
    head_module = build_head(head, bb, num_classes, default=default_head, **(head_kwargs or {}))
    model = TransferModel(bb, head_module, is_pretrained=getattr(bb, "is_pretrained", pretrained is not False))
    if example_input is not None:
        check_output_width(model, num_classes, example_input)
    return model


@torch.no_grad()
def check_output_width(model: nn.Module, num_classes: int, example_input: Any) -> None:
    """Runs one small batch through `model` and checks it yields (batch, num_classes) logits."""
    was_training = model.training
    model.eval()
    try:
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        out = model(*args)
    except ConfigError:
        raise
    except Exception as e:  # a custom head that does not fit the backbone's features
        raise ConfigError(
            f"The model does not run on a test batch ({type(e).__name__}: {str(e).splitlines()[0][:200]}). A custom "
            f"head receives the backbone's pooled features of width {getattr(model.backbone, 'num_features', '?')}."
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"The head outputs {shape} for a batch, but the data has {num_classes} classes: its last layer must give "
            f"(batch, {num_classes}) logits. Fix the head's output width, or drop head= for the default head."
        )


@MODELS.register("masked-lm")
def build_masked_lm(
    backbone: Any, num_classes: int | None = None, *, pretrained: bool | str = True, tokenizer: Any = None, **_: Any
) -> nn.Module:
    """A transformers masked-LM model (continued pretraining from a checkpoint, or fresh) behind the contract."""
    from ..backbones.hf_adapter import create_masked_lm
    from .masked_lm import wrap_masked_lm

    model, tok = create_masked_lm(backbone, pretrained=pretrained, tokenizer=tokenizer)
    loaded = (backbone.source == "hf" and pretrained is not False) or isinstance(pretrained, str)
    wrapped = wrap_masked_lm(model, is_pretrained=loaded)
    wrapped.tokenizer = tok
    return wrapped


__all__ = ["MODELS", "TransferModel", "check_backbone_fits", "create_model"]
