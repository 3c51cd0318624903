"""Recipe: fine-tune an image classifier.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/image_classification.py [--config recipes/configs/image_classification/<config>.yaml] [key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/image_classification.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_recipe

CONFIG = Path(__file__).parent / "configs" / "image_classification" / "default.yaml"


def main(argv=None):
    return run_recipe(argv, default_config=CONFIG, kind="finetune")


if __name__ == "__main__":
    main()
