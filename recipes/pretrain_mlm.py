"""Recipe: masked-language-model pretraining of a text encoder.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/pretrain_mlm.py [--config recipes/configs/pretrain_mlm/<config>.yaml] [key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/pretrain_mlm.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_recipe

CONFIG = Path(__file__).parent / "configs" / "pretrain_mlm" / "default.yaml"


def main(argv=None):
    return run_recipe(argv, default_config=CONFIG, kind="pretrain")


if __name__ == "__main__":
    main()
