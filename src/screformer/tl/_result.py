"""What a labelling run found for each cell, and how it is written into an AnnData."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import ResultKeys

UNASSIGNED = "Unassigned"


@dataclass
class Level:
    """The calls at one level of cell types (the model's classes, or their uHAF types).

    ``prediction`` holds ``"Unassigned"`` where a cell was not called.
    """

    classes: list[str]
    probabilities: np.ndarray  # cells x classes
    prediction: np.ndarray
    confidence: np.ndarray

    @classmethod
    def call(cls, probabilities, classes, threshold: float, unassigned: np.ndarray) -> Level:
        """The most probable class of each cell; ``Unassigned`` below ``threshold`` and where
        ``unassigned`` is set."""
        confidence = probabilities.max(1).astype(np.float32)
        prediction = np.asarray(classes, dtype=object)[probabilities.argmax(1)]
        prediction[(confidence < threshold) | unassigned] = UNASSIGNED
        return cls(list(classes), probabilities, prediction, confidence)

    def categorical(self) -> pd.Categorical:
        return pd.Categorical(self.prediction, categories=[*self.classes, UNASSIGNED])

    def prediction_counts(self) -> pd.Series:
        """Cells per call, every class (and Unassigned) listed."""
        return pd.Series(self.categorical()).value_counts(sort=False)


def uhaf_levels(fine: Level, mapping: dict[str, str], threshold, unassigned) -> tuple[Level, Level]:
    """The calls at the classes' level and at the level above (each class mapped to its type
    by ``mapping``), made so that they never disagree.

    A type's probability is the sum of its classes'; the type is called first, then the class
    within it (its confidence: that class's probability). A class under ``threshold`` is
    Unassigned while its type may still be called.
    """
    types = sorted(set(mapping[c] for c in fine.classes))
    member = np.array([[mapping[c] == t for t in types] for c in fine.classes], dtype=np.float32)
    coarse = Level.call(fine.probabilities @ member, types, threshold, unassigned)
    within = fine.probabilities * member[:, coarse.probabilities.argmax(1)].T
    refined = Level.call(
        within, fine.classes, threshold, unassigned | (coarse.prediction == UNASSIGNED)
    )
    return Level(fine.classes, fine.probabilities, refined.prediction, refined.confidence), coarse


def warn_if_mostly_unassigned(n_unassigned: int, n_cells: int) -> None:
    """Warn when most cells are Unassigned: a model that has not learned, or a query unlike its
    training cells, rather than a result."""
    if n_cells and n_unassigned / n_cells > 0.5:
        warnings.warn(
            f"{n_unassigned:,} of {n_cells:,} cells ({100 * n_unassigned / n_cells:.0f}%) are "
            "Unassigned. The model may be undertrained (see its validation accuracy in "
            "uns[key_added]['params']), or the cells unlike its training cells (other genes, "
            "species or tissue); lower unassigned_threshold to see its best guesses.",
            stacklevel=3,
        )


@dataclass
class AnnotationResult:
    """The labels of a run of :func:`screformer.tl.annotate`, for each cell, before they are
    written (as CellTypist's ``AnnotationResult``).

    Attributes
    ----------
    obs_names
        The cells, in order.
    cells
        The model's classes: probabilities, call (``"Unassigned"`` included) and confidence.
    record
        What ``uns[key_added]`` records of the run.
    novelty
        Each cell's novelty score (0-1, see :class:`screformer.model.NoveltyReference`), or None.
    uhaf, uhaf_tier
        The calls at the uHAF tier above the classes, and that tier, when the model has one.
    majority_voting, over_clustering
        Each cell's cluster and its cluster's most common call, when asked for.
    palette
        Colour of each class, so that plots of the predictions match those of the labels.
    key_added
        Prefix of the keys :meth:`to_adata` writes.

    Examples
    --------
    >>> result = AnnotationResult(...)  # doctest: +SKIP
    >>> result.predictions.head()  # doctest: +SKIP
    >>> result.to_adata(adata)  # doctest: +SKIP
    """

    obs_names: pd.Index
    cells: Level
    record: dict
    novelty: np.ndarray | None = None
    uhaf: Level | None = None
    uhaf_tier: int | None = None
    majority_voting: np.ndarray | None = None
    over_clustering: np.ndarray | None = None
    key_added: str = "screformer"
    extra_obs: dict[str, pd.Categorical] = field(default_factory=dict)
    palette: dict[str, str] | None = None  # class -> colour, as the labels were drawn

    @property
    def keys(self) -> ResultKeys:
        return ResultKeys(self.key_added)

    @property
    def uhaf_keys(self) -> ResultKeys:
        """The keys of the uHAF level: the prefix ``{key_added}_uhaf_tier{tier}``."""
        return ResultKeys(f"{self.key_added}_uhaf_tier{self.uhaf_tier}")

    @property
    def predictions(self) -> pd.DataFrame:
        """The ``obs`` columns :meth:`to_adata` writes, cells x columns."""
        keys = self.keys
        columns = {
            keys.prediction: self.cells.categorical(),
            keys.confidence: self.cells.confidence,
        }
        if self.novelty is not None:
            columns[keys.novelty] = self.novelty
        if self.uhaf is not None:
            columns[self.uhaf_keys.prediction] = self.uhaf.categorical()
            columns[self.uhaf_keys.confidence] = self.uhaf.confidence
        if self.majority_voting is not None:
            columns[keys.over_clustering] = pd.Categorical(self.over_clustering)
            columns[keys.majority_voting] = pd.Categorical(
                self.majority_voting, categories=self.cells.categorical().categories
            )
        return pd.DataFrame(columns | self.extra_obs, index=self.obs_names)

    @property
    def probabilities(self) -> pd.DataFrame:
        """Cells x classes probabilities."""
        return pd.DataFrame(
            self.cells.probabilities, index=self.obs_names, columns=self.cells.classes
        )

    def to_adata(self, adata: AnnData) -> AnnData:
        """Write the calls into ``adata`` (its cells must be those of the run) and return it:
        ``obs`` columns (:attr:`predictions`), ``obsm`` probabilities and the ``uns`` record."""
        if not adata.obs_names.equals(self.obs_names):
            raise ValueError("adata's cells are not the cells of this result.")
        for column, values in self.predictions.items():
            adata.obs[column] = values  # indexed by obs_names, checked above
        adata.obsm[self.keys.probabilities] = self.cells.probabilities
        adata.uns[self.keys.uns] = self.record
        if self.palette is not None:
            # Scanpy reads uns[f"{column}_colors"], in category order: the truth's colours.
            colours = [self.palette.get(c, "#d3d3d3") for c in self.cells.categorical().categories]
            for column in (self.keys.prediction, self.keys.majority_voting):
                if column in adata.obs:
                    adata.uns[f"{column}_colors"] = colours
        if self.uhaf is not None:
            adata.obsm[self.uhaf_keys.probabilities] = self.uhaf.probabilities
            adata.uns[self.uhaf_keys.uns] = self.uhaf_record
        return adata

    @property
    def uhaf_record(self) -> dict:
        """The uHAF level's own ``uns`` record, so that tl.evaluate and the plots read that
        level by its prefix."""
        return {"classes": self.uhaf.classes, "level_of": self.key_added}


def label_palette(labels: pd.Series, uns: dict, key: str) -> dict[str, str]:
    """The colour of each label as Scanpy draws the column ``key``: its ``uns[f"{key}_colors"]``
    when set, else Scanpy's default palette in category order."""
    from scanpy.plotting import palettes

    # Scanpy colours a column's categories in order (sorted values for a string column).
    categories = [str(c) for c in labels.astype("category").cat.categories]
    colours = list(uns.get(f"{key}_colors", []))
    if len(colours) < len(categories):
        n = len(categories)
        colours = (
            palettes.default_20
            if n <= 20
            else palettes.default_28
            if n <= 28
            else palettes.default_102
        )
    return dict(zip(categories, colours, strict=False))
