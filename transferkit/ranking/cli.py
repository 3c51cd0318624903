"""`transferkit rank`: rank candidate backbones on labelled data before fine-tuning (see `rank_backbones`).

    transferkit rank image-classification --data data/digits timm:resnet18 \\
        timm:tf_efficientnet_lite0@weights/lite0.safetensors --method all --output-dir runs/rank image_size=64

A candidate is ``NAME`` or ``NAME@WEIGHTS`` (a local weights file or folder); ``--candidates FILE`` reads a YAML
list of names or ``{backbone, pretrained, name}`` mappings. ``key=value`` arguments are tk.finetune options
(``image_size=64``, ``max_length=128``, ``seed=0``, ...).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, TransferkitError

_CANDIDATE = re.compile(r"^[A-Za-z][\w-]*:")  # a source prefix such as timm:, tv:, hf:


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transferkit rank",
        description="Rank pretrained backbones on your labelled data by transferability scores of frozen features.",
    )
    p.add_argument("task", help="image-classification or text-classification")
    p.add_argument("--data", required=True, help="data folder, file, or YAML mapping of split: path")
    p.add_argument(
        "args",
        nargs="*",
        metavar="CANDIDATE | key=value",
        help="candidates (NAME or NAME@WEIGHTS, e.g. timm:resnet18@resnet18.pth) and tk.finetune options",
    )
    p.add_argument(
        "--candidates", dest="candidates_file", help="YAML file: a list of names or {backbone, pretrained, name}"
    )
    p.add_argument(
        "--pretrained", default="true", help="weights of candidates without @WEIGHTS: true, false or a path"
    )
    p.add_argument(
        "--method", default="auto", help="auto, all, logme, sfda, hscore, knn, linear_probe, nleep (comma list)"
    )
    p.add_argument("--max-samples", type=_limit, default=1000, help="cap on scored samples ('none': no cap)")
    p.add_argument("--max-per-class", type=_limit, default=None, help="cap on samples per class")
    p.add_argument("--split", default="train", help="split(s) to score: train, val, test, or e.g. train+val")
    p.add_argument("--batch-size", type=int, default=64, help="feature extraction batch size")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if available)")
    p.add_argument("--output-dir", default=None, help="write ranking.csv and ranking.json here")
    p.add_argument("--config", default=None, help="YAML file of tk.finetune options")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    return p


def _limit(text: str) -> int | None:
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'none'") from None


def _pretrained(text: str) -> bool | str:
    low = text.strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0", "none", "random"):
        return False
    return text


def _candidate(text: str) -> Any:
    name, sep, weights = text.partition("@")
    if sep and not weights:
        raise ConfigError(f"Candidate {text!r} has no weights after '@'; write NAME@path/to/weights.")
    return (name, _pretrained(weights)) if sep else name


def _read_candidates(path: str) -> list[Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"Candidates file {path!r} does not exist.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"Candidates file {path!r} is not valid YAML: {e}") from None
    if isinstance(loaded, dict) and "candidates" in loaded:
        loaded = loaded["candidates"]
    if not isinstance(loaded, list):
        raise ConfigError(f"Candidates file {path!r} must hold a list of backbones (or a 'candidates:' list).")
    return loaded


# rank_backbones' own arguments, given as flags (a key=value of the same name would reach it twice)
_FLAGS = ("pretrained", "method", "max_samples", "max_per_class", "split", "batch_size", "device", "output_dir",
          "config", "data", "candidates", "quiet", "return_features")  # fmt: skip


def rank_cli(argv: Sequence[str] | None = None, debug: bool = False) -> int:
    """Runs ``transferkit rank``; `argv` are the arguments after ``rank``. Returns the exit status; with `debug`,
    errors raise (``transferkit --debug rank ...`` shows the traceback).

    Example:
        >>> rank_cli(["image-classification", "--data", "data/digits", "timm:resnet18", "image_size=64"])
        ... # doctest: +SKIP
        0
    """
    from ..cli import _parse_data
    from ..config import parse_override

    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    try:
        candidates: list[Any] = []
        options: dict[str, Any] = {}
        for item in args.args:
            if _CANDIDATE.match(item) and ("=" not in item or item.index(":") < item.index("=")):
                candidates.append(_candidate(item))
            elif "=" in item:
                key, value = parse_override(item)
                if key in _FLAGS:
                    flag = "--" + key.replace("_", "-")
                    raise ConfigError(
                        f"{key} is a flag of `transferkit rank`: write {flag} {value} instead of {item}."
                    )
                options[key] = value
            else:
                raise ConfigError(
                    f"{item!r} is neither a candidate (SOURCE:NAME, e.g. timm:resnet18) nor an option (key=value)."
                )
        if args.candidates_file:
            candidates += _read_candidates(args.candidates_file)
        if not candidates:
            raise ConfigError("Name at least one candidate, e.g. `transferkit rank TASK --data D timm:resnet18`.")
        from .api import rank_backbones

        result = rank_backbones(
            args.task,
            _parse_data(args.data),
            candidates,
            pretrained=_pretrained(args.pretrained),
            method=[m.strip() for m in args.method.split(",")] if "," in args.method else args.method,
            max_samples=args.max_samples,
            max_per_class=args.max_per_class,
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            output_dir=args.output_dir,
            quiet=args.json,
            config=args.config,
            **options,
        )
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
    except TransferkitError as e:  # a user error: one line, exit 1 (argparse's usage errors exit 2), as every command
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
