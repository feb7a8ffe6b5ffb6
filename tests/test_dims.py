"""Dimension evaluation: KL per dimension, active units, and which factor/attribute each dimension tracks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from facevae.analysis.dims import (
    auc_scores,
    condition_explains,
    dimension_table,
    discretize,
    evaluate_dims,
    format_dims_table,
    match_targets,
    name_dimensions,
    nmi_scores,
    score_matrix,
)
from facevae.common.information import mutual_information
from facevae.models.latents import Latents, flat_groups
from facevae.training.rundir import open_run


# --- known answers ------------------------------------------------------------------------------------
def planted_codes(n: int = 3000, dims: int = 8, seed: int = 0):
    """dim 3 = factor A (5 values) + noise, dim 5 = factor B (4 values) + noise, the rest noise; C is unused."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 5, n), rng.integers(0, 4, n), rng.integers(0, 3, n)], axis=1)
    codes = rng.normal(size=(n, dims))
    codes[:, 3] = factors[:, 0] + 0.25 * rng.normal(size=n)
    codes[:, 5] = -1.5 * factors[:, 1] + 0.3 * rng.normal(size=n)
    return codes, factors, ["A", "B", "C"]


def test_mutual_information_matches_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 7, 500), rng.integers(0, 3, 500)
    b[:200] = a[:200] % 3
    assert mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-10)


def test_discretize_gives_equal_frequency_bins():
    x = np.random.default_rng(0).standard_cauchy((2000, 2))  # heavy tails: equal-width bins would be empty
    binned = discretize(x, bins=20)
    assert binned.min() == 0 and binned.max() == 19
    assert np.all(np.bincount(binned[:, 0], minlength=20) == 100)


def test_scoring_names_planted_dimensions_with_margin():
    codes, factors, names = planted_codes()
    scores = nmi_scores(codes, factors)
    assert scores.shape == (8, 3)
    assert np.all((scores >= 0) & (scores <= 1))
    named = name_dimensions(scores, names)
    assert named[3]["name"] == "A" and named[3]["score"] > 0.7
    assert named[5]["name"] == "B" and named[5]["score"] > 0.7
    rows, assignment = match_targets(scores, names)
    by_name = {r["name"]: r for r in rows}
    assert by_name["A"]["dim"] == 3 and by_name["A"]["margin"] > 0.6
    assert by_name["B"]["dim"] == 5 and by_name["B"]["margin"] > 0.6
    assert by_name["C"]["score"] < 0.05  # nothing carries C: only the estimator's small bias
    assert assignment == {"A": 3, "B": 5}


def test_binary_attribute_score_is_rank_based_and_signed():
    rng = np.random.default_rng(1)
    n = 4000
    attrs = (rng.random((n, 2)) < [0.05, 0.5]).astype(np.uint8)  # a rare attribute and a common one
    codes = rng.normal(size=(n, 4))
    codes[:, 1] = np.exp(2.0 * attrs[:, 0] + 0.5 * rng.normal(size=n))  # monotone transform: same ranks
    codes[:, 2] = -attrs[:, 1].astype(float) + 0.5 * rng.normal(size=n)
    scores, direction = score_matrix(codes, attrs, "attributes")
    assert scores[1, 0] > 0.9 and direction[1, 0] == 1
    assert scores[2, 1] > 0.6 and direction[2, 1] == -1
    assert scores[0].max() < 0.15 and scores[3].max() < 0.15
    const = np.zeros((n, 1), np.uint8)
    assert np.all(auc_scores(codes, const) == 0.5)  # a constant attribute scores 0, not NaN


def test_dimension_table_kl_and_active_units():
    codes, factors, names = planted_codes()
    n = len(codes)
    mu = np.zeros_like(codes)
    mu[:, 3], mu[:, 5] = codes[:, 3], codes[:, 5]
    logvar = np.zeros_like(codes)  # unit variance: the unused dims are exactly the prior
    logvar[:, 3] = logvar[:, 5] = -4.0
    table = dimension_table(mu + 1e-3 * np.random.default_rng(2).normal(size=mu.shape), mean_kl(mu, logvar), factors,
                            names)
    kl = np.array([d["kl"] for d in table["dims"]])
    assert np.all(kl >= 0)
    assert kl[3] > 1 and kl[5] > 1 and np.all(np.delete(kl, [3, 5]) < 1e-3)
    assert [d["active"] for d in table["dims"]] == [d in (3, 5) for d in range(8)]
    assert table["active_units"] == 2 and table["active_units_kl"] == 2
    assert table["assignment"] == {"A": 3, "B": 5}
    assert table["matching_among"] == "active dimensions"
    assert len(table["scores"]) == 8 and len(table["scores"][0]) == 3
    assert n == table["images"]


