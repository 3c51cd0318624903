"""Text readers: CSV / TSV / JSONL tables, plain-text corpora, folders and in-memory dicts.

Every reader decodes UTF-8 itself so that a bad byte is reported with its file and line, checks that the
requested columns exist (listing the columns it found), applies the empty-text policy, and remembers each
record's source line so that later errors (an unknown label in the validation file) can name it.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .labels import LabelMap, label_key, sort_label_names  # noqa: F401 - re-exported: the text tasks' label names
from .splits import canonical_split, is_split_dict, normalise_splits

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".text")
EMPTY_POLICIES = ("skip", "error")


@dataclass
class TextRecords:
    """Rows of one split: texts, optional second texts (pairs), optional raw labels, and where each row came from.

    `lines[i]` is the 1-based line of row i in `source` (for dict inputs: the 1-based position in the lists).
    """

    texts: list[str]
    pairs: list[str] | None = None
    labels: list[Any] | None = None
    source: str = "<data>"
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextRecords:
        """The rows at `indices`, in that order."""
        return TextRecords(
            texts=[self.texts[i] for i in indices],
            pairs=[self.pairs[i] for i in indices] if self.pairs is not None else None,
            labels=[self.labels[i] for i in indices] if self.labels is not None else None,
            source=self.source,
            lines=[self.lines[i] for i in indices] if self.lines else [],
        )


# --- decoding ---------------------------------------------------------------------------------------------------


def read_utf8(path: str | Path) -> str:
    """Reads a whole file as UTF-8 (a leading BOM is dropped).

    Raises:
        DataError: the file is missing, is a folder, or holds bytes that are not UTF-8 (the message names the line).

    Example:
        >>> read_utf8("corpus.txt")[:20]  # doctest: +SKIP
        'the first document i'
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{str(p)!r} does not exist. Check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise DataError(f"{str(p)!r} is a folder; a file was expected here.")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        bad = raw[e.start : e.start + 4]
        raise DataError(
            f"{p}: line {line} is not valid UTF-8 (byte {bad[:1]!r} at offset {e.start}). Re-save the file as "
            "UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        ) from None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


# --- tables -----------------------------------------------------------------------------------------------------


def _rows_csv(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = read_utf8(path)
    if not text.strip():
        raise DataError(f"{path} is empty. It needs a header row and at least one data row.")
    csv.field_size_limit(2**31 - 1)  # long documents must not trip the 128 KiB default
    # TSV files conventionally carry no quoting (GLUE-style); a quote inside a TSV text is part of the text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}: line 1 (header) cannot be parsed: {e}.") from None
    header = [h.strip() for h in header]
    rows = []
    start = reader.line_num + 1
    try:
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):
                start = reader.line_num + 1
                continue
            if len(values) > len(header):
                raise DataError(
                    f"{path}: line {start} has {len(values)} fields but the header has {len(header)} "
                    f"({', '.join(header)}). Quote texts that contain {delimiter!r}"
                    + (" or use a .csv file with quoting." if delimiter == "\t" else ".")
                )
            rows.append((start, dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num} cannot be parsed as CSV: {e}.") from None
    return header, rows


def _rows_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = read_utf8(path)
    if not text.strip():
        raise DataError(f'{path} is empty. It needs one JSON object per line, e.g. {{"text": ..., "label": ...}}.')
    rows: list[tuple[int, dict[str, Any]]] = []
    if text.lstrip().startswith("["):  # a .json file holding one array of objects
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno} is not valid JSON: {e.msg}.") from None
        for i, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise DataError(f"{path}: item {i} of the JSON array is {type(item).__name__}, not an object.")
            rows.append((i, item))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not valid JSON ({e.msg}): {line[:80]!r}.") from None
            if not isinstance(item, dict):
                raise DataError(f"{path}: line {n} is a JSON {type(item).__name__}, not an object with named fields.")
            rows.append((n, item))
    if not rows:
        raise DataError(f"{path} holds no records.")
    header: dict[str, None] = {}
    for _, item in rows[:1000]:
        header.update(dict.fromkeys(item))
    return list(header), rows


def read_table(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Reads a CSV, TSV, JSONL or JSON-array file into ``(columns, [(line, row_dict), ...])``.

    Example:
        >>> columns, rows = read_table("train.csv")  # doctest: +SKIP
        >>> columns
        ['text', 'label']
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return _rows_csv(p, ",")
    if suffix == ".tsv":
        return _rows_csv(p, "\t")
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _rows_jsonl(p)
    if not p.exists():
        read_utf8(p)  # raises the "does not exist" error
    raise DataError(f"{p}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(TABLE_SUFFIXES)}.")


def _missing_column(source: str, kind: str, column: str, found: Sequence[str], option: str) -> DataError:
    return DataError(
        f"{source} has no {kind} column {column!r}; columns found: {', '.join(map(repr, found)) or '(none)'}. "
        f"Pass {option}='<name>' to use another column."
    )


def apply_empty_policy(records: TextRecords, policy: str, what: str = "text") -> TextRecords:
    """Drops rows whose text (or text pair) is empty or whitespace-only (``"skip"``, with a warning) or raises
    (``"error"``). The message counts them and names the first lines."""
    if policy not in EMPTY_POLICIES:
        raise ConfigError(f"empty_texts={policy!r} is invalid; expected one of {EMPTY_POLICIES}.")
    bad = [
        i
        for i in range(len(records))
        if _is_empty(records.texts[i]) or (records.pairs is not None and _is_empty(records.pairs[i]))
    ]
    if not bad:
        return records
    lines = ", ".join(str(records.lines[i]) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    msg = (
        f"{records.source}: {len(bad)} of {len(records)} rows have an empty or whitespace-only {what} (lines {lines})"
    )
    if policy == "error":
        raise DataError(msg + ". Remove them or pass empty_texts='skip' to drop them with a warning.")
    if len(bad) == len(records):
        raise DataError(msg + "; nothing is left to use.")
    warnings.warn(msg + "; they are skipped (empty_texts='skip').", stacklevel=3)
    keep = sorted(set(range(len(records))) - set(bad))
    return records.subset(keep)


def records_from_rows(
    rows: list[tuple[int, Mapping[str, Any]]],
    columns: Sequence[str],
    source: str,
    *,
    text_column: str,
    label_column: str | None,
    text_pair_column: str | None,
    require_label: bool,
) -> TextRecords:
    """Picks the text/pair/label columns out of row dicts, with errors that name the source, line and columns."""
    if text_column not in columns:
        raise _missing_column(source, "text", text_column, columns, "text_column")
    if text_pair_column is not None and text_pair_column not in columns:
        raise _missing_column(source, "text pair", text_pair_column, columns, "text_pair_column")
    has_label = label_column is not None and label_column in columns
    if require_label and not has_label:
        raise _missing_column(source, "label", str(label_column), columns, "label_column")
    texts, pairs, labels, lines = [], [] if text_pair_column else None, [] if has_label else None, []
    for line, row in rows:
        if text_column not in row:  # JSONL rows may lack a key that other rows have
            raise DataError(f"{source}: line {line} has no {text_column!r} field (fields: {', '.join(row)}).")
        texts.append("" if row[text_column] is None else str(row[text_column]))
        if pairs is not None:
            value = row.get(text_pair_column)
            pairs.append("" if value is None else str(value))
        if labels is not None:
            value = row.get(label_column)
            if _is_empty(value):
                raise DataError(f"{source}: line {line} has no {label_column!r} value. Every row needs a label.")
            labels.append(value)
        lines.append(line)
    return TextRecords(texts=texts, pairs=pairs, labels=labels, source=source, lines=lines)


def records_from_columns(
    columns: Mapping[str, Sequence[Any]],
    *,
    text_column: str,
    label_column: str | None,
    text_pair_column: str | None,
    require_label: bool,
    source: str = "<dict>",
) -> TextRecords:
    """Builds records from an in-memory dict of equal-length lists, e.g. ``{"text": [...], "label": [...]}``."""
    lengths = {k: len(v) for k, v in columns.items() if isinstance(v, Sequence) and not isinstance(v, str)}
    if len(lengths) != len(columns):
        bad = [k for k in columns if k not in lengths]
        raise DataError(f"{source}: column(s) {', '.join(map(repr, bad))} are not lists; pass a dict of lists.")
    if len(set(lengths.values())) > 1:
        raise DataError(f"{source}: the lists differ in length ({lengths}); every column needs one value per row.")
    n = next(iter(lengths.values()), 0)
    if n == 0:
        raise DataError(f"{source} holds no rows (empty lists).")
    rows = [(i + 1, {k: v[i] for k, v in columns.items()}) for i in range(n)]
    return records_from_rows(
        rows,
        list(columns),
        source,
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        require_label=require_label,
    )


def read_records(
    source: Any,
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    require_label: bool = True,
    empty_texts: str = "skip",
    auto_pair_column: str | None = "text_pair",
) -> TextRecords:
    """Reads one split from a CSV/TSV/JSONL file, a dict of lists or a list of row dicts.

    Args:
        source: a file path, ``{"text": [...], "label": [...]}``, or ``[{"text": ..., "label": ...}, ...]``.
        text_column: column with the text.
        label_column: column with the label (strings or ints); None for unlabelled data.
        text_pair_column: column with a second text (NLI-style pairs); None: use `auto_pair_column` if present.
        require_label: raise if the label column is missing.
        empty_texts: ``"skip"`` (drop with a warning) or ``"error"`` for empty / whitespace-only texts.

    Example:
        >>> recs = read_records({"text": ["good", "bad"], "label": ["pos", "neg"]})
        >>> recs.texts, recs.labels
        (['good', 'bad'], ['pos', 'neg'])
    """
    if isinstance(source, Mapping):
        records = None
        cols = list(source)
        pair = text_pair_column or (auto_pair_column if auto_pair_column in cols else None)
        records = records_from_columns(
            source,
            text_column=text_column,
            label_column=label_column,
            text_pair_column=pair,
            require_label=require_label,
        )
    elif (
        isinstance(source, Sequence)
        and not isinstance(source, (str, bytes))
        and source
        and all(isinstance(r, Mapping) for r in source)
    ):
        cols = list(dict.fromkeys(k for r in source[:1000] for k in r))
        pair = text_pair_column or (auto_pair_column if auto_pair_column in cols else None)
        records = records_from_rows(
            [(i + 1, r) for i, r in enumerate(source)],
            cols,
            "<list of rows>",
            text_column=text_column,
            label_column=label_column,
            text_pair_column=pair,
            require_label=require_label,
        )
    elif isinstance(source, (str, Path)):
        columns, rows = read_table(source)
        pair = text_pair_column or (auto_pair_column if auto_pair_column in columns else None)
        records = records_from_rows(
            rows,
            columns,
            str(source),
            text_column=text_column,
            label_column=label_column,
            text_pair_column=pair,
            require_label=require_label,
        )
    else:
        raise DataError(
            f"data of type {type(source).__name__} is not understood; pass a CSV/TSV/JSONL path, a dict of lists "
            "such as {'text': [...], 'label': [...]}, or a dict of split -> one of those."
        )
    return apply_empty_policy(records, empty_texts)


# --- splits -----------------------------------------------------------------------------------------------------


def resolve_splits(data: Any, suffixes: Sequence[str] = TABLE_SUFFIXES) -> dict[str, Any]:
    """Maps `data` to ``{"train": src, "val": src?, "test": src?}``.

    `data` is a file, a dict of lists (train only), a dict of split -> file / dict of lists, or a folder holding
    ``train.<ext>`` and optionally ``val``/``valid``/``validation``/``dev`` and ``test`` files.

    Example:
        >>> resolve_splits({"train": "a.csv", "validation": "b.csv"})
        {'train': 'a.csv', 'val': 'b.csv'}
    """
    if is_split_dict(data):
        return normalise_splits(data)
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        folder = Path(data)
        found: dict[str, Path] = {}
        for f in sorted(folder.iterdir()):
            split = canonical_split(f.stem)
            if split and f.suffix.lower() in suffixes and f.is_file():
                if split in found:
                    raise DataError(f"{folder} has two files for the {split!r} split: {found[split].name}, {f.name}.")
                found[split] = f
        if "train" not in found:
            names = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "(empty folder)"
            raise DataError(
                f"{folder} holds no train file. Expected train{suffixes[0]} (and optionally val/test) with one of "
                f"{', '.join(suffixes)}; found: {names}."
            )
        return {k: str(v) for k, v in found.items()}
    return {"train": data}


# --- plain-text corpora (masked-LM) -----------------------------------------------------------------------------


def read_lines(path: str | Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file (one document per line; blank lines only separate documents).

    Example:
        >>> docs = read_lines("corpus.txt")  # doctest: +SKIP
    """
    text = read_utf8(path)
    docs = [line.strip() for line in text.splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"{path} is empty (no non-blank lines). Put one document per line.")
    return docs


def read_documents(source: Any, *, text_column: str = "text", empty_texts: str = "skip") -> list[str]:
    """Documents for language modelling from one source.

    Args:
        source: a .txt file (one document per line), a folder of .txt files (read recursively, in sorted order),
            a CSV/TSV/JSONL file with a `text_column`, a list of strings, or a dict of lists with `text_column`.
        text_column: column holding the text in tables and dicts.
        empty_texts: policy for empty texts in tables/dicts (blank lines of .txt files are always skipped).

    Example:
        >>> read_documents(["first document", "second one"])
        ['first document', 'second one']
    """
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
            if not files:
                raise DataError(f"{p} holds no .txt files. Put the corpus there as .txt files, one document per line.")
            docs: list[str] = []
            for f in files:
                text = read_utf8(f)
                docs += [line.strip() for line in text.splitlines() if line.strip()]
            if not docs:
                raise DataError(f"The .txt files under {p} are all empty.")
            return docs
        if p.suffix.lower() in TEXT_SUFFIXES or (p.exists() and p.suffix.lower() not in TABLE_SUFFIXES):
            return read_lines(p)
        recs = read_records(
            p,
            text_column=text_column,
            label_column=None,
            require_label=False,
            empty_texts=empty_texts,
            auto_pair_column=None,
        )
        return recs.texts
    if isinstance(source, Sequence) and not isinstance(source, bytes) and all(isinstance(s, str) for s in source):
        if not source:
            raise DataError("The list of documents is empty.")
        recs = TextRecords(texts=list(source), source="<list of texts>", lines=list(range(1, len(source) + 1)))
        return apply_empty_policy(recs, empty_texts).texts
    recs = read_records(
        source,
        text_column=text_column,
        label_column=None,
        require_label=False,
        empty_texts=empty_texts,
        auto_pair_column=None,
    )
    return recs.texts
