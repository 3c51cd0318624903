"""Label vocabularies: one canonical key per raw label, one sort rule, and labels handed back as they came in.

Shared by every task with class names (image and text classification now; segmentation and detection class
names too). Names are stored as strings so they survive JSON; `LabelMap.decode` gives a label back in the type the
user used (an int stays an int).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

_INT_LIKE = re.compile(r"[+-]?\d+(\.0*)?")


def label_key(value: Any) -> str:
    """Canonical string of a raw label: ints, integral floats and their strings map to one key (1, 1.0, "1").

    Example:
        >>> label_key(1), label_key("1.0"), label_key(" cat ")
        ('1', '1', 'cat')
    """
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if _INT_LIKE.fullmatch(text):
        return str(int(text.split(".")[0]))
    return text


def is_int_label(value: Any) -> bool:
    """True for Python/numpy integers (not bools): labels that should come back as ints."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    return isinstance(value, int) and not isinstance(value, bool)


def sort_label_names(names: Sequence[str]) -> list[str]:
    """The one sort rule: numeric when every name is an integer ('2' < '10'), alphabetical otherwise.

    Example:
        >>> sort_label_names(["10", "2", "1"]), sort_label_names(["dog", "cat"])
        (['1', '2', '10'], ['cat', 'dog'])
    """
    names = list(names)
    if names and all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


class LabelMap:
    """Label name <-> class id. Names are kept as strings (also for int labels) so they survive JSON;
    `value_type` remembers whether the user's labels were ints, so predictions hand back ints.

    Example:
        >>> lm = LabelMap.fit(["pos", "neg", "pos"])
        >>> lm.names, lm.encode_one("pos"), lm.decode(1)
        (['neg', 'pos'], 1, 'pos')
        >>> LabelMap.fit([3, 1, 3]).decode(0)
        1
    """

    def __init__(self, names: Sequence[str], value_type: str = "str") -> None:
        if value_type not in ("str", "int"):
            raise ConfigError(f"value_type={value_type!r} must be 'str' or 'int'.")
        self.names = [str(n) for n in names]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.value_type = value_type

    @classmethod
    def fit(cls, labels: Sequence[Any], names: Sequence[Any] | None = None) -> LabelMap:
        """From the training labels, or from `names` (a fixed order) which must cover them."""
        source = list(names) if names is not None else list(labels)
        value_type = "int" if source and all(is_int_label(v) for v in source) else "str"
        if names is not None:
            fixed = [label_key(n) for n in names]
            if len(set(fixed)) != len(fixed):
                raise ConfigError(f"label_names={list(names)!r} lists a label twice.")
            return cls(fixed, value_type)
        return cls(sort_label_names(list(dict.fromkeys(label_key(v) for v in labels))), value_type)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Any, split: str, source: str = "<data>", lines: Sequence[int] | None = None) -> list[int]:
        """Class ids of `labels` (a sequence, or records with ``labels``/``source``/``lines``); an unknown label
        raises naming the source, the line and the known labels."""
        if hasattr(labels, "labels") and not isinstance(labels, Sequence):
            source, lines, labels = labels.source, labels.lines, labels.labels or []
        out = []
        for i, value in enumerate(labels):
            idx = self.index.get(label_key(value))
            if idx is None:
                line = lines[i] if lines else i + 1
                known = ", ".join(map(repr, self.names[:20])) + (", ..." if len(self.names) > 20 else "")
                if split == "train":
                    fix = "Add it to label_names or fix the label."
                elif split in ("val", "test"):
                    fix = (
                        "Add examples of it to the training data, fix the typo, or pass label_names=[...] listing "
                        "every class."
                    )
                else:  # data read against a trained model (tk.evaluate)
                    fix = "The model was not trained on it: fix the typo, or remove those rows."
                where = f"the {split} split" if split in ("train", "val", "test") else f"the {split} data"
                raise DataError(
                    f"{source}: line {line} has label {value!r} in {where}, which the training data does not have "
                    f"(known labels: {known}). {fix}"
                )
            out.append(idx)
        return out

    def encode_one(self, value: Any) -> int:
        return self.index[label_key(value)]

    def decode(self, index: int) -> str | int:
        """The label of class `index`, as the user gave it (int labels come back as ints)."""
        name = self.names[index]
        return int(name) if self.value_type == "int" else name

    def state(self) -> dict[str, Any]:
        return {"labels": list(self.names), "label_type": self.value_type}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabelMap:
        return cls(state["labels"], state.get("label_type", "str"))
