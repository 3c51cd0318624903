"""Tokenizers: train a WordPiece vocabulary on a corpus, load one from a folder/name, and check it fits a model."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, WeightsError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 8000,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
    output_dir: str | Path | None = None,
):
    """Trains a BERT-style WordPiece tokenizer on `texts` and returns it as a transformers fast tokenizer.

    The result behaves like ``bert-base-uncased``'s tokenizer (``[CLS] a [SEP] b [SEP]``, token type ids, a
    ``[MASK]`` token) and saves to a folder that ``AutoTokenizer.from_pretrained`` reads.

    Args:
        texts: the training corpus, one document per item.
        vocab_size: upper bound of the vocabulary (a small corpus may yield fewer tokens).
        lowercase: lowercase and strip accents first (as uncased BERT).
        min_frequency: a merge must occur this often to enter the vocabulary.
        model_max_length: the longest input the tokenizer will let through with ``truncation=True``.
        output_dir: if given, the tokenizer is saved there.

    Example:
        >>> tok = train_wordpiece(["a good film", "a bad film"] * 20, vocab_size=100)
        >>> tok("a good film")["input_ids"][0] == tok.cls_token_id
        True
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise ConfigError(f"vocab_size={vocab_size} is too small for a WordPiece vocabulary; use at least 100.")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None if lowercase else False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise ConfigError("The tokenizer learned no tokens: the corpus is empty. Pass training texts.")
    # BertTokenizer rebuilds the exact BERT pipeline (normalizer, pre-tokenizer, [CLS]/[SEP] template) around the
    # learned vocabulary, and saves with tokenizer_class "BertTokenizer", which every transformers version loads.
    hf_tok = BertTokenizer(
        vocab=tok.get_vocab(),
        do_lower_case=lowercase,
        strip_accents=None if lowercase else False,
        model_max_length=model_max_length,
    )
    if output_dir is not None:
        hf_tok.save_pretrained(str(output_dir))
    return hf_tok


def load_tokenizer(name_or_path: Any):
    """Loads a transformers tokenizer from a local folder or (when online) a hub name; a tokenizer object is
    returned as is.

    Raises:
        ConfigError: the folder has no tokenizer files, or the name cannot be resolved offline.

    Example:
        >>> tok = load_tokenizer("runs/mlm")  # doctest: +SKIP
    """
    if not isinstance(name_or_path, (str, Path)):
        if hasattr(name_or_path, "convert_tokens_to_ids"):
            return name_or_path
        raise ConfigError(f"tokenizer={name_or_path!r} must be a folder, a hub name, 'train', or a tokenizer object.")
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if path.is_dir() and not any(
        (path / f).is_file()
        for f in (
            "tokenizer.json",
            "vocab.txt",
            "tokenizer_config.json",
            "spiece.model",
            "sentencepiece.bpe.model",
            "vocab.json",
        )
    ):
        raise ConfigError(
            f"{path} has no tokenizer files (tokenizer.json, vocab.txt, ...). Pass tokenizer='<folder with a "
            "tokenizer>' or tokenizer='train' to train a WordPiece tokenizer on the data."
        )
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    except (OSError, ValueError) as e:
        hint = "" if path.exists() else " It is not a local folder; loading it by name needs the hub (offline?)."
        raise ConfigError(f"Cannot load a tokenizer from {str(name_or_path)!r}.{hint} ({e})") from None


def check_tokenizer_fits(tokenizer, config, *, tokenizer_source: str, model_source: str, need_mask: bool = False):
    """Checks that every token id the tokenizer can produce has a row in the model's embedding table, and that
    the special tokens the tasks need exist. Fixes a missing pad token from eos/unk.

    Raises:
        WeightsError: the tokenizer has more ids than the model's vocabulary (a tokenizer/model mismatch).
        ConfigError: masked-LM needs a mask token that the tokenizer lacks.
    """
    vocab_size = getattr(config, "vocab_size", None)
    n = len(tokenizer)
    if vocab_size is not None and n > vocab_size:
        raise WeightsError(
            f"Tokenizer/model mismatch: the tokenizer from {tokenizer_source!r} has {n} tokens but the model from "
            f"{model_source!r} has only {vocab_size} embedding rows (config.vocab_size). Use the tokenizer saved "
            "with this model (omit tokenizer=), or a model built for this tokenizer."
        )
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token
        if fallback is None:
            raise ConfigError(f"The tokenizer from {tokenizer_source!r} has no pad token; batches cannot be padded.")
        tokenizer.pad_token = fallback
    cfg_pad = getattr(config, "pad_token_id", None)
    if cfg_pad is not None and tokenizer.pad_token_id != cfg_pad:
        warnings.warn(
            f"The tokenizer from {tokenizer_source!r} pads with id {tokenizer.pad_token_id} but the model from "
            f"{model_source!r} expects pad id {cfg_pad}; the two may not belong together.",
            stacklevel=3,
        )
    if need_mask and tokenizer.mask_token is None:
        raise ConfigError(
            f"The tokenizer from {tokenizer_source!r} has no mask token, so it cannot be used for masked-LM. Use a "
            "BERT/RoBERTa-style tokenizer or tokenizer='train'."
        )
    return tokenizer
