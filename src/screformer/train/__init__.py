"""Lightning training plans and callbacks."""

from ._calibration import fit_temperature
from ._plans import (
    AverageWeights,
    ClassifierTrainingPlan,
    PretrainingPlan,
    RestoreBestWeights,
    mask_bins,
    warmup_cosine,
)

__all__ = [
    "AverageWeights",
    "ClassifierTrainingPlan",
    "PretrainingPlan",
    "RestoreBestWeights",
    "fit_temperature",
    "mask_bins",
    "warmup_cosine",
]
