"""Tokenised text datasets and batching: tokenise once, pad per batch, group similar lengths.

Padding every batch only to its own longest sequence, and putting sequences of similar length in the same batch,
is where most of the speed of text training on a CPU comes from (attention cost grows with the padded length).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


def tokenize_texts(
    tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int, chunk: int = 4096
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Token ids (and token type ids for pairs) of each text, truncated to `max_length`, unpadded.

    Example:
        >>> ids, types = tokenize_texts(tok, ["a good film"], None, max_length=32)  # doctest: +SKIP
    """
    ids: list[torch.Tensor] = []
    types: list[torch.Tensor] | None = [] if pairs is not None else None
    for start in range(0, len(texts), chunk):  # chunks keep peak memory flat on large files
        part = list(texts[start : start + chunk])
        part_pairs = list(pairs[start : start + chunk]) if pairs is not None else None
        enc = tokenizer(
            part,
            part_pairs,
            truncation=True if pairs is None else "longest_first",
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=pairs is not None,
        )
        ids += [torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]]
        if types is not None:
            tt = enc.get("token_type_ids")
            if tt is None:  # tokenizers without segment ids (RoBERTa-style) mark pairs with separators only
                types += [torch.zeros(len(x), dtype=torch.long) for x in enc["input_ids"]]
            else:
                types += [torch.tensor(x, dtype=torch.long) for x in tt]
    return ids, types


class TokenizedTextDataset(Dataset):
    """Pre-tokenised examples: ``input_ids`` (+ ``token_type_ids``) per item and an optional class id.

    Items are ``(index, input_ids, token_type_ids or None, label or -1)``; :func:`pad_collate` batches them.
    """

    def __init__(
        self,
        input_ids: list[torch.Tensor],
        token_type_ids: list[torch.Tensor] | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.labels = torch.as_tensor(list(labels), dtype=torch.long) if labels is not None else None
        self.lengths = [len(x) for x in input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int):
        tt = self.token_type_ids[i] if self.token_type_ids is not None else None
        label = int(self.labels[i]) if self.labels is not None else -1
        return self.input_ids[i], tt, label


class PadCollate:
    """Pads a list of dataset items to the batch's longest sequence.

    Returns ``{"input_ids", "attention_mask", ["token_type_ids"], ["labels"]}`` (LongTensors).
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor | None, int]]) -> dict[str, torch.Tensor]:
        ids = [it[0] for it in items]
        lengths = torch.tensor([len(x) for x in ids])
        width = int(lengths.max())
        if self.multiple:
            width = math.ceil(width / self.multiple) * self.multiple
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        token_types = torch.zeros((len(ids), width), dtype=torch.long) if items[0][1] is not None else None
        for row, (x, tt, _) in enumerate(items):
            input_ids[row, : len(x)] = x
            if token_types is not None:
                token_types[row, : len(tt)] = tt
        batch = {"input_ids": input_ids, "attention_mask": (torch.arange(width) < lengths[:, None]).long()}
        if token_types is not None:
            batch["token_type_ids"] = token_types
        if items[0][2] >= 0:
            batch["labels"] = torch.tensor([it[2] for it in items], dtype=torch.long)
        return batch


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar-length items, so padding stays small.

    Training (``shuffle=True``): each epoch shuffles all items (dropping a random remainder with `drop_last`), cuts
    them into mega-batches of ``batch_size * mega_batch`` items, sorts each mega-batch by length, cuts it into
    batches and shuffles the batch order: batches stay random while padding drops. The order comes from
    `generator` alone (see the note in ``__init__``).
    Evaluation (``shuffle=False``): all items sorted by length (order does not change the metrics).

    Example:
        >>> sampler = LengthGroupedBatchSampler([5, 50, 6, 49], batch_size=2, shuffle=False)
        >>> list(sampler)
        [[1, 3], [2, 0]]
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        mega_batch: int = 50,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.lengths = torch.as_tensor(list(lengths))
        # The shuffle draws only from this generator: give the DataLoader the same object, and the engine's per-epoch
        # reseed (seed + epoch) makes every epoch's order reproducible, identical on all processes, and resumable.
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mega = max(1, mega_batch) * batch_size
        # as the engine's default loaders: a short last training batch gives a noisy step, so it is dropped (a
        # different remainder each epoch, since the order is reshuffled) unless the data is smaller than a batch
        self.drop_last = drop_last and len(self.lengths) > batch_size

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = torch.argsort(self.lengths, descending=True, stable=True).tolist()
            yield from (order[i : i + bs] for i in range(0, n, bs))
            return
        gen = self.generator
        perm = torch.randperm(n, generator=gen)
        if self.drop_last:
            perm = perm[: n - n % bs]
        batches: list[list[int]] = []
        for start in range(0, n, self.mega):
            mega = perm[start : start + self.mega]
            mega = mega[torch.argsort(self.lengths[mega], descending=True, stable=True)].tolist()
            batches += [mega[i : i + bs] for i in range(0, len(mega), bs)]
        for j in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[j]


def sort_by_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of items sorted by length (for inference)."""
    return list(LengthGroupedBatchSampler(lengths, batch_size, shuffle=False))


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
