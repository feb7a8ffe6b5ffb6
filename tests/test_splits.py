"""Splits: official / random / multi-label stratified, the distribution check, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facevae.common.errors import DatasetError
from facevae.data.attributes import CELEBA_ATTRIBUTE_RATES, CELEBA_ATTRIBUTES
from facevae.data.packed import PackedDataset, write_packed
from facevae.data.splits import (
    check_ratios,
    distribution_check,
    format_distribution_check,
    make_split,
    part_sizes,
    rebalance,
    split_dataset,
    stratified_assignment,
)


def celeba_like_attributes(n: int, seed: int = 0) -> np.ndarray:
    """CelebA's 40 attributes at their published rates (2% to 84%), with correlated pairs."""
    rng = np.random.default_rng(seed)
    rates = np.array([CELEBA_ATTRIBUTE_RATES[a] for a in CELEBA_ATTRIBUTES])
    attrs = (rng.random((n, 40)) < rates).astype(np.uint8)
    col = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    male = attrs[:, col["Male"]]
    attrs[:, col["Wearing_Lipstick"]] = np.where(male == 1, rng.random(n) < 0.02, rng.random(n) < 0.8)
    attrs[:, col["No_Beard"]] = np.where(male == 1, rng.random(n) < 0.6, 1)
    return attrs


def make_dataset(root, n=3000, partition=True, seed=0) -> PackedDataset:
    attrs = celeba_like_attributes(n, seed)
    kwargs = {}
    if partition:
        kwargs["partition"] = np.repeat(np.array([0, 1, 2], np.int8), [n - 2 * (n // 10), n // 10, n // 10])
    return write_packed(root, np.zeros((n, 4, 4, 3), np.uint8), attrs, CELEBA_ATTRIBUTES, **kwargs)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "ds")


def largest_deviation(dataset, assignment) -> float:
    return distribution_check(dataset.attributes, dataset.attribute_names, assignment)["max_deviation"]["value"]


def test_stratified_beats_random_on_rare_imbalanced_attributes(dataset):
    random_dev = largest_deviation(dataset, make_split(dataset, "random", (0.8, 0.1, 0.1), seed=0))
    strat_dev = largest_deviation(dataset, make_split(dataset, "stratified", (0.8, 0.1, 0.1), seed=0))
    # 300-image valid/test parts: random is several points off somewhere; stratified within ~1 image.
    assert random_dev > 0.02
    assert strat_dev < random_dev / 4, (strat_dev, random_dev)
    assert strat_dev <= 2.5 / 300


def test_stratified_keeps_rare_attribute_counts_proportional(dataset):
    assignment = make_split(dataset, "stratified", (0.8, 0.1, 0.1), seed=1)
    for name in ("Bald", "Mustache", "Gray_Hair", "Pale_Skin"):
        column = dataset.attributes[:, CELEBA_ATTRIBUTES.index(name)]
        total = column.sum()
        for part, share in ((1, 0.1), (2, 0.1)):
            assert abs(column[assignment == part].sum() - share * total) <= 1.5, name


def test_iterative_stratification_alone_drifts_on_common_attributes(dataset):
    # Why the rebalancing pass exists: without it, frequent attributes are poorly spread.
    raw = stratified_assignment(dataset.attributes, (0.8, 0.1, 0.1), seed=0, refine=False)
    refined = stratified_assignment(dataset.attributes, (0.8, 0.1, 0.1), seed=0)
    assert largest_deviation(dataset, refined) < largest_deviation(dataset, raw) / 3


@pytest.mark.parametrize("strategy", ["random", "stratified"])
@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.9, 0.0, 0.1)])
def test_part_sizes_match_ratios_exactly(dataset, strategy, ratios):
    assignment = make_split(dataset, strategy, ratios, seed=0)
    assert assignment.dtype == np.int8 and assignment.shape == (3000,)
    expected = part_sizes(3000, ratios)
    assert np.bincount(assignment, minlength=3).tolist() == expected.tolist()
    assert expected.tolist() == [round(r * 3000) for r in ratios]


def test_part_sizes_sum_to_n():
    for n in (1, 7, 10, 1001):
        assert part_sizes(n, (0.8, 0.1, 0.1)).sum() == n
    assert part_sizes(7, (1 / 3, 1 / 3, 1 / 3)).tolist() == [3, 2, 2]


@pytest.mark.parametrize("strategy", ["random", "stratified"])
def test_split_is_deterministic_for_a_seed(dataset, strategy):
    a = make_split(dataset, strategy, (0.8, 0.1, 0.1), seed=7)
    b = make_split(dataset, strategy, (0.8, 0.1, 0.1), seed=7)
    c = make_split(dataset, strategy, (0.8, 0.1, 0.1), seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).sum() > 100


def test_official_split_is_the_partition(dataset):
    np.testing.assert_array_equal(make_split(dataset, "official"), dataset.partition)


