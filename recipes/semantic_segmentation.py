"""Recipe: fine-tune a semantic-segmentation model.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/semantic_segmentation.py [--config recipes/configs/semantic_segmentation/<config>.yaml] [key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/semantic_segmentation.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_recipe

CONFIG = Path(__file__).parent / "configs" / "semantic_segmentation" / "default.yaml"


def main(argv=None):
    return run_recipe(argv, default_config=CONFIG, kind="finetune")


if __name__ == "__main__":
    main()
