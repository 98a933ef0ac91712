"""Lightning training plans and callbacks."""

from ._calibration import fit_temperature
from ._plans import (
    ClassifierTrainingPlan,
    PretrainingPlan,
    RestoreBestWeights,
    mask_bins,
    warmup_cosine,
)

__all__ = [
    "ClassifierTrainingPlan",
    "PretrainingPlan",
    "RestoreBestWeights",
    "fit_temperature",
    "mask_bins",
    "warmup_cosine",
]
