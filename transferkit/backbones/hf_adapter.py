"""Hugging Face transformers backbones: ``hf:NAME_OR_FOLDER`` (a pretrained encoder) and ``hf-config:MODEL_TYPE``
(a fresh encoder for pretraining from scratch).

- ``hf:path/to/folder`` loads ``AutoModel`` + ``AutoTokenizer`` from a local folder (works offline); a hub name
  such as ``hf:bert-base-uncased`` works when the hub is reachable or the model is in the local HF cache.
- ``hf-config:bert`` builds a randomly initialised encoder of that model type; sizes come from the
  ``model_config`` dict (e.g. ``{"num_hidden_layers": 2, "hidden_size": 32}``) and the vocabulary from the
  tokenizer. ``hf-config:path/to/config.json`` (or a folder with one) reads the config from disk. A dict
  ``{"model_type": "bert", "hidden_size": 32, ...}`` as backbone means the same as ``hf-config:bert`` with those
  overrides.

``layer_groups()`` = embeddings, each encoder layer, then the rest (pooler, final norms), so freezing, "unfreeze
the top N layers" and layer-wise LR decay work for BERT, RoBERTa, DistilBERT, MiniLM, DeBERTa, ELECTRA, ...
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError, WeightsError
from .base import Backbone

POOLINGS = ("auto", "cls", "pooler", "mean")
# Models whose position ids start after the padding index (their usable length is max_position_embeddings - 2).
_OFFSET_POSITIONS = (
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "data2vec-text",
    "xmod",
    "roberta-prelayernorm",
)


@dataclass(frozen=True)
class HFSpec:
    """A parsed text backbone: ``source`` "hf" (pretrained name/folder) or "hf-config" (model type or config path),
    plus config overrides."""

    source: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return f"{self.source}:{self.name}"


def parse_spec(backbone: Any, model_config: Mapping[str, Any] | None = None) -> HFSpec:
    """``"hf:X"`` / ``"hf-config:X"`` / ``{"model_type": ..., **sizes}`` -> HFSpec (`model_config` adds overrides).

    Example:
        >>> parse_spec("hf-config:bert", {"hidden_size": 32}).overrides
        {'hidden_size': 32}
    """
    overrides = dict(model_config or {})
    if isinstance(backbone, Mapping):
        cfg = dict(backbone)
        if "model_type" not in cfg:
            raise ConfigError(
                f"A backbone given as a dict needs a 'model_type' key (e.g. 'bert'); got keys {', '.join(cfg)}."
            )
        model_type = cfg.pop("model_type")
        return HFSpec("hf-config", str(model_type), {**cfg, **overrides})
    if isinstance(backbone, str):
        source, sep, name = backbone.partition(":")
        if sep and source in ("hf", "hf-config") and name:
            return HFSpec(source, name, overrides)
    raise ConfigError(
        f"backbone={backbone!r} is not a text backbone. Use 'hf:<model folder or hub name>', "
        "'hf-config:<model type such as bert>' with model_config={...}, or a dict {'model_type': 'bert', ...}."
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hides transformers' loading reports and progress bars; transferkit reports what matters itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# --- configs and tokenizers -----------------------------------------------------------------------------------


def _model_types() -> list[str]:
    from transformers import CONFIG_MAPPING

    return sorted(CONFIG_MAPPING.keys())


def build_config(spec: HFSpec, tokenizer=None):
    """The transformers config for `spec`, with overrides applied and, for fresh models, the tokenizer's vocabulary
    size and special-token ids."""
    from transformers import AutoConfig

    with quiet_transformers():
        if spec.source == "hf":
            config = _load_config(spec.name)
        else:
            path = Path(spec.name)
            if path.suffix == ".json" or path.is_dir():
                config = _load_config(spec.name)
            else:
                types = _model_types()
                if spec.name not in types:
                    close = difflib.get_close_matches(spec.name, types, n=5, cutoff=0.5)
                    raise UnknownNameError(
                        f"Unknown model type {spec.name!r} for hf-config:."
                        + (f" Did you mean: {', '.join(close)}?" if close else "")
                        + " See tk.list_backbones(source='hf-config')."
                    )
                config = AutoConfig.for_model(spec.name)
    valid = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    for key, value in spec.overrides.items():
        if key not in valid and not hasattr(config, key):
            close = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
            raise ConfigError(
                f"model_config key {key!r} is not a field of {type(config).__name__}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + "."
            )
        setattr(config, key, value)
    if spec.source == "hf-config" and tokenizer is not None:
        if "vocab_size" not in spec.overrides:
            config.vocab_size = len(tokenizer)
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            tid = getattr(tokenizer, attr, None)
            if tid is not None and hasattr(config, attr):
                setattr(config, attr, tid)
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and heads and hidden % heads:
        divisor = max(d for d in range(1, heads + 1) if hidden % d == 0)
        raise ConfigError(
            f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}; set model_config "
            f"num_attention_heads={divisor} (or another divisor of {hidden})."
        )
    return config


def _load_config(name: str):
    from transformers import AutoConfig

    path = Path(name)
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name):
        raise WeightsError(f"Model folder {name!r} does not exist. Check the path after 'hf:'.")
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"Config file {name!r} does not exist.")
        data = json.loads(path.read_text(encoding="utf-8"))
        if "model_type" not in data:
            raise ConfigError(f"{name} has no 'model_type' entry, so the architecture is unknown.")
        return AutoConfig.for_model(data.pop("model_type"), **data)
    if path.is_dir() and not (path / "config.json").is_file():
        raise WeightsError(
            f"{name} has no config.json, so it is not a transformers model folder. Pass the folder written by "
            "save_pretrained (or by tk.pretrain), or a hub name."
        )
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as e:
        hint = (
            " It is not a local folder, and loading a hub name needs the network or the local HF cache."
            if not path.exists()
            else ""
        )
        raise WeightsError(f"Cannot load the model config of {name!r}.{hint} ({e})") from None


def get_tokenizer(spec: HFSpec, tokenizer: Any = None):
    """The tokenizer given (object or folder/name), else the one stored with the model (hf: / config folders)."""
    from ..data.tokenizer import load_tokenizer

    if tokenizer is not None:
        if isinstance(tokenizer, str) and tokenizer == "train":
            raise ConfigError("tokenizer='train' needs the corpus; the text tasks train it before building the model.")
        return load_tokenizer(tokenizer)
    folder = Path(spec.name)
    if spec.source == "hf-config" and folder.suffix == ".json":
        folder = folder.parent
    if spec.source == "hf" or folder.is_dir():
        try:
            with quiet_transformers():
                return load_tokenizer(str(folder) if folder.is_dir() else spec.name)
        except ConfigError as e:
            raise ConfigError(
                f"{spec.display} comes without a usable tokenizer ({e}). Pass tokenizer='<folder>' (or "
                "tokenizer='train' to train one on the data)."
            ) from None
    raise ConfigError(
        f"{spec.display} builds a fresh model, which needs a tokenizer: pass tokenizer='<folder or hub name>' or "
        "tokenizer='train' (trains a WordPiece vocabulary on the data; vocab_size=... sets its size)."
    )


def tokenizer_and_config(spec: HFSpec, tokenizer: Any = None) -> tuple[Any, Any]:
    """Tokenizer and config of `spec`. A pretrained model's config is read first (a wrong path is reported as
    such); a fresh model's config takes its vocabulary size from the tokenizer."""
    if spec.source == "hf":
        config = build_config(spec)
        return get_tokenizer(spec, tokenizer), config
    tok = get_tokenizer(spec, tokenizer)
    return tok, build_config(spec, tok)


