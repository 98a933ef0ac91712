"""uHAF trees: the bundled copy, label matching, and the datasets' labels."""

import anndata as ad
import pytest

from screformer import uhaf

from .conftest import DATA_DIR, require


def test_bundled_trees_are_the_xlsx():
    path = require(DATA_DIR / "reference" / "uHAF2.2.0.xlsx")
    assert uhaf.read_uhaf_xlsx(path) == uhaf._bundled()


def test_heart_tree_shape():
    tree = uhaf.load_tree("heart")  # organ names are case-insensitive
    assert tree.organ == "Heart"
    assert {"Cardiomyocyte cell", "Fibroblast", "Endothelial cell", "Lymphoid cell"} <= set(
        tree.first_tier
    )
    assert tree.path("Atrial cardiomyocyte cell") == [
        "Cardiomyocyte cell",
        "Atrial cardiomyocyte cell",
    ]
    assert tree.ancestor("Cardiomyocyte cell", tier=2) is None
    with pytest.raises(KeyError, match="not a cell type"):
        tree.path("Hepatocyte")
    with pytest.raises(KeyError, match="No uHAF tree"):
        uhaf.load_tree("Atlantis")


def test_every_pbmc3k_label_maps_to_a_blood_first_tier_type():
    adata = ad.read_h5ad(require(DATA_DIR / "labelled" / "pbmc3k_labelled.h5ad"))
    result = uhaf.map_labels(adata.obs["classified"], "Blood")
    assert not result.unmapped
    first_tier = set(uhaf.load_tree("Blood").first_tier)
    assert set(result.mapped.values()) <= first_tier
    assert result.mapped["CD14+ Mono"] == result.mapped["DC"] == "Myeloid cell"
    assert result.mapped["B"] == result.mapped["Naive CD4 T"] == "Lymphoid cell"
    assert result.nodes["FCGR3A+ Mono"] == "Monocyte"


def test_every_heart_label_maps_to_a_heart_first_tier_type():
    adata = ad.read_h5ad(require(DATA_DIR / "labelled" / "heart_litvinukova_sanger_624cells.h5ad"))
    result = uhaf.map_labels(adata.obs["cell_type"], "Heart")
    assert not result.unmapped, result.report()
    assert set(result.mapped.values()) <= set(uhaf.load_tree("Heart").first_tier)
    assert result.mapped["Ventricular_Cardiomyocyte"] == "Cardiomyocyte cell"
    assert result.mapped["Atrial_Cardiomyocyte"] == "Cardiomyocyte cell"
    assert result.nodes["Ventricular_Cardiomyocyte"] == "Ventricle cardiomyocyte cell"
    assert len(set(result.mapped.values())) == 10  # 11 types, the two cardiomyocytes merged


def test_unmapped_labels_are_reported_and_a_user_mapping_fixes_them():
    labels = ["Activated fibroblasts", "Blob cell", "Cardiomyocyte cell"]
    result = uhaf.map_labels(labels, "Heart", tier=2)
    assert result.mapped == {"Activated fibroblasts": "Activated fibroblast"}
    assert "not in the tree" in result.unmapped["Blob cell"]
    assert "coarser than tier 2" in result.unmapped["Cardiomyocyte cell"]
    assert "Blob cell" in result.report()
    fixed = uhaf.map_labels(["Blob cell"], "Heart", mapping={"Blob cell": "Purkinje cell"})
    assert fixed.mapped == {"Blob cell": "Cardiomyocyte cell"}
    wrong = uhaf.map_labels(["Blob cell"], "Heart", mapping={"Blob cell": "Nonsense"})
    assert "your mapping's name 'Nonsense'" in wrong.unmapped["Blob cell"]
    with pytest.raises(ValueError, match="tier"):
        uhaf.map_labels(["Fibroblast"], "Heart", tier=0)


def test_matching_rules():
    tree = uhaf.load_tree("Blood")
    assert tree.find("naive_CD4_T_cells") == ["Naive CD4 T cell"]
    assert tree.find("CD14+ Mono") == ["Monocyte"]
    assert tree.find("DCs") == ["Dendritic cell"]
    assert tree.find("Unicorn") == []
