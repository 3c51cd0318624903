"""transferkit: fine-tune pretrained models on your data with one call.

Example:
    >>> import transferkit as tk
    >>> result = tk.finetune("image-classification", data="data/pets", backbone="timm:resnet18")  # doctest: +SKIP
"""

from .api import FinetuneResult, Predictor, evaluate, finetune, load, pretrain
from .backbones import create_backbone, list_backbones
from .config import EarlyStopping, FinetuneConfig
from .engine.callbacks import Callback
from .engine.freezing import BackboneThenUnfreeze, FreezeBackbone, FreezeStrategy, GradualUnfreeze, NoFreeze, TopLayers
from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    TrainingError,
    TransferkitError,
    UnknownNameError,
    WeightsError,
)
from .heads import list_heads, register_head
from .models import TransferModel, create_model
from .ranking import RankingResult, rank_backbones
from .registry import Registry
from .tasks import list_tasks

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BackboneThenUnfreeze",
    "Callback",
    "ConfigError",
    "DataError",
    "EarlyStopping",
    "FinetuneConfig",
    "FinetuneResult",
    "FreezeBackbone",
    "FreezeStrategy",
    "GradualUnfreeze",
    "NoFreeze",
    "Predictor",
    "RankingResult",
    "Registry",
    "TopLayers",
    "TrainingError",
    "TransferModel",
    "TransferkitError",
    "UnknownNameError",
    "WeightsError",
    "__version__",
    "create_backbone",
    "create_model",
    "evaluate",
    "finetune",
    "list_backbones",
    "list_heads",
    "list_tasks",
    "load",
    "pretrain",
    "rank_backbones",
    "register_head",
]