def max_positions(config, tokenizer=None) -> int:
    """The longest sequence (with special tokens) the model can take."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        limit -= 2
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return int(limit)


def resolve_max_length(requested: int | None, default: int, config, tokenizer, where: str) -> int:
    """`requested` if it fits the model, else a ConfigError; None: min(default, the model's limit)."""
    limit = max_positions(config, tokenizer)
    if requested is None:
        return min(default, limit)
    if requested < 8:
        raise ConfigError(f"max_length={requested} is too short; use at least 8 tokens.")
    if requested > limit:
        raise ConfigError(
            f"max_length={requested} is longer than {where} can take ({limit} positions). Use max_length<={limit}."
        )
    return int(requested)


# --- pooling ----------------------------------------------------------------------------------------------------


def sentence_transformers_pooling(folder: str | Path) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with ("mean", "cls"), or None if not one."""
    folder = Path(folder)
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
        pool = next((m for m in entries if str(m.get("type", "")).endswith("Pooling")), None)
        if pool is None:
            return None
        cfg = json.loads((folder / pool.get("path", "1_Pooling") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return None


def resolve_pooling(pooling: str, spec: HFSpec, model: nn.Module, pooler_loaded: bool) -> str:
    """``auto``: the checkpoint's sentence-transformers pooling if it has one, else its trained pooler if it has
    one (BERT-style checkpoints), else the masked mean of the last hidden states.

    Why mean and not [CLS] when there is no trained pooler: nothing in masked-LM pretraining teaches the [CLS]
    state to summarise the text. Measured on a 2-layer BERT pretrained with tk.pretrain, 4 fine-tuning epochs:
    [CLS] pooling stayed at chance (val accuracy 0.53) while mean pooling reached 0.93-0.97.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling={pooling!r} is invalid; expected one of {POOLINGS}.")
    has_pooler = getattr(model, "pooler", None) is not None
    if pooling == "pooler" and not has_pooler:
        raise ConfigError(f"pooling='pooler': {spec.display} has no pooler layer; use pooling='cls' or 'mean'.")
    if pooling != "auto":
        return pooling
    if spec.source == "hf" and Path(spec.name).is_dir():
        st = sentence_transformers_pooling(spec.name)
        if st:
            return st
    return "pooler" if has_pooler and pooler_loaded else "mean"


# --- the backbone -----------------------------------------------------------------------------------------------


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of transformer blocks (``encoder.layer``, ``transformer.layer``, ...)."""
    want = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    exact = [(n, m) for n, m in lists if len(m) == want]
    pool = exact or lists
    return max(pool, key=lambda nm: len(nm[1])) if pool else None


def encoder_layer_groups(model: nn.Module, prefix: str = "") -> list[list[str]]:
    """Parameter names grouped stem -> top: embeddings, each transformer block, then the rest (pooler, final norm).

    Example:
        >>> groups = encoder_layer_groups(bert_model)  # doctest: +SKIP
        >>> groups[0][0], len(groups)                  # embeddings, 1 + num_layers + 1
        ('embeddings.word_embeddings.weight', 14)
    """
    found = find_layers(model)
    layers_name, layers = found if found else ("", [])
    groups: list[list[str]] = [[] for _ in range(len(layers) + 2)]
    for name, _ in model.named_parameters():
        if layers_name and name.startswith(layers_name + "."):
            idx = int(name[len(layers_name) + 1 :].split(".", 1)[0])
            groups[idx + 1].append(prefix + name)
        elif "embed" in name.split(".")[0] or "embed" in name:
            groups[0].append(prefix + name)
        else:
            groups[-1].append(prefix + name)
    return [g for g in groups if g]


class HFBackbone(Backbone):
    """A transformers encoder that returns pooled sentence features of shape ``(batch, hidden_size)``.

    Attributes:
        model: the ``AutoModel`` (e.g. ``BertModel``).
        tokenizer: the matching tokenizer (not a module; saved next to the weights by the text task).
        pooling: ``"cls"`` (first token), ``"pooler"`` (the model's trained pooler) or ``"mean"`` (masked mean).

    Example:
        >>> bb = create("path/to/bert-folder")  # doctest: +SKIP
        >>> enc = bb.tokenizer(["a fine film"], return_tensors="pt")
        >>> bb(**enc).shape
        torch.Size([1, 768])
    """

    source = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, pooling: str, name: str, source: str = "hf") -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name = name
        self.source = source
        if pooling != "pooler" and getattr(model, "pooler", None) is not None:
            model.pooler = None  # an unused pooler would only cost time and sit idle in the optimizer
        config = model.config
        self.num_features = int(config.hidden_size)
        self.feature_info = [{"num_chs": self.num_features, "reduction": 1, "module": "last_hidden_state"}]
        self.data_config = {"max_length": max_positions(config, tokenizer)}
        params = inspect.signature(model.forward).parameters
        self._takes_token_types = "token_type_ids" in params and getattr(config, "type_vocab_size", 2) > 1

    @property
    def config(self):
        return self.model.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs, return_dict=True)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "mean":
            if attention_mask is None:
                return hidden.mean(1)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return hidden[:, 0]

    def layer_groups(self) -> list[list[str]]:
        return encoder_layer_groups(self.model, prefix="model.")

    def save_hf(self, folder: str | Path) -> None:
        """Writes the encoder's config and tokenizer (not the weights) so the model can be rebuilt offline."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def _load_pretrained(auto_cls, spec: HFSpec, config, pretrained: bool | str) -> tuple[nn.Module, set[str]]:
    """Loads weights into `auto_cls`; returns the model and the names of parameters that were not in the checkpoint."""
    source = spec.name if pretrained is True else str(pretrained)
    path = Path(source)
    with quiet_transformers():
        if path.is_file():  # a bare weights file: build from the config, then load
            model = auto_cls.from_config(config, trust_remote_code=False)
            missing = _load_state_file(model, path)
            return model, missing
        if isinstance(pretrained, str) and not path.exists():
            raise WeightsError(f"pretrained={pretrained!r}: no such file or folder.")
        try:
            model, info = auto_cls.from_pretrained(
                source, config=config, output_loading_info=True, trust_remote_code=False
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise WeightsError(
                f"Cannot load weights for {spec.display} from {source!r}: {e}. A folder needs config.json plus "
                "model.safetensors (or pytorch_model.bin); a hub name needs the network or the local HF cache."
            ) from None
    mismatched = info.get("mismatched_keys") or set()
    if mismatched:
        raise WeightsError(
            f"Weights in {source!r} do not fit the model ({len(mismatched)} tensors have other shapes, e.g. "
            f"{sorted(map(str, mismatched))[:3]}); did model_config change the sizes of a pretrained model?"
        )
    return model, set(info.get("missing_keys") or ())


def _load_state_file(model: nn.Module, path: Path) -> set[str]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    base = getattr(model, "base_model_prefix", "")
    own = set(model.state_dict())
    if base and not (own & set(state)) and any(k.startswith(base + ".") for k in state):
        state = {k[len(base) + 1 :]: v for k, v in state.items() if k.startswith(base + ".")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit the model: {e}") from None
    if len(missing) == len(own):
        raise WeightsError(f"{path} holds none of the model's weights (keys like {sorted(state)[:3]}).")
    return set(missing)


def create(
    name: str,
    pretrained: bool | str = True,
    source: str = "hf",
    *,
    pooling: str = "auto",
    tokenizer: Any = None,
    model_config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> HFBackbone:
    """Creates a text encoder backbone.

    Args:
        name: a local folder or hub name (source ``"hf"``), or a model type / config path (``"hf-config"``).
        pretrained: True: the checkpoint's weights (``hf``); False: random init; a path: weights from that file or
            folder. ``hf-config`` models always start from random weights unless `pretrained` is a path.
        pooling: ``"auto"``, ``"cls"``, ``"pooler"`` or ``"mean"``.
        tokenizer: a tokenizer object, folder or hub name; default: the one stored with the model.
        model_config: config overrides, e.g. ``{"hidden_dropout_prob": 0.2}`` or sizes for ``hf-config``.

    Example:
        >>> bb = create("bert", source="hf-config", tokenizer="runs/tok",
        ...             model_config={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
        ...                           "intermediate_size": 64})  # doctest: +SKIP
    """
    if kwargs:
        raise ConfigError(f"Unknown option(s) for an hf backbone: {', '.join(kwargs)}.")
    spec = HFSpec(source, name, dict(model_config or {}))
    from transformers import AutoModel

    tok, config = tokenizer_and_config(spec, tokenizer)
    from ..data.tokenizer import check_tokenizer_fits

    check_tokenizer_fits(tok, config, tokenizer_source=_tok_source(tokenizer, spec), model_source=spec.display)
    if (source == "hf" and pretrained is not False) or isinstance(pretrained, str):
        model, missing = _load_pretrained(AutoModel, spec, config, pretrained)
    else:
        with quiet_transformers():
            model = AutoModel.from_config(config, trust_remote_code=False)
        missing = {n for n, _ in model.named_parameters()}
    pooler_loaded = not any(m.startswith("pooler.") for m in missing)
    mode = resolve_pooling(pooling, spec, model, pooler_loaded)
    backbone = HFBackbone(model, tok, mode, name=name, source=source)
    backbone.is_pretrained = (source == "hf" and pretrained is not False) or isinstance(pretrained, str)
    return backbone


def create_masked_lm(spec: HFSpec, pretrained: bool | str = True, tokenizer: Any = None) -> tuple[nn.Module, Any]:
    """An ``AutoModelForMaskedLM`` and its tokenizer: from a checkpoint (continued pretraining) or fresh.

    Example:
        >>> model, tok = create_masked_lm(parse_spec("hf:runs/mlm"))  # doctest: +SKIP
    """
    from transformers import AutoModelForMaskedLM

    from ..data.tokenizer import check_tokenizer_fits

    tok, config = tokenizer_and_config(spec, tokenizer)
    check_tokenizer_fits(
        tok, config, tokenizer_source=_tok_source(tokenizer, spec), model_source=spec.display, need_mask=True
    )
    if type(config) not in AutoModelForMaskedLM._model_mapping:
        raise ConfigError(
            f"{spec.display} ({config.model_type}) has no masked-LM head in transformers; pick an encoder such as "
            "bert, roberta, distilbert, electra or deberta-v2."
        )
    if (spec.source == "hf" and pretrained is not False) or isinstance(pretrained, str):
        model, missing = _load_pretrained(AutoModelForMaskedLM, spec, config, pretrained)
        head_missing = sorted(m for m in missing if not m.startswith(getattr(model, "base_model_prefix", "") + "."))
        if head_missing:
            warnings.warn(
                f"{spec.display} has no trained masked-LM head ({len(head_missing)} tensors, e.g. {head_missing[0]}); "
                "the head starts from random weights, the encoder from the checkpoint.",
                stacklevel=2,
            )
    else:
        with quiet_transformers():
            model = AutoModelForMaskedLM.from_config(config, trust_remote_code=False)
    return model, tok


def _tok_source(tokenizer: Any, spec: HFSpec) -> str:
    if tokenizer is None:
        return spec.name
    return str(tokenizer) if isinstance(tokenizer, (str, Path)) else f"<{type(tokenizer).__name__}>"


def list_names(pattern: str | None = None, source: str = "hf") -> list[str]:
    """Names this source can build here, without the network.

    - ``hf-config``: the model types that transformers can build with a masked-LM head (``bert``, ``roberta``...).
    - ``hf``: models in the local Hugging Face cache (``org/name``). Any local folder written by
      ``save_pretrained`` works too (``hf:path/to/folder``) but cannot be listed.

    Example:
        >>> "bert" in list_names(source="hf-config")
        True
    """
    if source == "hf-config":
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        names = sorted(MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    else:
        names = _cached_models()
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _cached_models() -> list[str]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one: nothing to list
        return []
    return sorted(r.repo_id for r in info.repos if r.repo_type == "model")
