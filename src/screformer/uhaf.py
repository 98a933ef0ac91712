"""uHAF cell-type trees: map labels at any depth onto an organ's first-tier (or any tier) types.

uHAF (unified Hierarchical Annotation Framework; Bian et al., Bioinformatics 2025) gives each
organ a tree of cell types: first-tier types such as ``Cardiomyocyte cell`` or ``Myeloid cell``,
then finer ones (``Atrial cardiomyocyte cell``, ``Monocyte``, ...). The trees of uHAF 2.2.0 ship
with screformer (``_data/uhaf_2.2.0.json``, read from the xlsx of the PyPI package ``uhaf`` 0.1.8,
MIT, by :func:`read_uhaf_xlsx`), so nothing is downloaded.

Labels are matched to tree nodes leniently: case, ``_``/``-``/spaces, a trailing ``cell(s)``,
English plurals, a few abbreviations (``Mono`` -> monocyte, ``DC`` -> dendritic cell,
``Ventricular`` -> ventricle, ``Neuronal`` -> neuron) and marker prefixes (``CD14+ Mono`` ->
``Monocyte`` when ``CD14+ monocyte`` is not a node). Names that still match nothing, or match
nodes of different branches, are reported; give them with ``mapping=``.

Examples
--------
>>> from screformer import uhaf
>>> uhaf.load_tree("Heart").ancestor("Atrial cardiomyocyte cell", tier=1)
'Cardiomyocyte cell'
>>> uhaf.map_labels(["CD14+ Mono", "B", "NK"], organ="Blood").mapped
{'CD14+ Mono': 'Myeloid cell', 'B': 'Lymphoid cell', 'NK': 'Lymphoid cell'}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

UHAF_VERSION = "2.2.0"
_BUNDLED = f"uhaf_{UHAF_VERSION}.json"

# Whole-word abbreviations and adjective forms seen in common annotations.
_WORD_SYNONYMS = {
    "mono": "monocyte",
    "monos": "monocyte",
    "dc": "dendritic",
    "dcs": "dendritic",
    "mac": "macrophage",
    "ventricular": "ventricle",
    "neuronal": "neuron",
    "treg": "regulatory",
}


def _clean(name: str) -> str:
    return " ".join(str(name).replace("\xa0", " ").split())


def _words(name: str) -> list[str]:
    """Lower-case words of a label, without ``cell(s)``, plurals singularised."""
    words = re.split(r"[\s_\-/,]+", _clean(name).lower().replace("+", "+ "))
    out = []
    for word in words:
        if not word or word in ("cell", "cells"):
            continue
        word = _WORD_SYNONYMS.get(word, word)
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


def _key(name: str) -> str:
    return " ".join(_words(name))


def _without_markers(name: str) -> str:
    """``CD14+ Mono`` -> ``monocyte``: drop marker qualifiers such as ``CD14+`` or ``FCGR3A+``."""
    return " ".join(w for w in _words(name) if not w.endswith(("+", "-")) and w not in ("+", "-"))


@dataclass(frozen=True)
class UHAFTree:
    """One organ's cell-type tree.

    ``parent[name]`` is the parent type (``None`` for first-tier types) and ``tier[name]`` the
    depth (1 = first tier).
    """

    organ: str
    parent: Mapping[str, str | None]
    tier: Mapping[str, int]
    _index: dict = field(init=False, repr=False, compare=False)

    @property
    def first_tier(self) -> list[str]:
        return [n for n, t in self.tier.items() if t == 1]

    def path(self, name: str) -> list[str]:
        """Types from the first tier down to ``name``."""
        if name not in self.parent:
            raise KeyError(f"{name!r} is not a cell type of the uHAF {self.organ} tree.")
        path = [name]
        while self.parent[path[-1]] is not None:
            path.append(self.parent[path[-1]])
        return path[::-1]

    def ancestor(self, name: str, tier: int = 1) -> str | None:
        """The type at ``tier`` above (or at) ``name``; ``None`` if ``name`` is coarser."""
        path = self.path(name)
        return path[tier - 1] if len(path) >= tier else None

    def find(self, label: str) -> list[str]:
        """Tree nodes that ``label`` names (see the module docstring for the matching rules)."""
        if label in self.parent:
            return [label]
        for key in (_key(label), _without_markers(label)):
            if key and key in self._index:
                return self._index[key]
        return []

    def __post_init__(self):
        index: dict[str, list[str]] = {}
        for node in self.parent:
            index.setdefault(_key(node), []).append(node)
        object.__setattr__(self, "_index", index)


@dataclass
class UHAFMapping:
    """Result of :func:`map_labels`.

    Attributes
    ----------
    mapped
        label -> type at the requested tier, for the labels that could be mapped.
    nodes
        label -> the tree node the label was matched to.
    unmapped
        label -> why it could not be mapped.
    """

    organ: str
    tier: int
    mapped: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)

    def hierarchy(self, classes) -> dict:
        """What a model keeps (:attr:`screformer.SCReformer.uhaf_`) to write its predictions at
        this tier too: organ, tier, uHAF version and class -> type (every class mapped)."""
        missing = [c for c in classes if c not in self.mapped]
        if missing:
            raise ValueError(f"Classes without a uHAF {self.organ} type: {missing}.")
        mapping = {str(c): self.mapped[c] for c in classes}
        return {"organ": self.organ, "tier": self.tier, "version": UHAF_VERSION, "mapping": mapping}

    def report(self) -> str:
        lines = [f"{len(self.mapped)} label(s) mapped to uHAF {self.organ} tier {self.tier}."]
        lines += [f"  {label!r} -> {tier!r}" for label, tier in self.mapped.items()]
        if self.unmapped:
            lines.append(f"{len(self.unmapped)} not mapped (pass mapping={{label: uHAF type}}):")
            lines += [f"  {label!r}: {why}" for label, why in self.unmapped.items()]
        return "\n".join(lines)


def organs() -> list[str]:
    """Organs with a bundled uHAF tree."""
    return sorted(_bundled())


def load_tree(organ: str) -> UHAFTree:
    """The bundled uHAF tree of ``organ`` (e.g. ``"Heart"``, ``"Blood"``; see :func:`organs`)."""
    trees = _bundled()
    by_lower = {name.lower(): name for name in trees}
    if organ.lower() not in by_lower:
        raise KeyError(f"No uHAF tree for organ {organ!r}; uHAF {UHAF_VERSION} has {organs()}.")
    return _tree(by_lower[organ.lower()])


@cache
def _tree(organ: str) -> UHAFTree:
    nodes = _bundled()[organ]
    return UHAFTree(
        organ,
        parent={name: parent for name, parent, _ in nodes},
        tier={name: tier for name, _, tier in nodes},
    )


@cache
def _bundled() -> dict[str, list]:
    text = resources.files("screformer").joinpath("_data", _BUNDLED).read_text(encoding="utf-8")
    return json.loads(text)


def map_labels(
    labels: Iterable[str],
    organ: str,
    tier: int = 1,
    mapping: Mapping[str, str] | None = None,
) -> UHAFMapping:
    """Map cell-type labels onto the uHAF ``organ`` tree's types at ``tier``.

    Parameters
    ----------
    labels
        Labels at any depth of the tree (duplicates are fine).
    organ
        uHAF organ, e.g. ``"Heart"``.
    tier
        1 for first-tier types (``Cardiomyocyte cell``, ``Fibroblast``, ...), 2 for the next...
    mapping
        ``{label: uHAF type}`` for labels the tree lacks; the type may be at any depth.

    Examples
    --------
    >>> m = map_labels(["Ventricular_Cardiomyocyte", "Pericytes", "Mystery"], "Heart")
    >>> m.mapped
    {'Ventricular_Cardiomyocyte': 'Cardiomyocyte cell', 'Pericytes': 'Pericyte'}
    >>> list(m.unmapped)
    ['Mystery']
    """
    if tier < 1:
        raise ValueError(f"tier must be 1 or more, not {tier}.")
    tree = load_tree(organ)
    mapping = dict(mapping or {})
    result = UHAFMapping(tree.organ, tier)
    for label in dict.fromkeys(str(x) for x in labels):
        target = mapping.get(label, label)
        nodes = tree.find(target)
        if not nodes:
            where = "your mapping's" if label in mapping else "its"
            result.unmapped[label] = f"{where} name {target!r} is not in the tree"
            continue
        ancestors = {tree.ancestor(node, tier) for node in nodes}
        if len(ancestors) > 1:
            result.unmapped[label] = f"ambiguous: {nodes} are under {sorted(map(str, ancestors))}"
            continue
        ancestor = ancestors.pop()
        if ancestor is None:
            result.unmapped[label] = f"{nodes[0]!r} is coarser than tier {tier}"
            continue
        result.mapped[label] = ancestor
        result.nodes[label] = nodes[0]
    return result


def read_uhaf_xlsx(path: str | os.PathLike) -> dict[str, list[list]]:
    """Read uHAF's xlsx (one sheet per organ) into ``{organ: [[type, parent, tier], ...]}``.

    In each sheet the cell-type hierarchy fills the columns from ``[Subtissue]`` up to
    ``[Marker]``, one column per tier; a type's parent is the nearest type above it one column
    to the left. Needs ``openpyxl``. This is how the bundled trees were made.
    """
    import pandas as pd

    trees = {}
    for organ, sheet in pd.read_excel(path, sheet_name=None).items():
        columns = [str(c) for c in sheet.columns]
        if "[Subtissue]" not in columns or "[Marker]" not in columns:
            continue  # not an organ sheet
        levels = sheet.iloc[:, columns.index("[Subtissue]") : columns.index("[Marker]")]
        nodes, seen, current = [], set(), []
        for row in levels.itertuples(index=False):
            for depth, value in enumerate(row):
                if not (isinstance(value, str) and _clean(value)):
                    continue
                # At a skipped column the parent is the nearest type to the left.
                current = current[:depth]
                parent = current[-1] if current else None
                current.append(_clean(value))
                if current[-1] not in seen:  # a repeated name keeps its first place
                    nodes.append([current[-1], parent, len(current)])
                    seen.add(current[-1])
        trees[_clean(organ)] = nodes
    return trees