def test_errors_are_clear(dataset, tmp_path):
    with pytest.raises(ValueError, match="sum to 1"):
        make_split(dataset, "random", (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        check_ratios((1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match="three numbers"):
        check_ratios((0.5, 0.5))
    with pytest.raises(ValueError, match="three numbers"):
        check_ratios("abc")
    with pytest.raises(ValueError, match="train part cannot be empty"):
        check_ratios((0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown split strategy 'kfold'.*official, random, stratified"):
        make_split(dataset, "kfold")
    no_partition = make_dataset(tmp_path / "np", n=50, partition=False)
    with pytest.raises(DatasetError, match="no official partition"):
        make_split(no_partition, "official")
    with pytest.raises(ValueError, match="reserved"):
        split_dataset(dataset, "random", (0.8, 0.1, 0.1), 0, name="official")
    with pytest.raises(ValueError, match="split name"):
        split_dataset(dataset, "random", (0.8, 0.1, 0.1), 0, name="../evil")


def test_distribution_check_by_hand():
    attrs = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 1], [0, 0]], np.uint8)
    assignment = np.array([0, 0, 0, 1, 2, -1], np.int8)
    report = distribution_check(attrs, ["a", "b"], assignment)
    assert report["sizes"] == {"train": 3, "valid": 1, "test": 1, "unused": 1}
    a = report["attributes"]["a"]
    assert a["overall"] == pytest.approx(3 / 5) and a["train"] == pytest.approx(2 / 3)
    assert a["valid"] == 0.0 and a["test"] == 1.0
    assert a["deviation"]["valid"] == pytest.approx(0.6) and a["max_deviation"] == pytest.approx(0.6)
    assert report["attributes"]["b"]["deviation"]["test"] == pytest.approx(0.4)  # b: overall 3/5, test 1
    assert report["max_deviation"] == {"attribute": "a", "part": "valid", "value": pytest.approx(0.6)}
    empty = distribution_check(attrs, ["a", "b"], np.array([0, 0, 0, 0, 2, 2], np.int8))
    assert empty["attributes"]["a"]["valid"] is None and empty["attributes"]["a"]["deviation"]["valid"] is None
    assert "valid 0" in format_distribution_check(empty)


def test_format_distribution_check(dataset):
    _, report = split_dataset(dataset, "stratified", (0.8, 0.1, 0.1), seed=0)
    text = format_distribution_check(report)
    lines = text.splitlines()
    assert lines[0].startswith("split 'stratified': strategy stratified, seed 0, ratios 0.8/0.1/0.1")
    assert "train 2,400, valid 300, test 300" in lines[1]
    assert lines[2].split() == ["attribute", "overall", "train", "valid", "test", "max", "dev"]
    assert sum(line.startswith("Bald ") for line in lines) == 1
    worst = report["max_deviation"]
    assert lines[-1].startswith(f"largest deviation: {worst['value']:.4f}") and worst["attribute"] in lines[-1]


def test_split_dataset_stores_assignment_report_and_figure(dataset):
    name, report = split_dataset(dataset, "stratified", (0.7, 0.2, 0.1), seed=3, name="strat70")
    assert name == "strat70"
    split_dir = dataset.root / "splits"
    stored = json.loads((split_dir / "strat70.json").read_text())
    assert stored["strategy"] == "stratified" and stored["ratios"] == [0.7, 0.2, 0.1] and stored["seed"] == 3
    assert stored["sizes"] == {"train": 2100, "valid": 600, "test": 300, "unused": 0}
    assert len(stored["attributes"]) == 40
    assert (split_dir / "strat70_distribution.png").stat().st_size > 10_000
    reopened = PackedDataset(dataset.root)
    assert "strat70" in reopened.split_names()
    np.testing.assert_array_equal(reopened.load_split("strat70"), make_split(dataset, "stratified", (0.7, 0.2, 0.1), 3))


def test_official_split_writes_only_its_report(dataset):
    name, report = split_dataset(dataset, "official", seed=5)
    split_dir = dataset.root / "splits"
    assert name == "official"
    assert not (split_dir / "official.npy").exists()
    assert (split_dir / "official.json").is_file() and (split_dir / "official_distribution.png").is_file()
    assert report["seed"] is None and report["ratios"] == [0.8, 0.1, 0.1]
    assert report["sizes"]["train"] == 2400
    assert PackedDataset(dataset.root).split_names() == ["official"]


def test_rebalance_fixes_sizes_from_any_start():
    rng = np.random.default_rng(0)
    labels = rng.random((1000, 6)) < [0.03, 0.1, 0.3, 0.5, 0.7, 0.95]
    start = np.zeros(1000, np.int8)  # everything in train
    out = rebalance(labels, start, [800, 100, 100], rng)
    assert np.bincount(out, minlength=3).tolist() == [800, 100, 100]
    assert largest_deviation_of(labels, out) < 0.02


def largest_deviation_of(labels, assignment):
    names = [str(i) for i in range(labels.shape[1])]
    return distribution_check(labels.astype(np.uint8), names, assignment)["max_deviation"]["value"]
