"""Rank pretrained backbones before fine-tuning: transferability scores of frozen features on the target data.

Example:
    >>> import numpy as np
    >>> from transferkit.ranking import SCORES, score
    >>> sorted(SCORES)
    ['hscore', 'knn', 'linear_probe', 'logme', 'nleep', 'sfda']
"""

from .api import RankingResult, rank_backbones
from .scores import INVARIANCES, SCORES, hscore, knn_accuracy, linear_probe_accuracy, logme, nleep, score, sfda

__all__ = [
    "INVARIANCES",
    "SCORES",
    "RankingResult",
    "rank_backbones",
    "hscore",
    "knn_accuracy",
    "linear_probe_accuracy",
    "logme",
    "nleep",
    "score",
    "sfda",
]
