"""Lightning training plans and callbacks."""

from ._calibration import fit_temperature
from ._plans import ClassifierTrainingPlan, RestoreBestWeights, warmup_cosine

__all__ = ["ClassifierTrainingPlan", "RestoreBestWeights", "fit_temperature", "warmup_cosine"]
