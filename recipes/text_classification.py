"""Fine-tune a text classifier from a YAML recipe; ``key=value`` arguments override the file.

Run: ``python recipes/text_classification.py [--config recipes/text_classification.yaml] [key=value ...]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import transferkit as tk
from transferkit.config import load_yaml, parse_override


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_suffix(".yaml")))
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    options = {**load_yaml(args.config), **dict(parse_override(o) for o in args.overrides)}
    task, data = options.pop("task", "text-classification"), options.pop("data")
    result = tk.finetune(task, data=data, **options)
    print(json.dumps({"output_dir": result.output_dir, "labels": result.labels, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()
