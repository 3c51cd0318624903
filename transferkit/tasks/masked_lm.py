"""Masked-language-model pretraining: ``tk.pretrain("masked-lm", data=..., backbone=..., output_dir=...)``.

Documents are tokenised once, concatenated and cut into ``max_length`` blocks; each training batch masks 15% of
the tokens with transformers' collator (80% [MASK], 10% random, 10% unchanged). The held-out blocks are masked
once with a fixed seed, so validation perplexity is comparable across epochs and runs. The output folder is a
transformers model folder (config.json, model.safetensors, tokenizer) that ``backbone="hf:<output_dir>"`` takes.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import FinetuneConfig
from ..errors import ConfigError, DataError
from ..registry import TASKS
from .base import Splits, Task, fingerprint
from .text_common import check_common_options, make_tokenizer, resolve_backbone


@dataclass(frozen=True)
class MaskedLMOptions:
    """Options of ``masked-lm`` (pass them to ``tk.pretrain`` as keywords).

    Attributes:
        text_column: column holding the text in CSV/TSV/JSONL data.
        max_length: block length in tokens. None: min(128, the model's limit).
        mlm_probability: share of tokens to predict (of which 80% become [MASK], 10% a random token, 10% stay).
        tokenizer: a folder or hub name; ``"train"`` trains WordPiece on the training documents (fresh models
            only); None: the model's own.
        vocab_size: vocabulary size when ``tokenizer="train"``.
        lowercase: lowercase when training a tokenizer.
        min_frequency: minimum count of a WordPiece merge when training a tokenizer.
        model_config: transformers config overrides, e.g. sizes for ``backbone="hf-config:bert"``.
        empty_texts: ``"skip"`` or ``"error"`` for empty texts in tables (blank lines of .txt files are skipped).
        max_val_blocks: cap on held-out blocks (evaluation time stays small on big corpora).
    """

    text_column: str = "text"
    max_length: int | None = None
    mlm_probability: float = 0.15
    tokenizer: Any = None
    vocab_size: int = 8000
    lowercase: bool = True
    min_frequency: int = 2
    model_config: dict[str, Any] | None = None
    empty_texts: str = "skip"
    max_val_blocks: int | None = 2000

    def __post_init__(self) -> None:
        check_common_options(self)
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(
                f"mlm_probability={self.mlm_probability!r} is invalid; expected a fraction such as 0.15."
            )


class BlockDataset(Dataset):
    """Fixed-length token blocks (one LongTensor), optionally pre-masked (validation)."""

    def __init__(
        self,
        blocks: torch.Tensor,
        special: torch.Tensor,
        masked: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.blocks, self.special, self.masked, self.labels = blocks, special, masked, labels

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> int:
        return i  # the collate function slices the tensors for a whole batch at once


class MaskingCollate:
    """Index batch -> ``{"input_ids", "labels"}``: random masking for training, the fixed masks for evaluation."""

    def __init__(self, dataset: BlockDataset, collator) -> None:
        self.dataset, self.collator = dataset, collator

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        ds = self.dataset
        if ds.masked is not None:
            return {"input_ids": ds.masked[idx], "labels": ds.labels[idx]}
        input_ids, labels = self.collator.torch_mask_tokens(
            ds.blocks[idx].clone(), special_tokens_mask=ds.special[idx]
        )
        return {"input_ids": input_ids, "labels": labels}


@TASKS.register("masked-lm", domain="text")
class MaskedLMTask(Task):
    """Pretrains (from scratch) or continues pretraining (domain adaptation) a BERT-style encoder.

    Example:
        >>> import transferkit as tk
        >>> tk.pretrain("masked-lm", data="corpus.txt", backbone="hf-config:bert", tokenizer="train",
        ...             model_config={"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2,
        ...                           "intermediate_size": 512}, output_dir="runs/mlm")  # doctest: +SKIP
        >>> tk.finetune("text-classification", data="reviews.csv", backbone="hf:runs/mlm")  # doctest: +SKIP
    """

    name = "masked-lm"
    Options = MaskedLMOptions
    # Pretraining from scratch (measured on a generated review corpus, validation perplexity after 2-3 epochs):
    # 2-layer/64: 1e-4 -> 117, 5e-4 -> 44.7, 1e-3 -> 40.6, 2e-3 -> 38.3; 4-layer/256: 5e-4 -> 39.6, 1e-3 -> 40.7,
    # 2e-3 -> 43.6. 5e-4 is the safe middle. Continued pretraining of a full-size checkpoint wants ~5e-5 (a warning
    # says so). All parameters train at `lr` (there is no backbone/head split in masked-LM).
    defaults = {
        "lr": 5e-4,
        "weight_decay": 0.01,
        "warmup": 0.06,
        "schedule": "linear",
        "epochs": 5,
        "batch_size": 32,
    }
    monitor = "val/perplexity"
    monitor_mode = "min"
    modality = "text"

    def __init__(self, config: FinetuneConfig, options: MaskedLMOptions | None = None) -> None:
        super().__init__(config, options)
        self.tokenizer: Any = None
        self.max_length: int | None = None
        self.spec = None
        self.collator = None
        self.stats: dict[str, int] = {}

    # --- data -------------------------------------------------------------------------------------------------
    def _documents(self, source: Any) -> list[str]:
        from ..data.text import read_documents

        return read_documents(source, text_column=self.options.text_column, empty_texts=self.options.empty_texts)

    def read_data(self, data: Any) -> dict[str, Any]:
        """Reads the documents of each split; without a val split, `val_fraction` of whole documents is held out."""
        sources = self._split_sources(data)
        train_docs = self._documents(sources["train"])
        val_docs = self._documents(sources["val"]) if "val" in sources else None
        test_docs = self._documents(sources["test"]) if "test" in sources else None
        if val_docs is None and len(train_docs) >= 10:  # hold out whole documents: no leakage between splits
            perm = np.random.default_rng(self.config.seed).permutation(len(train_docs))
            k = max(1, round(len(train_docs) * self.config.val_fraction))
            val_docs = [train_docs[i] for i in sorted(perm[:k])]
            train_docs = [train_docs[i] for i in sorted(perm[k:])]
        return {"train": train_docs, "val": val_docs, "test": test_docs, "given_val": "val" in sources}

    def data_fingerprint(self, raw: Any) -> str:
        return fingerprint(raw["train"])

    def describe_data(self, raw: Any) -> dict[str, Any]:
        sizes = {k: len(raw[k]) for k in ("train", "val", "test") if raw.get(k) is not None}
        return {"splits": sizes, "note": "documents"}

    def _setup_tokenizer(self, train_docs: Sequence[str]) -> Any:
        from ..backbones.hf_adapter import resolve_max_length

        self.spec = resolve_backbone(self.config.backbone, self.options)
        if self.spec is None:
            raise ConfigError(
                "masked-lm needs a backbone name or config (hf:..., hf-config:..., or a dict), not a "
                "ready-made backbone module."
            )
        fresh = self.spec.source == "hf-config" or self.config.pretrained is False
        self.tokenizer, hf_config = make_tokenizer(
            self.spec, self.options, train_docs, fresh=fresh, config=self.config, keep_in=self.config.output_dir
        )
        if not fresh and isinstance(self.config.lr, float) and self.config.lr > 2e-4:
            warnings.warn(
                f"Continued pretraining of {self.spec.display} at lr={self.config.lr:g}, the from-scratch default: "
                "pretrained checkpoints usually continue at 2e-5 to 1e-4 (e.g. lr=5e-5) so they keep what they know.",
                stacklevel=3,
            )
        self.max_length = resolve_max_length(
            self.options.max_length, 128, hf_config, self.tokenizer, self.spec.display
        )

    def build_datasets(self, raw: Any) -> Splits:
        """Cuts every split into blocks of `max_length` tokens; held-out blocks get fixed masks."""
        train_blocks = self._blocks(raw["train"], "training")
        val_docs, given_val = raw["val"], raw["given_val"]
        val_blocks = self._blocks(val_docs, "validation", allow_short=not given_val) if val_docs is not None else None
        if val_blocks is None or val_blocks.shape[0] == 0:  # too little held-out text: hold out blocks instead
            k = max(1, round(train_blocks.shape[0] * self.config.val_fraction)) if train_blocks.shape[0] >= 2 else 0
            val_blocks, train_blocks = (
                train_blocks[train_blocks.shape[0] - k :],
                train_blocks[: train_blocks.shape[0] - k],
            )
        if self.options.max_val_blocks and val_blocks.shape[0] > self.options.max_val_blocks:
            val_blocks = val_blocks[: self.options.max_val_blocks]
        self.stats = {
            "train_blocks": int(train_blocks.shape[0]),
            "val_blocks": int(val_blocks.shape[0]),
            "train_tokens": int(train_blocks.numel()),
        }
        val = self._fixed_masks(val_blocks, seed=self.config.seed) if val_blocks.shape[0] else None
        test = None
        if raw["test"] is not None:
            test = self._fixed_masks(self._blocks(raw["test"], "test"), seed=self.config.seed + 1)
        return Splits(train=self._dataset(train_blocks), val=val, test=test, labels=[])

    def _split_sources(self, data: Any) -> dict[str, Any]:
        from ..data.splits import canonical_split, is_split_dict
        from ..data.text import TABLE_SUFFIXES, TEXT_SUFFIXES, resolve_splits

        if is_split_dict(data):
            return resolve_splits(data)
        if isinstance(data, (str, Path)) and Path(data).is_dir():
            has_split_files = any(
                canonical_split(f.stem) == "train" and f.suffix.lower() in TEXT_SUFFIXES + TABLE_SUFFIXES
                for f in Path(data).iterdir()
            )
            if has_split_files:
                return resolve_splits(data, suffixes=TEXT_SUFFIXES + TABLE_SUFFIXES)
        return {"train": data}

    def _blocks(self, docs: Sequence[str], what: str, allow_short: bool = False) -> torch.Tensor:
        """Tokenise (with [CLS]/[SEP] around each document), concatenate, cut into (n, max_length) blocks."""
        ids: list[list[int]] = []
        for start in range(0, len(docs), 4096):
            enc = self.tokenizer(
                list(docs[start : start + 4096]),
                add_special_tokens=True,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
            ids += enc["input_ids"]
        total = sum(len(x) for x in ids)
        flat = torch.from_numpy(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total))
        n = total // self.max_length
        if n == 0:
            if allow_short:
                return torch.empty(0, self.max_length, dtype=torch.long)
            raise DataError(
                f"The {what} text has only {total} tokens, less than one block of max_length={self.max_length}. "
                "Add text or pass a smaller max_length."
            )
        return flat[: n * self.max_length].view(n, self.max_length).clone()

    def _collator(self):
        """transformers' masking collator (80% [MASK], 10% random, 10% unchanged), built on first use."""
        if self.collator is None:
            from transformers import DataCollatorForLanguageModeling

            self.collator = DataCollatorForLanguageModeling(
                self.tokenizer, mlm_probability=self.options.mlm_probability
            )
        return self.collator

    def _special(self, blocks: torch.Tensor) -> torch.Tensor:
        return torch.isin(blocks, torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long))

    def _dataset(self, blocks: torch.Tensor) -> BlockDataset:
        return BlockDataset(blocks, self._special(blocks))

    def _fixed_masks(self, blocks: torch.Tensor, seed: int) -> BlockDataset:
        """Masks held-out blocks once, with a fixed seed, without touching the global RNG stream."""
        special = self._special(blocks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            masked, labels = self._collator().torch_mask_tokens(blocks.clone(), special_tokens_mask=special)
        return BlockDataset(blocks, special, masked, labels)

    def eval_dataset(self, data: Any) -> Dataset:
        """Held-out blocks from `data` with fixed masks (used by ``tk.evaluate``)."""
        sources = self._split_sources(data)
        docs = self._documents(sources.get("test", sources.get("val", sources["train"])))
        return self._fixed_masks(self._blocks(docs, "evaluation"), seed=self.config.seed + 1)

    def make_loader(self, dataset: Dataset, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        collate = MaskingCollate(dataset, self._collator())  # masks depend on the dataset (fixed for held-out blocks)
        return self.dataloader(dataset, split, collate, batch_size=batch_size, shuffle=shuffle)

    # --- model ------------------------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        from ..models import create_model

        if self.tokenizer is None:
            self._setup_tokenizer(raw["train"] if raw is not None else [])
        model = create_model(self.spec, kind="masked-lm", pretrained=self.config.pretrained, tokenizer=self.tokenizer)
        self.tokenizer = model.tokenizer
        if self.max_length and self.max_length > getattr(model.config, "max_position_embeddings", 10**9):
            raise ConfigError(f"max_length={self.max_length} exceeds the model's max_position_embeddings.")
        return model

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        from ..models.masked_lm import MaskedLMModel

        input_ids, labels = batch["input_ids"], batch["labels"]
        inner = getattr(model, "module", model)  # DDP-wrapped or not
        if isinstance(inner, MaskedLMModel):
            logits, targets, mask = model(input_ids, labels)
        else:
            mask = labels != -100
            logits = model(input_ids=input_ids, return_dict=True).logits[mask]
            targets = labels[mask]
        return logits, targets, mask

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets, _ = self._forward(model, batch)
        if targets.numel() == 0:  # a batch with no masked token (tiny blocks) still needs a graph for backward
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets)

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[None, Any]:
        """No per-sample loss: the metrics compute the token-weighted loss (and perplexity) themselves."""
        logits, targets, mask = self._forward(model, batch)
        token_loss = F.cross_entropy(logits.float(), targets, reduction="none")
        rows = mask.nonzero()[:, 0]
        input_ids = batch["input_ids"]
        sums = torch.zeros(input_ids.shape[0], device=input_ids.device).index_add_(0, rows, token_loss.detach())
        return None, (sums, mask.sum(1))

    def new_metrics(self, split: str = "val"):
        from ..metrics.language import PerplexityMetrics

        return PerplexityMetrics()

    # --- artifacts and inference -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "labels": [],
            "max_length": self.max_length,
            "mlm_probability": self.options.mlm_probability,
            **self.stats,
        }

    def save_extra(self, model: nn.Module, output_dir: str) -> None:
        """Makes `output_dir` a transformers model folder: config.json and the tokenizer next to the engine's
        model.safetensors (whose keys are the transformers model's own)."""
        hf_model = getattr(model, "hf_model", model)
        config = hf_model.config
        config.architectures = [type(hf_model).__name__]
        config.save_pretrained(output_dir)
        self.tokenizer.save_pretrained(output_dir)

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> MaskedLMTask:
        from ..data.tokenizer import load_tokenizer

        folder = str(config.output_dir)
        options = MaskedLMOptions(
            max_length=state.get("max_length"), mlm_probability=state.get("mlm_probability", 0.15)
        )
        task = cls(config.replace(backbone=f"hf:{folder}", pretrained=False), options)
        task.tokenizer = load_tokenizer(folder)
        task.max_length = state.get("max_length") or 128
        task.spec = resolve_backbone(task.config.backbone, options)
        return task

    @torch.no_grad()
    def predict(
        self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int, top_k: int = 5
    ) -> list[dict]:
        """Fill-mask: for each text, the `top_k` tokens (with probabilities) at every mask token.

        Returns one ``{"predictions": [[{"token": "good", "score": 0.41}, ...], ...]}`` per text (one inner list
        per mask token, in order); a text without a mask token gets an empty list.
        """
        tok = self.tokenizer
        if tok.mask_token is None:
            raise ConfigError("This tokenizer has no mask token; fill-mask prediction is impossible.")
        texts = [str(t) for t in inputs]
        was_training = model.training
        model.eval()
        results = []
        for start in range(0, len(texts), batch_size):
            enc = tok(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            mask = enc["input_ids"] == tok.mask_token_id
            from ..models.masked_lm import MaskedLMModel

            if isinstance(model, MaskedLMModel):
                hidden = model.hidden_states(enc["input_ids"], enc["attention_mask"])
                logits = getattr(model, model.head_name)(hidden[mask])
            else:
                logits = model(**enc, return_dict=True).logits[mask]
            probs = logits.float().softmax(-1).cpu()
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1) if probs.numel() else None
            counts = mask.sum(1).tolist()
            k = 0
            for c in counts:
                preds = []
                for _ in range(c):
                    preds.append(
                        [
                            {"token": tok.convert_ids_to_tokens(int(i)), "score": float(s)}
                            for s, i in zip(top.values[k], top.indices[k])
                        ]
                    )
                    k += 1
                results.append({"predictions": preds})
        model.train(was_training)
        if not any(r["predictions"] for r in results):
            warnings.warn(f"No input contains the mask token {tok.mask_token!r}; nothing to predict.", stacklevel=2)
        return results
