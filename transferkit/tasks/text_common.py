"""What the text tasks share: resolving the backbone spec, the tokenizer (loaded or trained) and max_length."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def check_common_options(options: Any) -> None:
    """Validates options both text tasks have (called from the Options dataclasses' __post_init__)."""
    from ..data.text import EMPTY_POLICIES

    if options.max_length is not None and (not isinstance(options.max_length, int) or options.max_length < 8):
        raise ConfigError(f"max_length={options.max_length!r} is invalid; expected an integer >= 8, e.g. 128.")
    if options.empty_texts not in EMPTY_POLICIES:
        raise ConfigError(f"empty_texts={options.empty_texts!r} is invalid; expected one of {EMPTY_POLICIES}.")
    if not isinstance(options.vocab_size, int) or options.vocab_size < 100:
        raise ConfigError(f"vocab_size={options.vocab_size!r} is invalid; expected an integer >= 100, e.g. 8000.")
    if options.model_config is not None and not isinstance(options.model_config, dict):
        raise ConfigError(
            f"model_config must be a dict of config fields, e.g. {{'hidden_size': 128}}; got "
            f"{type(options.model_config).__name__}."
        )
    if isinstance(options.tokenizer, str) and not options.tokenizer.strip():
        raise ConfigError("tokenizer='' is invalid; pass a folder, a hub name or 'train'.")


def resolve_backbone(backbone: Any, options: Any):
    """The HFSpec of `backbone` (a string, a config dict, or an already created HFBackbone -> None)."""
    from ..backbones.hf_adapter import HFBackbone, parse_spec

    if backbone is None:
        raise ConfigError(
            "A text task needs a backbone: 'hf:<model folder or hub name>', 'hf-config:bert' (a fresh model; pass "
            "model_config={...} and tokenizer='train' or a folder), or a dict {'model_type': 'bert', ...}."
        )
    if isinstance(backbone, HFBackbone):
        return None
    return parse_spec(backbone, options.model_config)


def make_tokenizer(spec, options: Any, corpus: Sequence[str], fresh: bool, config=None, keep_in: str | None = None):
    """The tokenizer and model config for a run: ``tokenizer='train'`` trains WordPiece on `corpus` (only for a
    fresh model: `fresh`), anything else is loaded (default: the one stored with the model).

    A trained tokenizer is saved at once to `keep_in` (a folder of the run's output), and a resumed run (`config`
    with ``resume`` and a checkpoint to resume from) loads it from there instead of training again: the
    ``tokenizers`` library breaks ties between equally frequent merges differently from run to run, so a new
    vocabulary would not match the checkpoint's embeddings.
    """
    from ..backbones.hf_adapter import tokenizer_and_config
    from ..data.tokenizer import check_tokenizer_fits, train_wordpiece

    tok_opt = options.tokenizer
    if isinstance(tok_opt, str) and tok_opt == "train":
        if not fresh:
            raise ConfigError(
                f"tokenizer='train' builds a new vocabulary, which does not fit the pretrained embeddings of "
                f"{spec.display}. Omit tokenizer= to use its own, or start from random weights (pretrained=False or "
                "backbone='hf-config:bert')."
            )
        keep = Path(keep_in) if keep_in else None
        if keep is not None and (keep / "tokenizer.json").is_file() and _resuming(config):
            tok_opt = str(keep)
        else:
            tok_opt = train_wordpiece(
                corpus, vocab_size=options.vocab_size, lowercase=options.lowercase, min_frequency=options.min_frequency
            )
            if keep is not None:
                tok_opt.save_pretrained(str(keep))
    tok, config = tokenizer_and_config(spec, tok_opt)
    check_tokenizer_fits(
        tok,
        config,
        tokenizer_source=str(options.tokenizer or spec.name),
        model_source=spec.display,
        need_mask=getattr(options, "mlm_probability", None) is not None,
    )
    return tok, config


def _resuming(config) -> bool:
    """A resumed run reuses the tokenizer it trained (the folder's run was checked to be the same run)."""
    return bool(config is not None and config.resume and config.output_dir)


def warn_truncation(lengths: Sequence[int], max_length: int, what: str) -> None:
    """Says how many texts were cut at `max_length` when it is more than a few."""
    cut = sum(1 for n in lengths if n >= max_length)
    if cut and cut / max(1, len(lengths)) > 0.05:
        warnings.warn(
            f"{cut} of {len(lengths)} {what} were truncated to max_length={max_length} tokens; pass a larger "
            "max_length if their ends matter.",
            stacklevel=3,
        )
