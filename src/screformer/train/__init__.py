"""Lightning training plans and callbacks."""

from ._plans import ClassifierTrainingPlan, RestoreBestWeights, warmup_cosine

__all__ = ["ClassifierTrainingPlan", "RestoreBestWeights", "warmup_cosine"]
