"""Recipe: pretrain a text encoder (masked-LM) on unlabelled text, then fine-tune it on labelled text.

Thin on purpose: the options live in the YAML, the logic in transferkit.

python recipes/pretrain_then_finetune.py [--config CONFIG.yaml] [pretrain.key=value ...] [finetune.key=value ...]
accelerate launch --multi_gpu --num_processes 2 recipes/pretrain_then_finetune.py [...]  # several processes
"""

from pathlib import Path

from transferkit.recipes import run_pipeline

CONFIG = Path(__file__).parent / "configs" / "pretrain_then_finetune" / "default.yaml"


def main(argv=None):
    return run_pipeline(argv, default_config=CONFIG)


if __name__ == "__main__":
    main()
