"""`rank_backbones`: score candidate backbones on the target data before fine-tuning any of them.

Each candidate is created once (with its own weights), put in eval mode, and run under ``torch.inference_mode`` over
a class-stratified sample of the target data, preprocessed with *that backbone's own* data config (input size, mean,
std: EfficientNet-Lite expects [-1, 1] inputs, ImageNet ResNets ImageNet statistics) or its own tokenizer. The
pooled features are then scored with the transferability scores of :mod:`transferkit.ranking.scores`. Ranking N
backbones costs N forward passes over at most ``max_samples`` samples, against ``epochs`` forward and backward
passes over the whole training set for one fine-tune.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, UnknownNameError, WeightsError
from .scores import SCORES, score

__all__ = ["AUTO_METHOD", "Candidate", "RankingResult", "parse_candidates", "rank_backbones", "resolve_methods"]

# Chosen by benchmarks/backbone_ranking.py: the best mean weighted Kendall tau (see rank_backbones' docstring).
AUTO_METHOD = "hscore"
TASKS = ("image-classification", "text-classification")
CSV_FILE = "ranking.csv"
JSON_FILE = "ranking.json"
NOTE = "Scores compare these backbones on this data set only; they are not comparable across data sets or methods."
# Decoded images kept in memory for all candidates (larger samples are decoded again for each candidate).
_IMAGE_CACHE_BYTES = 1 << 30


# --------------------------------------------------------------------------------------------------------------
# Candidates and methods
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One backbone to rank: its name, its weights and the label it gets in the table.

    Attributes:
        backbone: a source-prefixed name, e.g. ``"timm:tf_efficientnet_lite0"`` or ``"hf:models/minilm"``.
        pretrained: True (the library's weights), False (random init) or a local weights file or folder.
        name: the label in the table (unique within one ranking).
    """

    backbone: str
    pretrained: bool | str
    name: str


def _default_label(backbone: str, pretrained: bool | str) -> str:
    if pretrained is False:
        return f"{backbone} (random init)"
    if pretrained is True:
        return backbone
    path = Path(pretrained)
    # A run folder's model.safetensors says nothing: name it after its folder.
    stem = path.parent.name if path.stem in ("model", "pytorch_model", "weights") and path.parent.name else path.stem
    return f"{backbone} ({stem or path.name})"


def _check_pretrained(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, Path)) and str(value).strip():
        return str(value)
    raise ConfigError(f"{where}: pretrained={value!r} must be True, False or a path to a local weights file/folder.")


