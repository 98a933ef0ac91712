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
    def uns(self) -> str:
        """``uns`` key of the run's record."""
        return self.key_added
