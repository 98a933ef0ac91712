"""Pretrained weights: a registry of checkpoints fetched with pooch, checked, and cached.

Each entry names a checkpoint file written by :meth:`screformer.SCReformer.save` (its gene panel,
configuration and classes travel inside the file) with its URL and SHA-256. A file is downloaded
once into the cache folder and verified; later calls read the cache, also without network.

Environment variables
---------------------
``SCREFORMER_CACHE``
    Cache folder (default: pooch's per-user cache, e.g. ``~/.cache/screformer``).
``SCREFORMER_MIRROR``
    Base URL that replaces each entry's own base (the file name is kept), for a local mirror.
``SCREFORMER_OFFLINE``
    ``1`` to never download: only cached files are used.

No scReformer-BERT or scBERT weights were ever published in a reachable form. The registry holds
``"default"``, a small encoder pre-trained by screformer's developers, and two trained
classifiers, ``"pbmc"`` and ``"heart"`` (each with a model card, :func:`card`), all shipped inside
the package (no download; see the docs for what they were trained on); :func:`register` adds
entries.

Examples
--------
>>> from screformer import pretrained
>>> sorted(pretrained.available())
['default', 'heart', 'pbmc']
>>> pretrained.register("my-model", "https://example.org/my_model.pt", sha256)  # doctest: +SKIP
>>> model = screformer.SCReformer.from_pretrained("my-model")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pooch

CACHE_ENV, MIRROR_ENV, OFFLINE_ENV = "SCREFORMER_CACHE", "SCREFORMER_MIRROR", "SCREFORMER_OFFLINE"


@dataclass(frozen=True)
class PretrainedModel:
    """A registry entry: where the checkpoint lives (a URL, or a file inside the package) and
    its SHA-256."""

    url: str
    sha256: str
    description: str = ""
    bundled: Path | None = None

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_REGISTRY: dict[str, PretrainedModel] = {}


def _check_sha256(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, not {sha256!r}.")
    return sha256.lower()


def register(name: str, url: str, sha256: str, description: str = "") -> None:
    """Add (or replace) a named checkpoint in the registry."""
    _REGISTRY[name] = PretrainedModel(url, _check_sha256(sha256), description)


def _register_bundled(name: str, file_name: str, sha256: str, description: str) -> None:
    path = Path(__file__).parent / "_data" / file_name
    entry = PretrainedModel(f"bundled:{file_name}", _check_sha256(sha256), description, path)
    _REGISTRY[name] = entry


def available() -> dict[str, PretrainedModel]:
    """The registered checkpoints, by name."""
    return dict(_REGISTRY)


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept (``$SCREFORMER_CACHE`` or pooch's user cache)."""
    return Path(os.environ.get(CACHE_ENV) or pooch.os_cache("screformer"))


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def fetch(name: str) -> Path:
    """The local path of the checkpoint ``name``: from the cache, or downloaded and verified.

    Raises
    ------
    KeyError
        ``name`` is not registered.
    OSError
        The file is not cached and cannot be downloaded (offline, or no network).
    ValueError
        The file's SHA-256 differs from the registry's (a corrupted or replaced file); it is
        not kept.
    """
    if name not in _REGISTRY:
        raise KeyError(
            f"No pretrained model named {name!r}; registered: {sorted(_REGISTRY) or 'none'}. "
            "Pass the path of a saved model instead."
        )
    entry = _REGISTRY[name]
    if entry.bundled is not None:
        if not entry.bundled.exists() or pooch.file_hash(str(entry.bundled)) != entry.sha256:
            raise ValueError(
                f"The bundled {name!r} model ({entry.bundled}) is missing or damaged; "
                "reinstall screformer."
            )
        return entry.bundled
    url = entry.url
    if os.environ.get(MIRROR_ENV):
        url = f"{os.environ[MIRROR_ENV].rstrip('/')}/{entry.file_name}"
    folder = cache_dir()
    cached = folder / entry.file_name
    if _offline():
        if not cached.exists():
            raise OSError(
                f"{name!r} is not in the cache ({cached}) and {OFFLINE_ENV} forbids downloading."
            )
        if pooch.file_hash(str(cached)) != entry.sha256:
            raise ValueError(f"The cached {cached} does not match the registry's SHA-256.")
        return cached
    return download(url, entry.sha256, folder, repr(name), fname=entry.file_name)


def card(name: str) -> dict | None:
    """The model card of the registered model ``name`` (training data, classes, genes, measured
    cross-validation accuracy, date), read from its checkpoint when it is bundled or cached;
    None for an encoder or a model not downloaded yet.

    Examples
    --------
    >>> card("pbmc")["classes"][:3]
    ['B', 'CD14+ Mono', 'CD8 T']
    """
    from .model._screformer import read_checkpoint

    entry = available()[name]
    path = entry.bundled if entry.bundled is not None else cache_dir() / entry.file_name
    if not path.exists():
        return None
    return read_checkpoint(path)[1].get("card")


def download(
    url: str, sha256: str | None, folder: str | os.PathLike, what: str, fname: str | None = None
) -> Path:
    """``url`` fetched once into ``folder`` by pooch (checked against ``sha256`` when given).

    Raises ``ValueError`` on a checksum mismatch (the file is not kept) and ``OSError`` when the
    file cannot be downloaded, each naming ``what`` and the URL.
    """
    try:
        path = pooch.retrieve(
            url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=fname, path=folder
        )
    except ValueError as err:  # pooch: hash mismatch; the download is discarded
        raise ValueError(
            f"The file at {url} does not match the SHA-256 of {what} (corrupted or replaced); "
            f"nothing was cached. {err}"
        ) from err
    except Exception as err:  # network errors come from requests, under several types
        raise OSError(
            f"Could not download {what} from {url} ({type(err).__name__}: {err}). Check the "
            f"network, set {MIRROR_ENV} to a reachable copy of a registered model, or pass a "
            "local path."
        ) from err
    return Path(path)


# Shipped inside the package: pre-trained on the ~7,000 cells of the project's shared data
# (docs: "The bundled default model"; benchmarks/build_default_model.py rebuilds it).
_register_bundled(
    "default",
    "default_model.pt",
    "4b383a58faadba710e47aae9683b21142108fbdff104325a9410a48deeaf5bce",
    "small encoder (dim 32, depth 2, 14,737 genes) pre-trained on ~7,000 cells; bundled",
)

# Ready-to-use classifiers, shipped inside the package with their model cards
# (benchmarks/build_classifiers.py rebuilds them; `screformer models` prints the cards).
_register_bundled(
    "pbmc",
    "classifier_pbmc.pt",
    "094e45b5701d7491628008391f554c90bd9a96f95e941a7d2a459c945d3441cc",
    "classifier: blood immune cells (9 types of pbmc3k), uHAF Blood tier 1; bundled",
)
_register_bundled(
    "heart",
    "classifier_heart.pt",
    "4aa708b2a6c0a0bf022901d18966c3681c742c1f6cb8bae6972f05293d44c5d0",
    "classifier: 11 types of the adult heart atlas, uHAF Heart tier 1; bundled",
)