def parse_candidates(candidates: Any, pretrained: bool | str | Path = True) -> list[Candidate]:
    """Normalises the candidates of :func:`rank_backbones` to :class:`Candidate` objects.

    Accepted forms, mixed freely: ``"timm:resnet18"`` (weights from `pretrained`), ``("timm:resnet18", weights)``
    and ``{"backbone": "timm:resnet18", "pretrained": weights, "name": "label"}`` (``pretrained`` and ``name``
    optional). Labels default to the backbone name plus the weights file (or its folder for ``model.safetensors``);
    repeated labels get ``#2``, ``#3``.

    Raises:
        ConfigError: no candidates, a malformed entry, an unknown key, or two entries with the same given name.

    Example:
        >>> [c.name for c in parse_candidates(["timm:resnet18", ("timm:resnet18", "runs/digits/model.safetensors")])]
        ['timm:resnet18', 'timm:resnet18 (digits)']
    """
    if isinstance(candidates, (str, Mapping)) or not isinstance(candidates, Sequence) or not candidates:
        raise ConfigError(
            f"candidates={candidates!r} must be a non-empty list of backbones, e.g. ['timm:resnet18', "
            "('timm:tf_efficientnet_lite0', 'lite0.pth'), {'backbone': 'tv:mobilenet_v2', 'pretrained': 'mnv2.pth'}]."
        )
    default = _check_pretrained(pretrained, "rank_backbones")
    parsed: list[tuple[str, bool | str, str | None]] = []
    for i, entry in enumerate(candidates):
        where = f"candidates[{i}]"
        if isinstance(entry, str):
            backbone, weights, name = entry, default, None
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            backbone, weights, name = entry[0], _check_pretrained(entry[1], where), None
        elif isinstance(entry, Mapping):
            unknown = sorted(set(entry) - {"backbone", "pretrained", "name"})
            if unknown or not isinstance(entry.get("backbone"), str):
                raise ConfigError(
                    f"{where}={dict(entry)!r} must have a 'backbone' name and optionally 'pretrained' and 'name'"
                    + (f"; unknown key(s): {', '.join(map(str, unknown))}." if unknown else ".")
                )
            backbone = entry["backbone"]
            weights = _check_pretrained(entry["pretrained"], where) if "pretrained" in entry else default
            name = entry.get("name")
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ConfigError(f"{where}: name={name!r} must be a non-empty string.")
        else:
            raise ConfigError(
                f"{where}={entry!r} is not a candidate; pass a name such as 'timm:resnet18', a (name, weights) pair "
                "or a dict {'backbone': ..., 'pretrained': ..., 'name': ...}."
            )
        if not backbone.strip():
            raise ConfigError(f"{where}: the backbone name is empty.")
        parsed.append((backbone.strip(), weights, name))

    given = [n for _, _, n in parsed if n is not None]
    if len(given) != len(set(given)):
        dup = sorted({n for n in given if given.count(n) > 1})
        raise ConfigError(f"Candidate names must be unique; {dup} appear more than once.")
    out: list[Candidate] = []
    used = set(given)
    for backbone, weights, name in parsed:
        if name is None:
            base = name = _default_label(backbone, weights)
            n = 2
            while name in used:
                name, n = f"{base} #{n}", n + 1
        used.add(name)
        out.append(Candidate(backbone, weights, name))
    return out


def resolve_methods(method: str | Sequence[str]) -> list[str]:
    """The score names `method` asks for, the ranking one first: ``"auto"`` -> ``[AUTO_METHOD]``, ``"all"`` -> every
    score with the auto one first, a name or a list of names as given.

    Example:
        >>> resolve_methods(["knn", "logme"])
        ['knn', 'logme']
    """
    from ..registry import unknown_name_message

    names = [method] if isinstance(method, str) else list(method) if isinstance(method, Sequence) else None
    if not names:
        raise ConfigError(f"method={method!r} must be 'auto', 'all', a score name or a list of them.")
    out: list[str] = []
    for m in names:
        if m == "auto":
            m = AUTO_METHOD
        if m == "all":
            expanded = [AUTO_METHOD] + [s for s in SCORES if s != AUTO_METHOD]
        elif isinstance(m, str) and m in SCORES:
            expanded = [m]
        else:
            raise ConfigError(
                unknown_name_message("ranking method", str(m), ["auto", "all", *SCORES], hint="Or a list of them.")
            )
        out += [e for e in expanded if e not in out]
    return out


def _check_candidate(c: Candidate, task: str) -> None:
    """Cheap checks before any backbone is built: a known source that serves `task`, a known name, existing weights."""
    import importlib

    from ..backbones import split_name
    from ..registry import BACKBONE_SOURCES

    try:
        source, rest = split_name(c.backbone)
    except UnknownNameError as e:
        raise UnknownNameError(f"Candidate {c.name!r}: {e}") from None
    tasks = BACKBONE_SOURCES.meta(source).get("tasks", ())
    if task not in tasks:
        fitting = [s for s in BACKBONE_SOURCES if task in BACKBONE_SOURCES.meta(s).get("tasks", ())]
        raise ConfigError(
            f"Candidate {c.backbone!r} is a {source}: backbone, which does not serve {task}; use one of "
            f"{', '.join(s + ':' for s in fitting)}."
        )
    adapter = importlib.import_module(BACKBONE_SOURCES.get(source))
    # timm and torchvision can check a name without building the model; hf folders are checked when loaded
    check = getattr(adapter, "_check_name", None)
    if check is not None:
        try:
            check(rest)
        except UnknownNameError as e:
            raise UnknownNameError(f"Candidate {c.name!r}: {e}") from None
    if isinstance(c.pretrained, str) and not Path(c.pretrained).expanduser().exists():
        raise WeightsError(
            f"Candidate {c.name!r}: weights path {c.pretrained!r} does not exist. Pass an existing weights file or "
            "folder, True for the library's weights, or False for random init."
        )


