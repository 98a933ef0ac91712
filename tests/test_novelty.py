"""The novelty reference: its three kinds of evidence, their calibration, old checkpoints."""

import numpy as np
import pytest
from scipy import sparse

from screformer.model import NoveltyReference


@pytest.fixture
def two_types():
    rng = np.random.default_rng(0)
    X = rng.poisson(3, (400, 30)).astype(np.float32)
    X[200:, :15] = 0  # type 1 lacks the first 15 genes
    labels = np.repeat([0, 1], 200)
    logits = np.c_[labels == 0, labels == 1] * 4.0 + rng.normal(0, 1, (400, 2))
    features = np.c_[logits, rng.normal(0, 1, (400, 3))]
    train, validation = np.arange(0, 400, 2), np.arange(1, 400, 2)
    outputs = lambda rows: (logits[rows], features[rows])  # noqa: E731
    reference = NoveltyReference.fit(sparse.csr_matrix(X), labels, train, validation, 0, outputs)
    return reference, sparse.csr_matrix(X), labels, validation, outputs


def test_typical_cells_score_low_and_each_kind_of_evidence_flags_a_cell(two_types):
    reference, X, labels, validation, outputs = two_types
    scores = reference.score(X[validation], labels[validation], outputs(validation))
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.mean(scores > 0.99) <= 0.02  # calibrated: about 1% of typical cells above 0.99
    logits, features = outputs(validation[:1])
    cell = X[validation[:1]]  # a typical type-0 cell, then made unusual one way at a time
    assert reference.score(cell, np.array([0]), (logits, features))[0] < 0.99
    unlike = sparse.csr_matrix(np.full((1, 30), 20.0))
    assert reference.score(unlike, np.array([0]), (logits, features))[0] == 1
    assert reference.score(cell, np.array([0]), (logits, features + 50))[0] == 1
    assert reference.score(cell, np.array([0]), (logits - 50, features))[0] == 1


def test_too_few_validation_cells_leave_the_expression_part_alone(two_types):
    reference, X, labels, validation, outputs = two_types
    few = NoveltyReference.fit(X, labels, np.arange(0, 400, 2), validation[:99], 0, outputs)
    assert few.combined_calibration is None and few.feature_means is None
    np.testing.assert_array_equal(
        few.score(X[validation], labels[validation], outputs(validation)),
        few.score(X[validation], labels[validation]),
    )


def test_a_checkpoint_without_the_model_evidence_scores_by_expression(two_types):
    reference, X, labels, validation, outputs = two_types
    payload = reference.to_checkpoint()
    old = {k: v for k, v in payload.items() if not k.startswith(("feature", "energy", "combined"))}
    loaded = NoveltyReference.from_checkpoint(old)
    assert loaded.combined_calibration is None
    expression_only = reference.score(X[validation], labels[validation])
    np.testing.assert_array_equal(
        loaded.score(X[validation], labels[validation], outputs(validation)), expression_only
    )
    full = NoveltyReference.from_checkpoint(payload)
    np.testing.assert_array_equal(full.feature_precision, reference.feature_precision)


def test_a_model_with_100_validation_cells_scores_with_its_own_outputs():
    import screformer
    from screformer.tl._annotate import label_cells

    from .conftest import TINY, TINY_TRAIN, make_counts

    adata = make_counts(n_per_class=350)  # 10% validation: 105 cells
    model = screformer.tl.annotate(
        adata, "cell_type", config=TINY, **TINY_TRAIN | {"max_epochs": 1}
    )
    reference = model.novelty_
    assert reference.combined_calibration is not None and reference.feature_means is not None
    assert reference.feature_means.shape == (3, TINY["mlp_hidden"][-1])
    prepared = model.prepare(adata)
    logits, features = model._logits_and_features(prepared.X)
    expected = reference.score(prepared.X, logits.argmax(1), (logits, features))
    assert not np.allclose(
        expected, reference.score(prepared.X, logits.argmax(1))
    )  # not expression
    result = label_cells(model, prepared, adata.obs_names, 0.0, None, "screformer")
    np.testing.assert_allclose(result.novelty, expected)
    np.testing.assert_allclose(adata.obs["screformer_novelty"], expected)


def test_unmeasured_genes_take_the_training_mean(two_types):
    reference, X, labels, validation, _ = two_types
    unmeasured = np.zeros(X.shape[1], dtype=bool)
    unmeasured[[0, 3, 20]] = True
    imputed = X[validation].toarray()
    for position, gene in enumerate(reference.genes):
        if unmeasured[gene]:
            imputed[:, gene] = reference.mean[position]
    np.testing.assert_allclose(
        reference.distance(X[validation], labels[validation], unmeasured),
        reference.distance(sparse.csr_matrix(imputed), labels[validation]),
        rtol=1e-5,
    )
