import numpy as np
from scipy import sparse

from screformer.data import LengthGroupedBatches, repeat_rare, stratified_split, tokenize
from screformer.module import ReformerConfig

X = sparse.csr_matrix(
    np.array([[0, 2.5, 0, 7.0, 0], [1.2, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32)
)


def test_tokens_all_mode():
    cfg = ReformerConfig(n_genes=5, token_mode="all", value_encoding="absolute")
    t = tokenize(X, cfg)
    assert t["gene_ids"].shape == t["bins"].shape == t["mask"].shape == (3, 5)
    assert t["gene_ids"][1].tolist() == [0, 1, 2, 3, 4]
    assert t["bins"].tolist() == [[0, 2, 0, 5, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert t["mask"].all()


def test_tokens_expressed_mode_pads_per_batch():
    cfg = ReformerConfig(n_genes=5, token_mode="expressed", value_encoding="absolute")
    t = tokenize(X, cfg)
    assert t["gene_ids"].shape == (3, 2)  # the longest cell has 2 expressed genes
    assert t["gene_ids"].tolist() == [[1, 3], [0, 5], [5, 5]]  # 5 = padding gene id
    assert t["bins"].tolist() == [[2, 5], [1, 7], [7, 7]]  # 7 = padding bin (top_bin + 2)
    assert t["mask"].tolist() == [[True, True], [True, False], [False, False]]


def test_length_grouped_batches_cover_each_cell_once():
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    indices = np.arange(3, 103)
    shuffled = LengthGroupedBatches(indices, lengths, batch_size=8, shuffle=True)
    batches = list(shuffled)
    assert len(batches) == len(shuffled) == 13
    assert sorted(np.concatenate(batches).tolist()) == indices.tolist()
    assert list(shuffled) != batches  # a new order each epoch
    ordered = np.concatenate(list(LengthGroupedBatches(indices, lengths, 8, shuffle=False)))
    assert np.all(np.diff(lengths[ordered]) >= 0)


def test_stratified_split_keeps_singletons_in_training():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert set(train) | set(val) == set(range(16)) and not set(train) & set(val)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert 15 in train


def test_repeat_rare_tops_up_only_the_rare_types_from_their_own_cells():
    labels = np.array([0] * 30 + [1] * 3 + [2] * 8)
    train = np.arange(1, 41)  # cell 0 (type 0) is not a training cell
    rows = repeat_rare(train, labels, 10, seed=0)
    assert np.bincount(labels[rows]).tolist() == [29, 10, 10]
    assert set(train) <= set(rows) <= set(train)  # every cell kept, no new one
    assert set(rows[labels[rows] == 1]) == {30, 31, 32}
    assert np.array_equal(rows, repeat_rare(train, labels, 10, seed=0))
    assert not np.array_equal(rows, repeat_rare(train, labels, 10, seed=1))
    for off in (None, 0):
        assert np.array_equal(repeat_rare(train, labels, off), train)