def mean_kl(mu, logvar) -> np.ndarray:
    """Mean KL per unit, as the model's latents compute it for a flat VAE (prior N(0, I))."""
    latents = Latents(flat_groups({"z": (mu.shape[1],)}), torch.as_tensor(mu, dtype=torch.float32),
                      torch.as_tensor(np.exp(0.5 * logvar), dtype=torch.float32))
    return latents.kl_per_unit().double().mean(0).numpy()


def test_kl_per_dimension_is_the_analytic_kl():
    mu = np.array([[1.0, 0.0], [1.0, 0.0]])
    logvar = np.array([[0.0, np.log(4.0)], [0.0, np.log(4.0)]])
    # KL(N(1,1)||N(0,1)) = 0.5; KL(N(0,4)||N(0,1)) = 0.5 (4 - 1 - log 4)
    assert mean_kl(mu, logvar) == pytest.approx([0.5, 0.5 * (3 - np.log(4))])


def test_condition_explains_flags_determined_factors():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 4, (2000, 2))
    cond = np.stack([f[:, 0] == 0, f[:, 0] == 1, f[:, 0] == 2], axis=1).astype(np.uint8)  # one-hot but the last
    share = condition_explains(f, cond)
    assert share[0] == pytest.approx(1.0) and share[1] < 0.02


# --- on the tiny trained runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cvae_dims(cvae_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dims") / "cvae"
    shutil.copytree(cvae_run, run_dir)
    return run_dir, evaluate_dims(open_run(run_dir))


def test_dims_json_schema(cvae_dims):
    run_dir, result = cvae_dims
    data = json.loads((run_dir / "analysis" / "dims.json").read_text())
    assert data["targets"] == "factors"
    assert len(data["dims"]) == 8  # the fixture's latent size
    factor_names = data["target_names"]
    for i, d in enumerate(data["dims"]):
        assert d["dim"] == i
        assert isinstance(d["kl"], float) and d["kl"] >= 0
        assert isinstance(d["active"], bool)
        assert d["name"] in factor_names
        assert 0 <= d["score"] <= 1
        assert d["runner_up"]["name"] in factor_names and d["runner_up"]["name"] != d["name"]
        assert 0 <= d["runner_up"]["score"] <= d["score"]
    assert data["active_units"] == sum(d["active"] for d in data["dims"])
    assert data["active_units_kl"] == sum(d["active_kl"] for d in data["dims"])
    assert data["active_units"] == sum(d["variance"] > data["variance_threshold"] for d in data["dims"])
    assert {r["name"] for r in data["factors"]} == set(factor_names)
    for name, dim in data["assignment"].items():
        assert data["dims"][dim]["name"] == name
    assert len(set(data["assignment"].values())) == len(data["assignment"])
    # the CVAE receives all 17 attributes: hair colour, beard, smile, sex, ... are given, rotation is not
    conditioned = {r["name"] for r in data["factors"] if r["conditioned"]}
    assert {"hair_color", "bangs", "smile", "eyeglasses", "beard", "lipstick", "hat", "sex", "age"} <= conditioned
    assert not conditioned & {"rotation", "face_width", "background", "hair_volume", "skin_tone"}
    assert (run_dir / "analysis" / "dims.png").stat().st_size > 1000
    assert (run_dir / "analysis" / "dims.csv").read_text().count("\n") == 9


def test_dims_table_text(cvae_dims):
    _, result = cvae_dims
    text = format_dims_table(result, all_dims=True)
    assert "dimensions active" in text and "rotation" in text and "margin" in text
    assert len([line for line in text.splitlines() if line[:4].strip().isdigit()]) >= 8


def test_dims_on_attributes_and_unconditional_run(vae_run, tmp_path):
    run_dir = tmp_path / "vae"
    shutil.copytree(vae_run, run_dir)
    result = evaluate_dims(open_run(run_dir), targets="attributes", figure=False)
    assert result["targets"] == "attributes" and result["method"] == "abs_2auc_minus_1"
    assert all(d["direction"] in (-1, 0, 1) for d in result["dims"])
    assert not result["conditional"] and "conditioned" not in result["attributes"][0]
    assert not (run_dir / "analysis" / "dims.png").exists()


def test_dims_cli(cvae_run, tmp_path, capsys):
    from facevae.cli import main

    run_dir = tmp_path / "cvae"
    shutil.copytree(cvae_run, run_dir)
    assert main(["dims", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "dims.json" in out and "tracks factor" in out
    assert (run_dir / "analysis" / "dims.json").is_file()
    assert main(["dims", str(tmp_path / "nothing")]) == 2


def test_dims_help_has_example(capsys):
    from facevae.cli import main

    with pytest.raises(SystemExit):
        main(["dims", "--help"])
    assert "example:" in capsys.readouterr().out
