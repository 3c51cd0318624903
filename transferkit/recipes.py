"""The one runner behind every script in ``recipes/``: a YAML config plus ``key=value`` overrides -> the library.

Options go through the same path as ``tk.finetune(config=...)`` and ``transferkit finetune --config``: YAML <
overrides, every value checked against the option's type, an unknown key an error suggesting close names.

Example:
    >>> from transferkit.recipes import run_recipe
    >>> run_recipe(["--config", "recipes/configs/image_classification/default.yaml", "epochs=1"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TransferkitError


def _parser(description: str, default_config: str | Path | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(default_config) if default_config else None, help="YAML recipe config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options that win over the config")
    return p


def _print(result) -> None:
    out = {"output_dir": result.output_dir, "labels": result.labels, "best_epoch": result.best_epoch}
    print(json.dumps({**out, "metrics": result.metrics}, indent=2, default=float))


def run_recipe(
    argv: Sequence[str] | None = None,
    *,
    default_config: str | Path | None = None,
    kind: str = "finetune",
    description: str = "",
):
    """Parses ``[--config FILE] [key=value ...]``, runs ``tk.finetune`` (or ``tk.pretrain``) and prints the result.

    A user error prints one line and exits with status 1.
    """
    import transferkit as tk

    from .config import parse_override

    args = _parser(description or f"transferkit {kind} recipe", default_config).parse_args(argv)
    try:
        options = dict(parse_override(o) for o in args.overrides)
        fn = tk.pretrain if kind == "pretrain" else tk.finetune
        result = fn(config=args.config, **options)
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if _is_main():
        _print(result)
    return result


def run_pipeline(argv: Sequence[str] | None = None, *, default_config: str | Path | None = None) -> Any:
    """Masked-LM pretraining, then fine-tuning the pretrained encoder, from one YAML with ``pretrain:`` and
    ``finetune:`` sections. Overrides address a section: ``pretrain.epochs=1 finetune.data=...``. The fine-tuning
    backbone defaults to the pretraining run's output folder.
    """
    import transferkit as tk

    from .config import load_yaml, parse_override

    args = _parser("masked-LM pretraining -> fine-tuning", default_config).parse_args(argv)
    try:
        config = load_yaml(args.config) if args.config else {}
        sections = {name: dict(config.get(name) or {}) for name in ("pretrain", "finetune")}
        unknown = sorted(set(config) - set(sections))
        if unknown:
            from .errors import ConfigError

            raise ConfigError(
                f"{args.config}: unknown section(s) {unknown}; the pipeline has pretrain: and finetune:."
            )
        for text in args.overrides:
            key, value = parse_override(text)
            section, dot, name = key.partition(".")
            if not dot or section not in sections:
                from .errors import ConfigError

                raise ConfigError(f"Override {text!r} must name its section: pretrain.{key}=... or finetune.{key}=...")
            sections[section][name] = value
        pre = tk.pretrain(config=sections["pretrain"])
        sections["finetune"].setdefault("backbone", f"hf:{pre.output_dir}")
        fine = tk.finetune(config=sections["finetune"])
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if _is_main():
        print(json.dumps({"pretrain": {"output_dir": pre.output_dir, "metrics": pre.metrics}}, default=float))
        _print(fine)
    return pre, fine


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
