"""SCReformer: the scvi-tools-style model class users hold."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anndata
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data._constants import _MANAGER_UUID_KEY, _SCVI_UUID_KEY
from scvi.data.fields import CategoricalObsField, LabelsWithUnlabeledObsField, LayerField
from scvi.model._utils import parse_device_args
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner
from tqdm.auto import tqdm

from .. import __version__, pretrained
from .._io import atomic_write
from ..data import Augmentation, CellDataModule, cell_loader, repeat_rare, stratified_split
from ..gene2vec import read_gene2vec
from ..module import ReformerConfig, SCReformerModule
from ..pp import PreparedData, data_gene_names, genes_by_dispersion, prepare, unique_panel
from ..pp._genes import normalize_gene_name
from ..train import AverageWeights, ClassifierTrainingPlan, RestoreBestWeights, fit_temperature
from ._novelty import NoveltyReference

logger = logging.getLogger("screformer")

CHECKPOINT_NAME = "model.pt"
ANNDATA_NAME = "adata.h5ad"
_FORMAT_VERSION = 1
# What a checkpoint holds: a pretrained encoder (no cell types; fine-tuned on labelled cells) or
# a classifier (predicts at once).
CHECKPOINT_KINDS = ("encoder", "classifier")
# Classes with fewer training cells than this are named in a warning.
_FEW_CELLS = 3


def epochs_for(n_train_cells: int) -> int:
    """The default ``max_epochs``: about 12,000 cell passes, kept within 12 to 50 epochs.

    Chosen on an inner split of the training cells of pbmc3k's and the heart's first
    cross-validation fold (``benchmarks/choose_defaults.py``): pbmc3k peaked at 12 epochs, the
    heart (about 400 training cells) at about 30. Early stopping ends most fits sooner.

    Examples
    --------
    >>> epochs_for(2_137), epochs_for(450), epochs_for(100)
    (12, 27, 50)
    """
    return int(np.clip(round(12_000 / n_train_cells), 12, 50))


def averages_enough(decay: float, n_batches: int) -> bool:
    """Whether a moving average of the weights over ``n_batches`` has forgotten the initial
    weights: their share in it, ``decay ** n_batches``, is at most a tenth.

    The default epochs (:func:`epochs_for`, 12,000 cell passes, at least 750 batches of 16 for
    240 training cells or more) pass with the default decay; a fit of a few epochs does not.

    Examples
    --------
    >>> averages_enough(0.995, 750), averages_enough(0.995, 100), averages_enough(0.5, 8)
    (True, False, True)
    """
    return decay**n_batches <= 0.1


class SCReformer(BaseModelClass):
    """scReformer-BERT cell-type classifier.

    Every gene of the model's panel is read by a Reformer encoder (LSH attention, reversible
    layers) from a gene-identity + expression-bin + position embedding; a 1-D convolution and a
    3-layer MLP turn the encoder output into cell-type probabilities (Li et al. 2025, after
    scBERT).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`. Its labelled cells define the classes.
    gene_panel
        The model's genes, in token order. Default: the genes of ``adata`` (``var_names`` or the
        ``gene_symbols`` column), first occurrence of each name kept.
    config
        A :class:`~screformer.module.ReformerConfig` or its dict; default
        ``ReformerConfig(n_genes=len(gene_panel), **config_kwargs)``.
    gene_vectors
        Initial gene embeddings: a ``(len(gene_panel), dim)`` array, or the path or URL of a
        gene2vec text file (``SYMBOL v1 ... v_dim`` per line, see
        :func:`screformer.gene2vec.read_gene2vec`).
    classes
        Class names in output order (default: the labels of ``adata``'s labelled cells, sorted).
    registry
        Used by :meth:`load` to build a model without data.
    seed
        Seed of the initial weights, drawn in a forked RNG so the caller's random state is
        untouched; ``None`` draws them from torch's global generator.
    **config_kwargs
        Fields of :class:`~screformer.module.ReformerConfig` (``token_mode``, ``dim``, ...).

    Examples
    --------
    >>> import screformer
    >>> screformer.SCReformer.setup_anndata(adata, labels_key="cell_type")  # doctest: +SKIP
    >>> model = screformer.SCReformer(adata)  # doctest: +SKIP
    >>> model.train(max_epochs=10)  # doctest: +SKIP
    >>> probabilities = model.predict(query, soft=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: AnnData | None = None,
        *,
        gene_panel: list[str] | None = None,
        config: ReformerConfig | dict | None = None,
        gene_vectors: np.ndarray | str | os.PathLike | None = None,
        classes: list[str] | None = None,
        registry: dict | None = None,
        seed: int | None = 0,
        **config_kwargs,
    ):
        super().__init__(adata, registry=registry)
        # scvi-tools' record of the constructor's arguments (data and registry left out).
        self.init_params_ = self._get_init_params(locals())
        setup_args = self.registry_["setup_args"]
        self.layer = setup_args["layer"]
        self.gene_symbols = setup_args["gene_symbols"]
        if gene_panel is None:
            if adata is None:
                raise ValueError("gene_panel is needed when no adata is given.")
            gene_panel = unique_panel(data_gene_names(adata, self.gene_symbols))
        self.gene_panel = [str(g) for g in gene_panel]
        if classes is None:
            classes = self._classes_from_labels()
        if len(classes) < 2:
            raise ValueError(
                f"Found {len(classes)} cell type(s) among the labelled cells ({list(classes)}); "
                "a classifier needs at least two. Check labels_key and unlabeled_category."
            )
        self.classes = [str(c) for c in classes]
        if isinstance(config, dict):
            config = ReformerConfig.from_dict(config)
        if config is None:
            config = ReformerConfig(n_genes=len(self.gene_panel), **config_kwargs)
        elif config_kwargs:
            raise ValueError("Pass either config or configuration keywords, not both.")
        if config.n_genes != len(self.gene_panel):
            raise ValueError(
                f"config.n_genes={config.n_genes} differs from the panel size "
                f"{len(self.gene_panel)}."
            )
        self.config = config
        if isinstance(gene_vectors, str | os.PathLike):
            gene_vectors, _ = read_gene2vec(gene_vectors, self.gene_panel, dim=config.dim)
        self.module = build_module(config, len(self.classes), gene_vectors, seed)
        self.gene_overlap_: dict | None = None
        self.train_params_: dict = {}
        # What the encoder was pretrained on, when it comes from a pretrained checkpoint.
        self.pretrained_: dict | None = None
        # Divides the logits before the softmax; fitted by train(calibrate=True).
        self.temperature_: float = 1.0
        # Training cells in PCA space, for novelty scores (fitted by train on validation cells).
        self.novelty_: NoveltyReference | None = None
        # uHAF types above the classes ({"organ", "tier", "version", "mapping"}), set by
        # tl.annotate(uhaf_organ=...): predictions are also written at that tier.
        self.uhaf_: dict | None = None
        # A bundled classifier's model card (training data, classes, measured accuracy).
        self.card_: dict | None = None
        self._model_summary_string = (
            f"SCReformer: {len(self.gene_panel)} panel genes, {len(self.classes)} classes, "
            f"token_mode={config.token_mode}, dim={config.dim}, depth={config.depth}, "
            f"heads={config.heads}, bucket_size={config.bucket_size}"
        )

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str | None = None,
        unlabeled_category: str = "Unknown",
        layer: str | None = None,
        gene_symbols: str | None = None,
        **kwargs,
    ):
        """Register ``adata``: where its expression values and labels are.

        Parameters
        ----------
        adata
            Cells x genes, raw counts or log-normalised.
        labels_key
            ``obs`` column with cell types (cells labelled ``unlabeled_category`` are not trained
            on). ``None`` for data to predict only.
        unlabeled_category
            Label of cells without a cell type.
        layer
            Layer with the expression values (default ``adata.X``).
        gene_symbols
            ``var`` column with the gene names to match the panel (default ``var_names``).
        """
        if labels_key is not None:
            if labels_key not in adata.obs:
                raise KeyError(
                    f"labels_key={labels_key!r} is not a column of adata.obs "
                    f"(columns: {list(adata.obs.columns)})."
                )
            n_missing = int(adata.obs[labels_key].isna().sum())
            if n_missing:
                raise ValueError(
                    f"adata.obs[{labels_key!r}] has {n_missing} missing labels; fill them with "
                    f"{unlabeled_category!r} to mark those cells as unlabelled."
                )
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"layer={layer!r} is not in adata.layers ({list(adata.layers.keys())}).")
        if gene_symbols is not None and gene_symbols not in adata.var:
            raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of adata.var.")
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            # scvi-tools' labels field fails without a labels column: a placeholder field then.
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category)
            if labels_key is not None
            else CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with warnings.catch_warnings():
            # scvi-tools names the rare class by its code in an internal column; train() warns
            # about rare classes by name instead.
            warnings.filterwarnings("ignore", message=_SCVI_RARE_CATEGORY, category=UserWarning)
            manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _label_codes(self) -> tuple[np.ndarray, np.ndarray, str]:
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY).ravel()
        return (
            codes.astype(np.int64),
            np.asarray(state.categorical_mapping),
            state.unlabeled_category,
        )

    def _classes_from_labels(self) -> list[str]:
        if self.registry_["setup_args"].get("labels_key") is None:
            return []  # registered without labels: no classes to learn
        codes, mapping, unlabeled = self._label_codes()
        present = np.unique(codes)
        return sorted(str(mapping[c]) for c in present if mapping[c] != unlabeled)

    def _class_indices(self) -> np.ndarray:
        """Class index of each cell of the registered AnnData; -1 for unlabelled cells."""
        codes, mapping, _ = self._label_codes()
        lookup = {name: i for i, name in enumerate(self.classes)}
        per_code = np.array([lookup.get(str(name), -1) for name in mapping])
        return per_code[codes]

    def prepare(self, adata: AnnData | None = None) -> PreparedData:
        """``adata`` (default: the registered one) on the model's gene panel."""
        adata = self.adata if adata is None else adata
        if adata is None:
            raise ValueError("This model holds no AnnData: pass adata=.")
        return prepare(adata, self.gene_panel, layer=self.layer, gene_symbols=self.gene_symbols)

    # ------------------------------------------------------------------ train
    def train(
        self,
        max_epochs: int | None = None,
        lr: float = 1e-3,
        batch_size: int = 16,
        accumulate_grad_batches: int = 1,
        validation_size: float = 0.1,
        early_stopping: bool = True,
        early_stopping_patience: int = 5,
        accelerator: str = "auto",
        devices: int | str = "auto",
        seed: int = 0,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.1,
        class_weight: str | None = "balanced",
        min_class_cells: int | None = 20,
        num_workers: int = 0,
        calibrate: bool = False,
        augment: bool | Augmentation = True,
        ema_decay: float | None = 0.995,
        only_genes=None,
        **trainer_kwargs,
    ):
        """Fine-tune on the labelled cells of the registered AnnData.

        AdamW with a linear warm-up then cosine decay of the learning rate, optional gradient
        accumulation, and early stopping on a stratified validation split; the weights of the
        best validation epoch are kept. The GPU is used when there is one
        (``accelerator="auto"``).

        Parameters
        ----------
        max_epochs
            Passes over the training cells; default :func:`epochs_for` the number of training
            cells (12 for pbmc3k, 27 for the heart's 450).
        lr
            Peak learning rate.
        batch_size
            Cells per step; the effective batch is ``batch_size * accumulate_grad_batches``.
        accumulate_grad_batches
            Steps whose gradients are summed before each optimiser update.
        validation_size
            Share of each class held out for validation (0 disables validation).
        early_stopping, early_stopping_patience
            Stop after this many epochs without a lower validation loss (the paper: 5).
        accelerator, devices
            Lightning's device choice.
        seed
            Seed of the split, the initial shuffles and torch.
        weight_decay, warmup_fraction
            AdamW weight decay; share of steps for the warm-up.
        class_weight
            Loss weight per class against imbalance: ``"balanced"`` (``n / (k * n_class)``, the
            default: every type counts as much in the loss, so rare types are learnt),
            ``"sqrt"`` (its square root) or ``None``.
        min_class_cells
            A type with fewer training cells is drawn again (with replacement) until it has
            this many rows per epoch, each repeat augmented afresh
            (``screformer.data.repeat_rare``); ``class_weight`` then weighs the rows. ``None``
            or 0: each cell once. The default, 20, was set before it was measured and not
            tuned; on the transfer benchmark it lifted the PBMC transfers and heart folds whose
            references hold types of a few cells (``docs/transfer.md``). ``max_epochs``'
            default counts each cell once.
        num_workers
            DataLoader worker processes.
        calibrate
            Fit a temperature on the validation cells after training (temperature scaling, Guo
            et al. 2017) so that confidences match accuracy; it changes no predicted label,
            only which cells fall under ``unassigned_threshold``. Stored as ``temperature_``.
        augment
            Randomly drop panel genes per batch and thin cells to a lower depth while training
            (:class:`~screformer.data.Augmentation`; ``True``: its defaults), so that the model
            labels queries that hold only some of its genes or were sequenced less deeply. For
            queries cut to their own highly variable genes, ``Augmentation(variable_share=0.5)``
            also trains on the panel's most variable genes alone (``docs/transfer.md``).
        ema_decay
            Validate and keep an exponential moving average of the weights instead of the
            weights themselves, with this decay per batch (the default 0.995: about the last 200
            batches; :class:`~screformer.train.AverageWeights`). ``None``: the weights
            themselves. The average is steadier from one training seed to the next and scored
            higher on the transfer benchmark's cross-study stages (``docs/transfer.md``); small
            references train more epochs with it, because its validation loss keeps falling. A
            fit with too few batches to forget the initial weights (:func:`averages_enough`)
            keeps the weights themselves, with a warning.
        only_genes
            Gene names: train as if the panel's other genes were never measured (they are
            removed from the training cells). ``tl.annotate`` passes the query's genes when it
            fine-tunes a pretrained encoder, whose panel is fixed, for a given query.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (a Lightning ``Trainer``).
        """
        params = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "trainer_kwargs", "only_genes", "augment")
        }
        params["augment"] = bool(augment)
        if self.adata is None or self.registry_["setup_args"].get("labels_key") is None:
            raise ValueError(
                "Training needs labelled cells: register an AnnData with "
                "SCReformer.setup_anndata(adata, labels_key=...) and pass it to the model "
                "(SCReformer(adata) or SCReformer.load(path, adata))."
            )
        # Built first so that a bad decay is refused before the data are prepared.
        averaging = None if ema_decay is None else AverageWeights(ema_decay)
        if min_class_cells is not None and min_class_cells < 0:
            raise ValueError(f"min_class_cells must be >= 0 or None, not {min_class_cells}.")
        pl.seed_everything(seed, verbose=False)
        prepared = self.prepare()
        X = prepared.X
        if only_genes is not None:
            X = _keep_genes(X, self.gene_panel, only_genes)
        labels = self._class_indices()
        usable = labels >= 0
        empty = np.diff(X.indptr) == 0
        n_empty = int((usable & empty).sum())
        if n_empty:
            warnings.warn(
                f"{n_empty} labelled cells express none of the panel genes and are not trained on.",
                stacklevel=2,
            )
        usable &= ~empty
        cells = np.flatnonzero(usable)
        counts = np.bincount(labels[cells], minlength=len(self.classes))
        if (counts == 0).any():
            missing = [c for c, n in zip(self.classes, counts, strict=True) if n == 0]
            raise ValueError(f"No usable training cells for classes {missing}.")
        train, val = stratified_split(labels[cells], validation_size, seed)
        train_idx, val_idx = cells[train], cells[val]
        train_counts = np.bincount(labels[train_idx], minlength=len(self.classes))
        rare = [(c, n) for c, n in zip(self.classes, train_counts, strict=True) if n < _FEW_CELLS]
        if rare:
            listed = ", ".join(f"{c!r} ({n})" for c, n in rare)
            warnings.warn(
                f"Cell types with fewer than {_FEW_CELLS} training cells: {listed}; the model "
                "may not learn to recognise them.",
                stacklevel=2,
            )
        if max_epochs is None:
            max_epochs = epochs_for(len(train_idx))
        # What each epoch trains on: the training cells, rare types' drawn again.
        train_rows = cells[repeat_rare(train, labels[cells], min_class_cells, seed)]
        if averaging is not None:
            n_batches = max_epochs * -(-len(train_rows) // batch_size)
            if not averages_enough(ema_decay, n_batches):
                warnings.warn(
                    f"{n_batches} training batches are too few for a moving average of the weights "
                    f"with decay {ema_decay} (the initial weights would still weigh "
                    f"{ema_decay**n_batches:.0%}): training keeps the weights themselves. Pass "
                    "more max_epochs or a lower ema_decay to average.",
                    stacklevel=2,
                )
                averaging = params["ema_decay"] = None
        repeats = len(train_rows) - len(train_idx)
        logger.info(
            "Training on %s cells%s, validating on %s, up to %d epochs.",
            f"{len(train_idx):,}",
            f" (rare types drawn {repeats:,} more times)" if repeats else "",
            f"{len(val_idx):,}",
            max_epochs,
        )
        if augment is True:
            augment = Augmentation()
        if augment and augment.variable_share and augment.gene_order is None:
            augment = dataclasses.replace(augment, gene_order=genes_by_dispersion(X[train_idx]))
        if early_stopping and len(val_idx) == 0:
            warnings.warn("No validation cells: early stopping is off.", stacklevel=2)
            early_stopping = False
        data = CellDataModule(
            X,
            labels,
            self.config,
            train_rows,
            val_idx,
            batch_size=batch_size,
            seed=seed,
            num_workers=num_workers,
            augment=augment or None,
        )
        plan = ClassifierTrainingPlan(
            self.module,
            lr=lr,
            weight_decay=weight_decay,
            warmup_fraction=warmup_fraction,
            class_weights=_class_weights(np.bincount(labels[train_rows]), class_weight),
        )
        callbacks = trainer_kwargs.pop("callbacks", [])
        if averaging is not None:
            callbacks.append(averaging)  # before RestoreBestWeights: see AverageWeights
        if len(val_idx):
            callbacks.append(RestoreBestWeights("validation_loss"))
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        self.module.train()  # a loaded or used model is in eval mode; Lightning keeps modes
        with quiet_lightning():
            runner = TrainRunner(
                self,
                training_plan=plan,
                data_splitter=data,
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                early_stopping=early_stopping,
                early_stopping_monitor="validation_loss",
                early_stopping_patience=early_stopping_patience,
                accumulate_grad_batches=accumulate_grad_batches,
                callbacks=callbacks,
                **trainer_kwargs,
            )
            runner()
        self.temperature_ = 1.0
        if calibrate and len(val_idx) == 0:
            raise ValueError("calibrate=True needs validation cells (validation_size > 0).")
        self.novelty_ = None
        if len(val_idx):
            # One pass over the validation cells: logits for the temperature and the accuracy,
            # logits and features for the novelty reference.
            logits, features = self._logits_and_features(X[val_idx])
            if calibrate:
                self.temperature_ = fit_temperature(
                    torch.from_numpy(logits), torch.from_numpy(labels[val_idx])
                )
            self.novelty_ = NoveltyReference.fit(
                X,
                labels,
                train_idx,
                val_idx,
                seed,
                outputs=lambda rows: self._logits_and_features(X[rows]),
                validation_outputs=(logits, features),
            )
            params["validation_accuracy"] = _warn_if_no_better_than_majority(
                logits.argmax(1), labels[val_idx], train_counts, self.classes
            )
        self.gene_overlap_ = prepared.alignment.report()
        self.train_params_ = params | dict(
            max_epochs=max_epochs,
            early_stopping=early_stopping,
            n_train_cells=len(train_idx),
            n_validation_cells=len(val_idx),
            # How many panel genes training saw, when restricted to a query's genes.
            only_genes=None if only_genes is None else int(np.unique(X.indices).size),
            temperature=self.temperature_,
        )

    # ---------------------------------------------------------------- predict
    @torch.inference_mode()
    def _run(self, X, fn, batch_size: int, seed: int = 0, unmeasured=None) -> np.ndarray:
        """``fn(gene_ids, bins, mask, values)`` over every cell (row of the prepared matrix
        ``X``), in row order; with ``unmeasured`` (a boolean mask over the panel with some True)
        also ``fn(..., unmeasured=mask)``.

        LSH attention hashes with random rotations at every call; a fixed seed (in a forked RNG,
        so the user's random state is untouched) makes predictions reproducible.
        """
        loader = cell_loader(X, self.config, batch_size=batch_size)
        order = np.concatenate(loader.batch_sampler.batches())  # unshuffled: deterministic
        device = next(self.module.parameters()).device
        extra = {}
        if unmeasured is not None and np.any(unmeasured):
            extra["unmeasured"] = torch.as_tensor(np.asarray(unmeasured, bool), device=device)
        self.module.eval()
        outputs = []
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for batch in tqdm(loader, desc="screformer", disable=None, leave=False):
                batch = {k: v.to(device) for k, v in batch.items()}
                inputs = batch["gene_ids"], batch["bins"], batch["mask"], batch.get("values")
                outputs.append(fn(*inputs, **extra).float().cpu())
        result = np.empty((X.shape[0], outputs[0].shape[1]), dtype=np.float32)
        result[order] = torch.cat(outputs).numpy()
        return result

    def predict(
        self, adata: AnnData | None = None, soft: bool = False, batch_size: int = 64
    ) -> np.ndarray | pd.DataFrame:
        """Cell types of ``adata`` (default: the registered AnnData).

        Returns
        -------
        With ``soft=False`` an array of class names (the most probable class of each cell); with
        ``soft=True`` a DataFrame of class probabilities, cells (``obs_names``) x classes.
        """
        probabilities = self.predict_proba(self.prepare(adata), batch_size)
        if not soft:
            return np.asarray(self.classes, dtype=object)[probabilities.argmax(1)]
        obs_names = (self.adata if adata is None else adata).obs_names
        return pd.DataFrame(probabilities, index=obs_names, columns=self.classes)

    def predict_proba(
        self, prepared: PreparedData, batch_size: int = 64, temperature: float | None = None
    ) -> np.ndarray:
        """Class probabilities, cells x classes, of data already on the panel (:meth:`prepare`).

        ``temperature`` divides the logits (default: ``temperature_``, 1 unless calibrated).
        """
        self._check_if_trained(warn=True)
        logits = self._run(
            prepared.X, self.module, batch_size, unmeasured=prepared.alignment.unmeasured
        )
        return self._softmax(logits, temperature)

    def predict_proba_and_novelty(
        self, prepared: PreparedData, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (as :meth:`predict_proba`) and each cell's novelty score (``None``
        for a model without a novelty reference), from one pass over the cells."""
        if self.novelty_ is None:
            return self.predict_proba(prepared, batch_size), None
        self._check_if_trained(warn=True)
        unmeasured = prepared.alignment.unmeasured
        logits, features = self._logits_and_features(prepared.X, batch_size, unmeasured)
        probabilities = self._softmax(logits)
        novelty = self.novelty_.score(
            prepared.X, probabilities.argmax(1), (logits, features), unmeasured
        )
        return probabilities, novelty

    def _logits_and_features(
        self, X, batch_size: int = 64, unmeasured=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the classifier's last hidden layer of the rows of prepared ``X``."""
        out = self._run(X, self.module.logits_and_features, batch_size, unmeasured=unmeasured)
        return out[:, : len(self.classes)], out[:, len(self.classes) :]

    def _softmax(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        temperature = self.temperature_ if temperature is None else temperature
        return torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()

    def get_latent_representation(
        self, adata: AnnData | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """Cell embeddings: the encoder output averaged over each cell's tokens, cells x dim."""
        return self._run(self.prepare(adata).X, self.module.cell_embedding, batch_size)

    # -------------------------------------------------------------- save/load
    def save(
        self,
        dir_path: str | os.PathLike,
        overwrite: bool = False,
        *,
        save_anndata: bool = False,
    ) -> None:
        """Write the model to ``dir_path/model.pt``: weights, configuration, gene panel, class
        order and setup arguments (a ``"classifier"`` checkpoint, see :func:`read_checkpoint`).

        Files are written to a temporary name and then renamed, so an interrupted save never
        leaves a half-written file. Of the arguments of
        :meth:`scvi.model.base.BaseModelClass.save`, ``prefix``, ``save_kwargs``,
        ``legacy_mudata_format``, ``datamodule`` and AnnData write options are not supported
        (passing them is a ``TypeError``).

        Parameters
        ----------
        dir_path
            Folder to write to (created when missing).
        overwrite
            Replace the files of a model saved there before.
        save_anndata
            Also write the model's AnnData to ``dir_path/adata.h5ad``; :meth:`load` reads it back
            when given no AnnData.
        """
        dir_path = Path(dir_path)
        target, data_file = dir_path / CHECKPOINT_NAME, dir_path / ANNDATA_NAME
        # A folder's adata.h5ad belongs to its model.pt: a save without data drops an old one.
        for path in (target, data_file):
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        if save_anndata and self.adata is None:
            raise ValueError("save_anndata=True, but this model holds no AnnData.")
        payload = checkpoint_payload(
            kind="classifier",
            config=self.config,
            gene_panel=self.gene_panel,
            classes=self.classes,
            state_dict=self.module.state_dict(),
            setup_args=dict(self.registry_["setup_args"]),
            is_trained=bool(self.is_trained_),
            gene_overlap=self.gene_overlap_,
            temperature=float(self.temperature_),
            novelty=None if self.novelty_ is None else self.novelty_.to_checkpoint(),
            uhaf=self.uhaf_,
        )
        if save_anndata:
            with atomic_write(data_file) as tmp:
                self.adata.write_h5ad(tmp)
        elif data_file.exists():
            data_file.unlink()
        write_checkpoint(payload, target)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SCReformer:
        """A saved model (its folder or ``model.pt``), or a registered pretrained model by name
        (``"default"`` is bundled; others are downloaded once with pooch, verified by SHA-256 and
        cached, see :mod:`screformer.pretrained`).

        Two kinds of checkpoint exist (their ``"kind"``, see :func:`read_checkpoint`). A trained
        ``"classifier"`` (from :meth:`save`) predicts at once; ``adata`` is optional. A pretrained
        ``"encoder"`` (from :func:`screformer.pretrain`) has no cell types yet: ``adata`` must be
        registered with labels by :meth:`setup_anndata`, and the returned model, on the
        encoder's gene panel with a fresh classifier head, is then fine-tuned with :meth:`train`.

        Examples
        --------
        >>> SCReformer.setup_anndata(adata, labels_key="cell_type")  # doctest: +SKIP
        >>> model = SCReformer.from_pretrained("default", adata)  # doctest: +SKIP
        >>> model.train()  # doctest: +SKIP
        >>> classifier = SCReformer.from_pretrained("my_model_dir")  # doctest: +SKIP
        """
        path = Path(name_or_path)
        if not path.exists():
            if str(name_or_path) not in pretrained.available():
                raise FileNotFoundError(
                    f"{str(name_or_path)!r} is neither a saved model (file or folder) nor a "
                    f"registered pretrained model ({sorted(pretrained.available()) or 'none'})."
                )
            path = pretrained.fetch(str(name_or_path))
        return cls.load(path, adata, accelerator=accelerator, device=device)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SCReformer:
        """Read a model written by :meth:`save` (or an encoder written by
        :func:`screformer.pretrain`, as :meth:`from_pretrained` does).

        Raises ``ValueError`` for a truncated or corrupted file. Of the arguments of
        :meth:`scvi.model.base.BaseModelClass.load`, ``prefix``, ``backup_url`` and the like
        are not supported (a ``TypeError``).

        Parameters
        ----------
        dir_path
            The folder :meth:`save` wrote, or its ``model.pt``.
        adata
            Cells to attach to the model (its :attr:`adata`): registered by
            :meth:`setup_anndata`, or else registered here with the model's saved setup
            arguments (labels left out when ``obs`` lacks the labels column). Its genes need
            not be the training genes (they are aligned to the saved panel). With labels the
            loaded model can be trained further (:meth:`train`). Default: the folder's
            ``adata.h5ad`` when ``save(..., save_anndata=True)`` wrote one, else none.
        accelerator, device
            Where the weights go (Lightning's choice; ``"auto"``: a GPU when there is one).
        """
        path, payload = read_checkpoint(dir_path)
        data_file = Path(dir_path) / ANNDATA_NAME
        if adata is None and data_file.is_file():
            adata = anndata.read_h5ad(data_file)  # a copy of the saved data: registered below
        if payload["kind"] == "encoder":
            return cls._from_encoder(payload, path, adata, accelerator, device)
        setup_args = payload["setup_args"]
        if adata is not None and not cls._is_registered(adata):
            # A copy of a registered AnnData carries that registration's keys: start afresh.
            for key in (_SCVI_UUID_KEY, _MANAGER_UUID_KEY):
                adata.uns.pop(key, None)
            stale = [c for c in adata.obs.columns if str(c).startswith("_scvi_")]
            adata.obs.drop(columns=stale, inplace=True)
            args = {k: v for k, v in setup_args.items() if k in _SETUP_KEYS}
            if args.get("labels_key") is not None and args["labels_key"] not in adata.obs:
                args["labels_key"] = None  # cells to predict: no labels needed
            cls.setup_anndata(adata, **args)
        model = cls(
            adata,
            gene_panel=payload["gene_panel"],
            config=payload["config"],
            classes=payload["classes"],
            registry={"setup_args": setup_args, "field_registries": {}},
        )
        model.module.load_state_dict(payload["state_dict"])
        model.module.eval()
        model.is_trained_ = payload["is_trained"]
        model.gene_overlap_ = payload["gene_overlap"]
        model.temperature_ = float(payload.get("temperature", 1.0))
        if payload.get("novelty") is not None:
            model.novelty_ = NoveltyReference.from_checkpoint(payload["novelty"])
        model.uhaf_ = payload.get("uhaf")
        model.card_ = payload.get("card")
        model._to_device(accelerator, device)
        return model

    @classmethod
    def _is_registered(cls, adata: AnnData) -> bool:
        """Whether ``adata`` itself (not a copy of a registered AnnData) is registered."""
        try:
            return cls._get_most_recent_anndata_manager(adata) is not None
        except ValueError:  # a copy: the registration belongs to the original
            return False

    @classmethod
    def _from_encoder(cls, payload: dict, path: Path, adata, accelerator, device) -> SCReformer:
        """A classifier for ``adata``'s labels on a pretrained encoder: the embeddings and the
        encoder come from the checkpoint, the classifier head starts afresh."""
        manager = None if adata is None else cls._get_most_recent_anndata_manager(adata)
        if manager is None or manager.registry["setup_args"].get("labels_key") is None:
            raise ValueError(
                f"{path} is a pretrained encoder without cell types: fine-tune it on labelled "
                "cells. Register them first (SCReformer.setup_anndata(adata, labels_key=...)), "
                "then SCReformer.from_pretrained(name_or_path, adata) and model.train()."
            )
        # The head is new, so it reads the bins as today's heads do; encoder_dropout, missing
        # from encoders saved before it, reads 0 (fine-tuning an encoder was not measured with it).
        config = payload["config"] | {"head_bins": ReformerConfig.head_bins}
        model = cls(adata, gene_panel=payload["gene_panel"], config=config)
        missing, unexpected = model.module.load_state_dict(payload["state_dict"], strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise ValueError(f"{path}: weights do not fit the configuration ({missing[:3]}...).")
        model.pretrained_ = {"path": str(path), **payload.get("pretraining", {})}
        model.pretrained_.pop("history", None)
        model._to_device(accelerator, device)
        return model

    def _to_device(self, accelerator, device) -> None:
        _, _, torch_device = parse_device_args(accelerator, device, return_device="torch")
        self.to_device(torch_device)


_SETUP_KEYS = ("labels_key", "unlabeled_category", "layer", "gene_symbols")
# scvi-tools' warning about a rare class, which names it by code in an internal column.
_SCVI_RARE_CATEGORY = r"Category .* in adata\.obs\['_scvi_labels'\] has fewer than"

# Third-party messages of every fit that tell a user of screformer nothing: Lightning's device
# report and advertising (logged), and deprecation notes about Lightning's own internals.
_QUIET_LOG_PREFIXES = (
    "GPU available",
    "TPU available",
    "HPU available",
    "💡 Tip",
    "Loading `train_dataloader` to estimate",
    "`Trainer.fit` stopped",
)
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_QUIET_WARNINGS = (
    r".*LeafSpec.* is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_LOG_PREFIXES)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence, for the duration of the block, the fixed third-party messages of a Lightning fit
    (device report, litlogger tip, deprecation notes on Lightning's internals). Logging and
    warning settings are restored afterwards; other messages pass."""
    drop = _DropMessages()
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    with warnings.catch_warnings():
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for log in loggers:
            log.addFilter(drop)
        try:
            yield
        finally:
            for log in loggers:
                log.removeFilter(drop)


def build_module(
    config: ReformerConfig,
    n_classes: int,
    gene_vectors: np.ndarray | None = None,
    seed: int | None = 0,
) -> SCReformerModule:
    """A :class:`~screformer.module.SCReformerModule` whose initial weights are drawn with
    ``seed`` in a fork of torch's RNG (the caller's random state is untouched); ``seed=None``
    draws them from torch's global generator. ``n_classes=0``: an encoder without a head."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return SCReformerModule(config, n_classes, gene_vectors)


def checkpoint_payload(
    *,
    kind: str,
    config: ReformerConfig | dict,
    gene_panel: list[str],
    state_dict: dict,
    classes: list[str] | None = None,
    setup_args: dict | None = None,
    **extra,
) -> dict:
    """The contents of a screformer checkpoint (``model.pt``), the one format for both kinds.

    Parameters
    ----------
    kind
        ``"classifier"`` (a model with cell types, from :meth:`SCReformer.save`) or
        ``"encoder"`` (a pretrained encoder without them, from :func:`screformer.pretrain`).
    config, gene_panel, state_dict
        The module's configuration, its genes in token order and its weights (moved to CPU).
    classes
        Class names in output order: at least two for a classifier, none for an encoder.
    setup_args
        :meth:`SCReformer.setup_anndata` arguments (default: no layer, no gene symbols column).
    **extra
        Further fields (``is_trained``, ``gene_overlap``, ``temperature``, ``pretraining``);
        they replace the defaults.
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {CHECKPOINT_KINDS}, not {kind!r}.")
    classes = [str(c) for c in (classes or [])]
    if kind == "classifier" and not classes:
        raise ValueError("A classifier checkpoint needs its classes.")
    if kind == "encoder" and classes:
        raise ValueError("An encoder checkpoint has no classes.")
    if isinstance(config, ReformerConfig):
        config = config.to_dict()
    return {
        "format_version": _FORMAT_VERSION,
        "screformer_version": __version__,
        "kind": kind,
        "config": dict(config),
        "gene_panel": [str(g) for g in gene_panel],
        "classes": classes,
        "setup_args": dict(setup_args or {"layer": None, "gene_symbols": None}),
        "is_trained": False,
        "gene_overlap": None,
        "temperature": 1.0,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }


def write_checkpoint(payload: dict, target: str | os.PathLike) -> None:
    """``torch.save`` through :func:`screformer._io.atomic_write`: an interrupted write never
    leaves a half-written checkpoint, and the file gets the umask's mode."""
    with atomic_write(target) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike) -> tuple[Path, dict]:
    """The path and contents of a screformer checkpoint (a ``model.pt`` or its folder).

    The contents are those of :func:`checkpoint_payload`, with ``"kind"`` always set: files
    written before that field existed are an ``"encoder"`` when they hold no classes, else a
    ``"classifier"``. A ``"classifier"`` without classes holds nothing but its encoder and is
    read as one.

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` for a truncated,
    corrupted or foreign file.
    """
    path = Path(path)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"No screformer checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not a readable screformer checkpoint (truncated or corrupted?): {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path} is not a screformer checkpoint of format {_FORMAT_VERSION}.")
    kind = payload.get("kind")
    if kind is not None and kind not in CHECKPOINT_KINDS:
        raise ValueError(f"{path}: unknown checkpoint kind {kind!r} (not {CHECKPOINT_KINDS}).")
    if kind is None or not payload.get("classes"):
        payload["kind"] = "classifier" if payload.get("classes") else "encoder"
    return path, payload


def _keep_genes(X, panel, genes):
    """``X`` (cells x ``panel``) with the panel genes not in ``genes`` removed (set to 0)."""
    keys = {normalize_gene_name(g) for g in genes}
    keep = np.array([normalize_gene_name(g) in keys for g in panel])
    X = X.copy()
    X.data[~keep[X.indices]] = 0
    X.eliminate_zeros()
    return X


def _warn_if_no_better_than_majority(predicted, truth, train_counts, classes) -> float:
    """The validation accuracy; a warning when it does not beat calling every cell the most
    common training type (a fit far too short, or labels these genes cannot tell apart)."""
    accuracy = float(np.mean(predicted == truth))
    majority = float(train_counts.max() / train_counts.sum())
    if accuracy <= majority:
        warnings.warn(
            f"Validation accuracy {accuracy:.2f} is no better than calling every cell "
            f"{classes[int(train_counts.argmax())]!r} ({majority:.2f}): the model has not "
            "learned the cell types. Train longer (max_epochs), check the labels, or use more "
            "labelled cells.",
            stacklevel=3,
        )
    return accuracy


def _class_weights(counts: np.ndarray, rule: str | None) -> torch.Tensor | None:
    if rule is None:
        return None
    if rule not in ("balanced", "sqrt"):
        raise ValueError(f"class_weight must be 'balanced', 'sqrt' or None, not {rule!r}.")
    counts = np.maximum(counts, 1).astype(np.float64)
    weights = counts.sum() / (len(counts) * counts)
    if rule == "sqrt":
        weights = np.sqrt(weights)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)