# --------------------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RankingResult:
    """The ranked table of :func:`rank_backbones`.

    Attributes:
        rows: one dict per candidate, best first: ``rank``, ``name``, ``backbone``, ``pretrained``, one score per
            method, ``params``, ``feature_dim``, ``load_seconds``, ``feature_seconds``, ``score_seconds``,
            ``recommended``.
        methods: the scores computed; the table is ranked by ``methods[0]`` (higher = better).
        recommendation: the name of the recommended (top-ranked) candidate.
        task: the task name.
        samples: number of samples scored; ``per_class``: how many of each class.
        split: the split(s) the samples came from.
        seconds: wall time of the whole ranking.
        seed: the seed of the sample draw and of the seeded scores.
        features: with ``return_features=True``, candidate name -> its (N, D) float32 features of the sample.
        targets: with ``return_features=True``, the (N,) class ids of the sample (a candidate's features leave
            out samples whose image failed to decode with ``skip_bad_files=True``).

    Example:
        >>> result = rank_backbones("image-classification", "data/pets", ["timm:resnet18"])  # doctest: +SKIP
        >>> result.recommendation, result.rows[0]["linear_probe"]  # doctest: +SKIP
    """

    rows: list[dict[str, Any]]
    methods: list[str]
    recommendation: str
    task: str
    samples: int
    per_class: dict[str, int]
    split: str
    seconds: float
    seed: int
    note: str = NOTE
    files: list[str] = field(default_factory=list)
    features: dict[str, np.ndarray] | None = field(default=None, repr=False)
    targets: np.ndarray | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        """The score the table is ranked by."""
        return self.methods[0]

    def scores(self, method: str | None = None) -> dict[str, float]:
        """Candidate name -> score of `method` (default: the ranking method)."""
        m = method or self.method
        if m not in self.methods:
            raise ConfigError(f"Method {m!r} was not computed; this ranking has {self.methods}.")
        return {r["name"]: r[m] for r in self.rows}

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "methods": self.methods,
            "ranked_by": self.method,
            "recommendation": self.recommendation,
            "samples": self.samples,
            "per_class": self.per_class,
            "split": self.split,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "note": self.note,
            "rows": self.rows,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the table as CSV (``.csv``) or JSON (any other suffix); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            columns = list(self.rows[0])
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def table(self) -> str:
        """The ranking as a fixed-width text table with the recommendation and the comparability note."""
        width = max(len("backbone"), *(len(r["name"]) for r in self.rows))
        head = f"{'rank':>4}  {'backbone':<{width}}" + "".join(f"  {m:>12}" for m in self.methods)
        head += f"  {'params':>8}  {'dim':>5}  {'features':>8}"
        lines = [
            f"Backbone ranking for {self.task}: {self.samples} samples of {len(self.per_class)} classes "
            f"({self.split}), ranked by {self.method} (higher = better).",
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            line = f"{r['rank']:>4}  {r['name']:<{width}}" + "".join(f"  {_fmt(r[m]):>12}" for m in self.methods)
            line += f"  {_params(r['params']):>8}  {r['feature_dim']:>5}  {r['feature_seconds']:>7.1f}s"
            lines.append(line)
        lines.append(f"Recommended: {self.recommendation} (highest {self.method}). {self.note}")
        lines.append(f"Ranking took {self.seconds:.1f} s.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


# --------------------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------------------


def stratified_sample(
    targets: Sequence[int], max_samples: int | None, max_per_class: int | None, seed: int
) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified sample: every class gets min(its count, c) samples, c being the
    largest cap (at most `max_per_class`) that keeps the total within `max_samples`, so small classes keep all their
    samples and large ones are cut to the same size (the sample is as balanced as the data allows).

    Example:
        >>> stratified_sample([0] * 90 + [1] * 10, max_samples=40, max_per_class=None, seed=0).size
        40
    """
    y = np.asarray(targets, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    cap = int(counts.max())
    if max_per_class is not None:
        cap = min(cap, max_per_class)
    if max_samples is not None:
        while cap > 1 and int(np.minimum(counts, cap).sum()) > max_samples:
            cap -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[: min(int(n), cap)] for c, n in zip(classes, counts)]
    return np.sort(np.concatenate(chosen))


def _check_sample(labels: list[str], y: np.ndarray, split: str) -> None:
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        found = [labels[i] for i in present]
        raise DataError(
            f"The {split} data has {len(present)} class(es) ({found}); ranking backbones needs labelled samples of at "
            "least 2 classes."
        )
    few = [labels[c] for c, n in zip(present, counts) if n < 2]
    if few:
        raise DataError(
            f"Class(es) {few[:10]} have a single sample in the {split} data; every class needs at least 2 to score "
            "backbones. Add samples, raise max_per_class/max_samples, or rank on split='train+val'."
        )


def _split_names(split: str, available: Sequence[str]) -> list[str]:
    parts = [p.strip() for p in str(split).split("+") if p.strip()]
    if not parts or any(p not in available for p in parts) or len(parts) != len(set(parts)):
        raise ConfigError(
            f"split={split!r} is invalid; use one of the data's splits {list(available)} or several joined by '+', "
            "e.g. 'train+val'."
        )
    return parts


# --------------------------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------------------------


class _ImageSamples:
    """The sampled images as decoded uint8 tensors, kept in memory (up to a budget) for every candidate."""

    def __init__(self, datasets: list[Any], picks: list[tuple[int, int]]) -> None:
        self.datasets, self.picks = datasets, picks
        self.cache: dict[int, torch.Tensor | None] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.picks)

    def get(self, i: int) -> torch.Tensor | None:
        if i in self.cache:
            return self.cache[i]
        d, j = self.picks[i]
        item = self.datasets[d][j]  # None: an undecodable file, with skip_bad_files=True
        image = None if item is None else item[0]
        if image is None or self.bytes + image.numel() <= _IMAGE_CACHE_BYTES:
            self.cache[i] = image
            self.bytes += 0 if image is None else image.numel()
        return image


def _image_features(
    backbone: torch.nn.Module, samples: _ImageSamples, transform: Callable, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) float32 and a mask of the samples that decoded."""
    out: list[torch.Tensor] = []
    ok = np.ones(len(samples), dtype=bool)
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            out.append(backbone(torch.stack(batch).to(device)).float().flatten(1).cpu())
            batch.clear()

    for i in range(len(samples)):
        image = samples.get(i)
        if image is None:
            ok[i] = False
            continue
        batch.append(transform(image))
        if len(batch) == batch_size:
            flush()
    flush()
    if not out:
        raise DataError("None of the sampled images could be decoded; see the warnings above for the files.")
    return torch.cat(out).numpy(), ok


def _text_features(
    backbone: torch.nn.Module,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    from ..data.text_batches import PadCollate, move, sort_by_length_batches, tokenize_texts

    ids, types = tokenize_texts(backbone.tokenizer, texts, pairs, max_length)
    collate = PadCollate(backbone.tokenizer.pad_token_id or 0)
    feats: np.ndarray | None = None
    for idx in sort_by_length_batches([len(x) for x in ids], batch_size):  # similar lengths: little padding
        batch = move(collate([(ids[i], types[i] if types else None, -1) for i in idx]), device)
        f = backbone(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float().cpu().numpy()
        if feats is None:
            feats = np.empty((len(ids), f.shape[1]), dtype=np.float32)
        feats[idx] = f
    assert feats is not None
    return feats


def _device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'.") from None


# --------------------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        want = "a positive integer" + (" or None" if allow_none else "")
        raise ConfigError(f"{name}={value!r} is invalid; expected {want}.")


def rank_backbones(
    task: str,
    data: Any,
    candidates: Sequence[Any],
    *,
    pretrained: bool | str | Path = True,
    method: str | Sequence[str] = "auto",
    max_samples: int | None = 1000,
    max_per_class: int | None = None,
    split: str = "train",
    batch_size: int = 64,
    device: str | None = None,
    output_dir: str | Path | None = None,
    quiet: bool = False,
    return_features: bool = False,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Any,
) -> RankingResult:
    """Ranks candidate backbones for `task` on `data` by transferability scores of their frozen features.

    Each candidate is built once with its weights, in eval mode and without gradients, and embeds a class-stratified
    sample of the `split` data, preprocessed the way fine-tuning would: with the backbone's own data config (input
    size, mean, std, interpolation; ``image_size`` overrides the size for all, as in ``tk.finetune``) and the
    ``eval_transforms`` preset, or for text with its own tokenizer, ``max_length`` and pooling. The data is read as
    ``tk.finetune`` reads it (same options, same seeded validation carve-out), so ``split="train"`` is exactly the
    training set fine-tuning would see; the test split is never touched unless asked for.

    ``method="auto"`` ranks by ``hscore`` (H-score with Ledoit-Wolf shrinkage). On benchmarks/backbone_ranking.py
    (MNIST digits 5-9 with 60 and with 10 labels per class, scikit-learn's digits, 8 image backbones: ImageNet
    EfficientNet-Lite0/1/2, resnet10t pretrained on MNIST 0-4 for 1/3/10 epochs, random inits; tweets, 6 text
    encoders: MiniLM-L6, masked-LM BERTs pretrained 1/3/10 epochs, random inits; ground truth = test accuracy of
    ``tk.finetune`` with its defaults, 3 seeds) H-score had the best mean weighted Kendall tau, 0.47 (LogME 0.26,
    SFDA 0.25, kNN 0.19, linear probe 0.07, NLEEP 0.01; largest-model baseline 0.00). Its top pick fine-tuned 1.3
    accuracy points below the best candidate on average (LogME, SFDA and kNN: 0.7). LogME, kNN, SFDA and
    H-score rank the tweet encoders well (tau 0.79-0.91); no score ranks the image pools well: fine-tuned with
    enough steps, the ImageNet models come out on top, while their frozen features on digits score below those of
    the small resnet pretrained on other digits. There the published ImageNet accuracy of the candidates was the
    better guide (tau 0.68 on the three image targets), and the ground truth itself is noisy (one fine-tuning seed
    predicts another with tau 0.30-0.68). Frozen features tell what transfers without much adaptation: use the top
    few as a short list.
    H-score is an in-sample score: on a few dozen samples it favours wider features; look at ``knn`` there too.

    Pitfalls handled: feature dimension >= number of samples (the scores work in the span of the data and shrink
    covariances; the linear probe and kNN are held-out estimates), class imbalance (the sample caps every class at
    the same size where the data allows, and kNN and the probe score balanced accuracy), determinism (a seeded
    sample, seeded folds and, for ``pretrained=False`` candidates, a seeded initialisation: the same call gives the
    same table on the same machine). Scores rank backbones on one data set; they are not comparable across data sets.

    Args:
        task: ``"image-classification"`` or ``"text-classification"``.
        data: what ``tk.finetune(task, data=...)`` accepts.
        candidates: backbone names (``"timm:resnet18"``), ``(name, weights)`` pairs or dicts ``{"backbone": ...,
            "pretrained": ..., "name": ...}``; see :func:`parse_candidates`.
        pretrained: weights of the candidates that do not name their own: True, False or a local path.
        method: ``"auto"``, ``"all"``, a score name (``"logme"``, ``"sfda"``, ``"hscore"``, ``"knn"``,
            ``"linear_probe"``, ``"nleep"``) or a list of them; the table is ranked by the first.
        max_samples: at most this many samples in all (None: no limit).
        max_per_class: at most this many samples per class (None: no limit besides `max_samples`).
        split: the split scored: ``"train"``, ``"val"``, ``"test"`` or several joined by ``+`` (``"train+val"``).
        batch_size: batch size of the feature extraction.
        device: ``"cpu"``, ``"cuda"``, ...; None: CUDA when available.
        output_dir: if given, ``ranking.csv`` and ``ranking.json`` are written there.
        quiet: print nothing (otherwise: one line per candidate, then the table).
        return_features: keep every candidate's features in ``result.features`` (e.g. to try other scores).
        config: a YAML file or dict of options, as for ``tk.finetune``.
        **options: ``tk.finetune`` options: the task's own (``image_size``, ``eval_transforms``,
            ``skip_bad_files``, ``max_length``, ``pooling``, ``text_column``, ...) and ``seed`` / ``val_fraction``
            (the sample draw and the validation carve-out); training-only options are accepted and ignored, so one
            options dict serves both calls.

    Returns:
        A :class:`RankingResult` (``str(result)`` is the printed table).

    Raises:
        UnknownNameError: an unknown task or backbone (with the closest names).
        ConfigError: an unknown method or option, a task other than the two above, a candidate of the wrong
            modality.
        WeightsError: a weights path that does not exist or does not fit its backbone.
        DataError: unusable data, fewer than 2 classes, or a class with a single sample.

    Example:
        >>> import transferkit as tk
        >>> result = tk.rank_backbones(
        ...     "image-classification", "data/digits",
        ...     candidates=[("timm:tf_efficientnet_lite0", "lite0.safetensors"), "timm:resnet18"],
        ...     image_size=64, output_dir="runs/rank")  # doctest: +SKIP
        >>> result.recommendation  # doctest: +SKIP
        'timm:tf_efficientnet_lite0 (lite0)'
    """
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ConfigError(f"output_dir={str(output_dir)!r} is a file; ranking.csv and ranking.json go in a folder.")
    from ..config import resolve_options
    from ..tasks import get_task, list_tasks

    start = time.perf_counter()
    if not isinstance(task, str) or task not in TASKS:
        if isinstance(task, str) and task not in list_tasks():
            get_task(task)  # raises UnknownNameError with the closest names
        raise ConfigError(f"rank_backbones supports {', '.join(TASKS)}; got task={task!r}.")
    for key in ("backbone", "pretrained_backbone"):
        if key in options:
            raise ConfigError(f"rank_backbones takes candidates=[...], not {key}=...; list every backbone to compare.")
    _positive_int("max_samples", max_samples)
    _positive_int("max_per_class", max_per_class)
    _positive_int("batch_size", batch_size, allow_none=False)
    methods = resolve_methods(method)
    cands = parse_candidates(candidates, pretrained)
    for c in cands:
        _check_candidate(c, task)
    dev = _device(device)

    task_cls = get_task(task)
    cfg, opts, _ = resolve_options(task_cls, config, options)
    seed = int(cfg.seed)
    reader = task_cls(cfg, opts)
    raw = reader.read_data(data)
    labels = list(reader.labels)

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if task == "image-classification":
        available = list(raw.splits)
        parts = _split_names(split, available)
        skip, limit = opts.skip_bad_files, opts.max_image_pixels
        built = [raw.splits[p].build(None, max_pixels=limit, skip_bad=skip) for p in parts]
        refs = [(d, j) for d, p in enumerate(parts) for j in range(len(raw.splits[p]))]
        y_all = np.array([t for p in parts for t in raw.splits[p].targets], dtype=np.int64)
    else:
        available = list(raw["records"])
        parts = _split_names(split, available)
        refs = [(d, j) for d, p in enumerate(parts) for j in range(len(raw["records"][p]))]
        y_all = np.array([t for p in parts for t in raw["encoded"][p]], dtype=np.int64)
    where = "+".join(parts) + " split" + ("s" if len(parts) > 1 else "")
    _check_sample(labels, y_all, where)
    picked = stratified_sample(y_all, max_samples, max_per_class, seed)
    y = y_all[picked]
    _check_sample(labels, y, f"sampled {where}")

    if task == "image-classification":
        samples = _ImageSamples(built, [refs[i] for i in picked])
    else:
        recs = [raw["records"][p] for p in parts]
        texts = [recs[refs[i][0]].texts[refs[i][1]] for i in picked]
        pairs = None
        if recs[0].pairs is not None:
            pairs = [recs[refs[i][0]].pairs[refs[i][1]] for i in picked]
    say(
        f"Ranking {len(cands)} backbone(s) for {task} on {len(y)} samples of {len(np.unique(y))} classes ({where}); "
        f"scores: {', '.join(methods)}."
    )

    rows: list[dict[str, Any]] = []
    kept: dict[str, np.ndarray] = {}
    for n, c in enumerate(cands, 1):
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # random-init candidates: the same weights on every call
            torch.manual_seed(seed)
            backbone = _build(c, task, opts)
        params = sum(p.numel() for p in backbone.parameters())
        backbone.eval().to(dev)
        t1 = time.perf_counter()
        with torch.inference_mode():
            if task == "image-classification":
                feats, ok = _image_features(backbone, samples, _image_transform(backbone, opts), batch_size, dev)
                yc = y[ok]
            else:
                feats = _text_features(backbone, texts, pairs, _max_length(backbone, opts, c), batch_size, dev)
                yc = y
        t2 = time.perf_counter()
        del backbone  # freed by reference counting (gc.collect() costs ~1 s with torch loaded)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        values = {}
        for m in methods:
            try:
                values[m] = score(m, feats, yc, seed=seed)
            except DataError as e:
                raise DataError(f"Candidate {c.name!r}: {e}") from None
        t3 = time.perf_counter()
        if return_features:
            kept[c.name] = feats
        rows.append(
            {
                "name": c.name,
                "backbone": c.backbone,
                "pretrained": c.pretrained,
                **values,
                "params": int(params),
                "feature_dim": int(feats.shape[1]),
                "samples": int(len(yc)),
                "load_seconds": round(t1 - t0, 3),
                "feature_seconds": round(t2 - t1, 3),
                "score_seconds": round(t3 - t2, 3),
            }
        )
        say(
            f"[{n}/{len(cands)}] {c.name}: {feats.shape[1]}-d features in {t2 - t1:.1f} s; "
            + ", ".join(f"{m} {values[m]:.4f}" for m in methods)
        )

    primary = methods[0]
    # Best score first; an exact tie goes to the smaller model (as good, cheaper), then to the order given.
    order = sorted(range(len(rows)), key=lambda i: (-rows[i][primary], rows[i]["params"], i))
    ranked = []
    for rank, i in enumerate(order, 1):
        ranked.append({"rank": rank, **rows[i], "recommended": rank == 1})
    counts = np.bincount(y, minlength=len(labels))
    result = RankingResult(
        rows=ranked,
        methods=methods,
        recommendation=ranked[0]["name"],
        task=task,
        samples=int(len(y)),
        per_class={labels[k]: int(v) for k, v in enumerate(counts) if v},
        split="+".join(parts),
        seconds=time.perf_counter() - start,
        seed=seed,
        features=kept if return_features else None,
        targets=y if return_features else None,
    )
    if output_dir is not None:
        out = Path(output_dir)
        result.files = [str(result.save(out / CSV_FILE)), str(result.save(out / JSON_FILE))]
    say(result.table())
    return result


def _build(c: Candidate, task: str, opts: Any) -> torch.nn.Module:
    from ..backbones import create_backbone

    kwargs: dict[str, Any] = {}
    if task == "text-classification":
        if isinstance(opts.tokenizer, str) and opts.tokenizer == "train":
            raise ConfigError(
                "tokenizer='train' builds a vocabulary during fine-tuning; to rank, use each backbone's own "
                "tokenizer (omit tokenizer=) or pass a tokenizer folder."
            )
        kwargs = {"pooling": opts.pooling, "tokenizer": opts.tokenizer, "model_config": opts.model_config}
    try:
        return create_backbone(c.backbone, pretrained=c.pretrained, **kwargs)
    except (WeightsError, ConfigError, UnknownNameError) as e:
        raise type(e)(f"Candidate {c.name!r}: {e}") from None


def _image_transform(backbone: torch.nn.Module, opts: Any) -> Callable:
    from ..data.transforms import build_transforms
    from ..tasks.image_classification import resolved_data_config

    data_config = resolved_data_config(getattr(backbone, "data_config", {}), opts.image_size)
    return build_transforms(data_config, train=False, preset=opts.eval_transforms)


def _max_length(backbone: torch.nn.Module, opts: Any, c: Candidate) -> int:
    from ..backbones.hf_adapter import resolve_max_length

    return resolve_max_length(opts.max_length, 256, backbone.config, backbone.tokenizer, c.name)
