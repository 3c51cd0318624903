"""The masked-LM model: a transformers masked-LM model behind the engine's model contract."""

from __future__ import annotations

import torch
from torch import nn

_HEAD_NAMES = ("cls", "lm_head")  # BERT-, RoBERTa-style MLM heads that map hidden states -> vocabulary logits


class MaskedLMModel(nn.Module):
    """A transformers masked-LM model that computes the vocabulary projection only at masked positions.

    It registers the wrapped model's own children under their own names, so its state dict has exactly the keys
    of the transformers model (``bert.*``, ``cls.*``): the engine's ``model.safetensors`` is a valid transformers
    checkpoint. On BERT-sized vocabularies this skips most of the head's work (85% of positions need no logits).
    """

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "hf_model", hf_model)  # not a submodule: its children are registered directly
        for name, child in hf_model.named_children():
            self.add_module(name, child)
        self.base_name = hf_model.base_model_prefix
        self.head_name = next(n for n in _HEAD_NAMES if isinstance(getattr(hf_model, n, None), nn.Module))

    @staticmethod
    def supports(hf_model: nn.Module) -> bool:
        prefix = getattr(hf_model, "base_model_prefix", "")
        children = dict(hf_model.named_children())
        own = set(hf_model.state_dict())
        under_children = {k for k in own if k.split(".", 1)[0] in children}
        return (
            prefix in children
            and any(isinstance(children.get(n), nn.Module) for n in _HEAD_NAMES)
            and own == under_children
        )

    @property
    def config(self):
        return self.hf_model.config

    def layer_groups(self) -> list[list[str]]:
        """Embeddings, each transformer layer, then the rest (the masked-LM head, final norms): with continued
        pretraining they are all pretrained, so freezing and layer-wise LR decay apply as for fine-tuning."""
        from ..backbones.hf_adapter import encoder_layer_groups

        return encoder_layer_groups(self)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = getattr(self, self.base_name)(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Returns ``(logits at masked positions (N, vocab), their labels (N,), mask (B, T))``."""
        hidden = self.hidden_states(input_ids, attention_mask)
        mask = labels != -100
        logits = getattr(self, self.head_name)(hidden[mask])
        return logits, labels[mask], mask


def wrap_masked_lm(hf_model: nn.Module, is_pretrained: bool) -> nn.Module:
    """A :class:`MaskedLMModel` where the architecture allows, else the transformers model itself with the same
    ``layer_groups`` / ``is_pretrained`` contract attached."""
    from ..backbones.hf_adapter import encoder_layer_groups

    model = MaskedLMModel(hf_model) if MaskedLMModel.supports(hf_model) else hf_model
    if not isinstance(model, MaskedLMModel):
        model.layer_groups = lambda: encoder_layer_groups(hf_model)
    model.is_pretrained = is_pretrained
    return model
