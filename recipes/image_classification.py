"""Recipe: fine-tune an image classifier. Thin on purpose: all logic lives in transferkit.

python recipes/image_classification.py [--config recipes/image_classification.yaml] [key=value ...]
accelerate launch recipes/image_classification.py --config ...   # several GPUs / processes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import transferkit as tk
from transferkit.config import load_yaml, parse_override


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).with_suffix(".yaml")), help="YAML recipe")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    options = {**load_yaml(args.config), **dict(parse_override(o) for o in args.overrides)}
    task, data = options.pop("task"), options.pop("data")
    result = tk.finetune(task, data=data, **options)
    print(json.dumps({"output_dir": result.output_dir, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()
