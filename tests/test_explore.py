"""Attribute exploration: tables, figures and summary.json of a packed dataset."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from facevae.data.attributes import CELEBA_ATTRIBUTE_RATES, CELEBA_ATTRIBUTES
from facevae.data.explore import attribute_statistics, explore, format_summary, phi_correlation, top_pairs
from facevae.data.packed import write_packed


def celeba_like_attributes(n: int, seed: int = 0) -> np.ndarray:
    """CelebA's 40 attributes at their published rates, with a few strongly correlated pairs."""
    rng = np.random.default_rng(seed)
    rates = np.array([CELEBA_ATTRIBUTE_RATES[a] for a in CELEBA_ATTRIBUTES])
    attrs = (rng.random((n, 40)) < rates).astype(np.uint8)
    col = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    male = attrs[:, col["Male"]]
    attrs[:, col["Wearing_Lipstick"]] = np.where(male == 1, rng.random(n) < 0.02, rng.random(n) < 0.8)
    lipstick = attrs[:, col["Wearing_Lipstick"]]
    attrs[:, col["Heavy_Makeup"]] = np.where(lipstick == 1, rng.random(n) < 0.75, rng.random(n) < 0.03)
    attrs[:, col["No_Beard"]] = np.where(male == 1, rng.random(n) < 0.6, 1)
    return attrs


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """One exploration shared by the tests that only read its outputs (figures take seconds)."""
    root = tmp_path_factory.mktemp("explore")
    n = 2000
    attrs = celeba_like_attributes(n)
    attrs[:, CELEBA_ATTRIBUTES.index("Bald")] = 0  # a constant attribute
    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    dataset = write_packed(root / "ds", images, attrs, CELEBA_ATTRIBUTES)
    return dataset, root / "e", explore(dataset, root / "e")


