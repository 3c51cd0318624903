"""Recipe: fine-tune an object detector.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/object_detection.py [--config recipes/configs/object_detection/<config>.yaml] [key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/object_detection.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_recipe

CONFIG = Path(__file__).parent / "configs" / "object_detection" / "default.yaml"


def main(argv=None):
    return run_recipe(argv, default_config=CONFIG, kind="finetune")


if __name__ == "__main__":
    main()
