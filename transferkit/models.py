"""TransferModel: a backbone (from the registry or the user) plus a task head."""

from __future__ import annotations

from typing import Any

from torch import nn

from .backbones import create_backbone
from .heads import build_head


class TransferModel(nn.Module):
    """``head(backbone(x))``. The engine treats ``backbone`` and ``head`` differently (freezing, LR groups).

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
    num_classes: int,
    *,
    head: Any = None,
    pretrained: bool | str = True,
    head_kwargs: dict[str, Any] | None = None,
    default_head: str = "linear",
    **backbone_kwargs: Any,
) -> TransferModel:
    """Builds backbone + head.

    Args:
        backbone: a source-prefixed name (``"timm:resnet18"``) or an nn.Module with ``num_features``.
        num_classes: output width of the head.
        head: a registered head name, an nn.Module, a class or a factory ``(backbone, num_classes) -> nn.Module``.
        pretrained: True (library weights), False (random init) or a local weights file/folder.
        head_kwargs: extra arguments for the head factory.
    """
    bb = create_backbone(backbone, pretrained=pretrained, **backbone_kwargs)
    head_module = build_head(head, bb, num_classes, default=default_head, **(head_kwargs or {}))
    return TransferModel(bb, head_module, is_pretrained=getattr(bb, "is_pretrained", pretrained is not False))