def strict_json(path):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_explore_writes_every_output(explored):
    dataset, out, summary = explored
    for name in ("attribute_frequencies.csv", "attribute_frequencies.png", "correlation_heatmap.png",
                 "correlation_matrix.csv", "top_correlations.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert strict_json(out / "summary.json") == json.loads(json.dumps(summary))
    assert summary["count"] == 2000 and summary["image_size"] == [8, 8] and summary["num_attributes"] == 40


def test_frequency_table_matches_numpy(explored):
    dataset, out, _ = explored
    rows = list(csv.DictReader(open(out / "attribute_frequencies.csv")))
    assert [r["attribute"] for r in rows] == CELEBA_ATTRIBUTES
    attrs = dataset.attributes
    for j, row in enumerate(rows):
        pos = int(attrs[:, j].sum())
        assert int(row["positives"]) == pos
        assert float(row["rate"]) == pytest.approx(pos / len(attrs), abs=1e-6)
        assert float(row["celeba_reference_rate"]) == CELEBA_ATTRIBUTE_RATES[row["attribute"]]
        if 0 < pos < len(attrs):
            assert float(row["imbalance_ratio"]) == pytest.approx(max(pos, 2000 - pos) / min(pos, 2000 - pos), rel=1e-3)
    bald = rows[CELEBA_ATTRIBUTES.index("Bald")]
    assert bald["imbalance_ratio"] == "inf" and bald["constant"] == "1"


def test_top_correlations_find_the_planted_pairs(explored):
    dataset, out, summary = explored
    top = summary["top_correlations"]
    assert len(top) == 20
    planted = {frozenset(p) for p in [("Male", "Wearing_Lipstick"), ("Heavy_Makeup", "Wearing_Lipstick"),
                                      ("Heavy_Makeup", "Male"), ("Male", "No_Beard")]}
    assert {frozenset((p["a"], p["b"])) for p in top[:4]} == planted
    first = top[0]
    assert {first["a"], first["b"]} == {"Male", "Wearing_Lipstick"} and first["sign"] == "negative"
    i, j = CELEBA_ATTRIBUTES.index(first["a"]), CELEBA_ATTRIBUTES.index(first["b"])
    assert first["r"] == pytest.approx(np.corrcoef(dataset.attributes[:, i], dataset.attributes[:, j])[0, 1], abs=1e-4)
    assert all(abs(a["r"]) >= abs(b["r"]) for a, b in zip(top, top[1:]))  # sorted by |r|
    rows = list(csv.DictReader(open(out / "top_correlations.csv")))
    assert len(rows) == 20 and rows[0]["sign"] == "negative" and float(rows[0]["correlation"]) < -0.5


def test_constant_attribute_never_makes_nan(explored):
    _, out, summary = explored
    stored = strict_json(out / "summary.json")  # raises on NaN / Infinity
    assert stored["constant_attributes"] == ["Bald"]
    assert stored["attributes"]["Bald"]["constant"] is True
    assert stored["attributes"]["Bald"]["imbalance_ratio"] is None
    b = CELEBA_ATTRIBUTES.index("Bald")
    assert all(v is None for v in stored["correlation"][b])
    assert stored["correlation"][0][0] == 1.0
    assert all("Bald" not in (p["a"], p["b"]) for p in summary["top_correlations"])
    assert any("constant" in note and "Bald" in note for note in summary["notes"])
    assert "nan" not in (out / "correlation_matrix.csv").read_text().lower()
    assert summary["most_imbalanced"][0]["name"] == "Bald"


def test_phi_correlation_equals_pearson_and_zeroes_constants():
    rng = np.random.default_rng(0)
    a = (rng.random((500, 5)) < [0.1, 0.5, 0.9, 0.0, 1.0]).astype(np.uint8)
    corr, constant = phi_correlation(a, chunk=128)  # several chunks
    assert constant.tolist() == [False, False, False, True, True]
    np.testing.assert_allclose(corr[:3, :3], np.corrcoef(a[:, :3].T), atol=1e-10)
    assert not np.isnan(corr).any() and (corr[3:, :] == 0).all() and (corr[:, 3:] == 0).all()
    stats = attribute_statistics(a)
    assert np.isinf(stats["imbalance"][3:]).all()
    assert top_pairs(corr, list("abcde"), constant, k=10) == top_pairs(corr[:3, :3], list("abc"), constant[:3], k=10)


def test_figures_are_big_and_not_blank(explored):
    _, out, _ = explored
    with Image.open(out / "correlation_heatmap.png") as img:
        assert img.width >= 1400 and img.height >= 1200  # 14 x 12 inches for 40 attributes
        colours = len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0))
    assert colours > 100
    with Image.open(out / "attribute_frequencies.png") as img:
        assert img.height > 900  # room for 40 labelled bars


def test_factors_and_non_celeba_names(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    attrs = (rng.random((n, 3)) < [0.2, 0.5, 0.7]).astype(np.uint8)
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 5, n)], axis=1)
    ds = write_packed(tmp_path / "ds", np.zeros((n, 4, 4, 3), np.uint8), attrs, ["smile", "glasses", "hat"],
                      factors=factors, factor_names=["hue", "angle"], factor_sizes=[3, 5])
    summary = explore(ds, tmp_path / "e")
    assert summary["attributes"]["smile"]["celeba_reference_rate"] is None
    assert [f["name"] for f in summary["factors"]] == ["hue", "angle"]
    assert summary["factors"][1]["value_counts"] == np.bincount(factors[:, 1], minlength=5).tolist()
    assert len(summary["top_correlations"]) == 3  # all pairs of 3 attributes
    text = format_summary(summary)
    assert "hue (3)" in text and "300 images" in text


def test_format_summary_is_a_table(explored):
    text = format_summary(explored[2])
    lines = text.splitlines()
    assert lines[0].startswith("2,000 images, 8x8, 40 attributes")
    bald = next(line for line in lines if line.startswith("Bald"))
    assert "constant" in bald
    assert any("Male ~ Wearing_Lipstick" in line for line in lines)
