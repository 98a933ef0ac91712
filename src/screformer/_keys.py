"""Where screformer's results live in an AnnData: the one place their names are built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResultKeys:
    """The keys written by :func:`screformer.tl.annotate` (and read by ``tl.evaluate`` and the
    plots) for the prefix ``key_added``.

    Examples
    --------
    >>> keys = ResultKeys("screformer")
    >>> keys.prediction, keys.confidence, keys.probabilities, keys.uns
    ('screformer_prediction', 'screformer_confidence', 'screformer_probabilities', 'screformer')
    """

    key_added: str = "screformer"

    @property
    def prediction(self) -> str:
        """``obs`` column of the predicted cell types."""
        return f"{self.key_added}_prediction"

    @property
    def confidence(self) -> str:
        """``obs`` column of the best class probability."""
        return f"{self.key_added}_confidence"

    @property
    def probabilities(self) -> str:
        """``obsm`` key of the cells x classes probabilities."""
        return f"{self.key_added}_probabilities"

    @property
    def novelty(self) -> str:
        """``obs`` column of the novelty score (0-1: how unlike its type's training cells)."""
        return f"{self.key_added}_novelty"

    @property
    def over_clustering(self) -> str:
        """``obs`` column of the over-clustering that majority voting used."""
        return f"{self.key_added}_over_clustering"

    @property
    def majority_voting(self) -> str:
        """``obs`` column of each cell's cluster's most common prediction."""
        return f"{self.key_added}_majority_voting"

    @property
    def uns(self) -> str:
        """``uns`` key of the run's record."""
        return self.key_added
