"""Recipe: fine-tune a text classifier.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/text_classification.py [--config recipes/configs/text_classification/<config>.yaml] [key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/text_classification.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_recipe

CONFIG = Path(__file__).parent / "configs" / "text_classification" / "default.yaml"


def main(argv=None):
    return run_recipe(argv, default_config=CONFIG, kind="finetune")


if __name__ == "__main__":
    main()
