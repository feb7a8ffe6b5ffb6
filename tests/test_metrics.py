"""Disentanglement metrics: known answers, disentanglement_lib's conventions, plumbing.

Known answers use a ground truth whose "observations" are the factors themselves, so the
representation's quality is set by ``encode``:

* identity, and an axis permutation with rescaling and sign flips: perfect;
* random: codes that ignore the input (chance level: 1/K for the accuracy scores, 0 for the
  gaps, 0.5 for the AUC);
* rotated: factors 0 and 1 (same size, standardised) rotated by 45 degrees, factors 2 and 3
  left alone: half of the factors are perfectly captured and half are hopelessly mixed, so the
  scores land halfway between.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics

from facevae.data.groundtruth import FactorsAsObservations
from facevae.metrics import (
    array_metrics,
    beta_vae_score,
    dci,
    factor_vae_score,
    ground_truth_metrics,
    mig,
    sample_codes,
    sap,
    utils,
    weak_label_metrics,
)
from facevae.metrics.modularity import modularity

SIZES = [5, 5, 4, 3]
K = len(SIZES)
MEAN = np.array([(s - 1) / 2 for s in SIZES])
STD = np.array([np.sqrt((s * s - 1) / 12) for s in SIZES])
PERM = [2, 0, 3, 1]
SCALE = np.array([2.0, -0.5, 3.0, 1.0])


def identity(x):
    return np.asarray(x, np.float64)


def permuted(x):
    return (np.asarray(x) * SCALE)[:, PERM]


def random_codes(x):
    seed = abs(int(np.asarray(x).sum() * 7919)) + len(x)
    return np.random.default_rng(seed).normal(size=(len(x), K))


def rotated(x):
    z = (np.asarray(x, np.float64) - MEAN) / STD
    c = np.sqrt(0.5)
    out = z.copy()
    out[:, 0] = c * (z[:, 0] - z[:, 1])
    out[:, 1] = c * (z[:, 0] + z[:, 1])
    return out


ENCODERS = {"identity": identity, "permuted": permuted, "random": random_codes, "rotated": rotated}


@pytest.fixture(scope="module")
def data():
    return FactorsAsObservations(SIZES)


@pytest.fixture(scope="module")
def arrays(data):
    """Codes and factors of every encoder: 600 train rows, 300 test rows."""
    out = {}
    for name, enc in ENCODERS.items():
        c_train, f_train = sample_codes(data, enc, 600, np.random.RandomState(1))
        c_test, f_test = sample_codes(data, enc, 300, np.random.RandomState(2))
        out[name] = (c_train, f_train, c_test, f_test)
    return out


@pytest.fixture(scope="module")
def array_scores(arrays):
    return {name: array_metrics(*a, n_jobs=1) | {"sap_continuous": sap(*a, continuous_factors=True)["SAP_score"]}
            for name, a in arrays.items()}


# --- utilities ----------------------------------------------------------------------------------------
def test_mutual_info_and_entropy_match_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, size=(3000, 3))
    b = np.c_[a[:, 0] // 4, rng.integers(0, 3, 3000), np.where(rng.random(3000) < 0.9, 1, -1)]
    m = utils.discrete_mutual_info(a, b)
    for i in range(3):
        for j in range(3):
            assert m[i, j] == pytest.approx(sklearn.metrics.mutual_info_score(b[:, j], a[:, i]), abs=1e-12)
    h = utils.discrete_entropy(b)
    for j in range(3):
        assert h[j] == pytest.approx(sklearn.metrics.mutual_info_score(b[:, j], b[:, j]), abs=1e-12)


def test_histogram_discretizer_is_disentanglement_libs():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=500), rng.uniform(-3, 7, 500), np.full(500, 2.5)]
    d = utils.histogram_discretize(x, 20)
    for j in range(3):
        expected = np.digitize(x[:, j], np.histogram(x[:, j], 20)[1][:-1])
        np.testing.assert_array_equal(d[:, j], expected)
    assert d[:, :2].min() == 1 and d[:, :2].max() == 20
    assert d[np.argmax(x[:, 0]), 0] == 20


def test_random_state_kinds_and_determinism(data):
    a = beta_vae_score(data, identity, 3, num_train=20, num_eval=10, batch_size=8)
    b = beta_vae_score(data, identity, np.random.RandomState(3), num_train=20, num_eval=10, batch_size=8)
    assert a == b
    c = factor_vae_score(data, identity, np.random.default_rng(3), num_train=20, num_eval=10,
                         num_variance_estimate=50, batch_size=8)
    assert c["eval_accuracy"] == 1.0


def test_encode_chunking_does_not_change_the_result(data):
    """Rendering/encoding many points per call keeps disentanglement_lib's draw order."""
    kw = dict(num_train=60, num_eval=30, batch_size=16)
    a = beta_vae_score(data, rotated, 5, encode_batch_size=32, **kw)  # one point per call
    b = beta_vae_score(data, rotated, 5, encode_batch_size=100000, **kw)
    assert a == b
    kw["num_variance_estimate"] = 100
    a = factor_vae_score(data, rotated, 5, encode_batch_size=16, **kw)
    b = factor_vae_score(data, rotated, 5, encode_batch_size=100000, **kw)
    assert a == b


class EncodesElsewhere(FactorsAsObservations):
    """Encodes each batch in pieces, as worker processes would; ``short`` drops the last batch."""

    def __init__(self, sizes, short=False):
        super().__init__(sizes)
        self.short, self.batch_sizes = short, []

    def encode_batches(self, factors, encode, batch_size):
        self.batch_sizes.append(batch_size)
        starts = list(range(0, len(factors), batch_size))
        for lo in starts[:-1] if self.short else starts:
            part = factors[lo:lo + batch_size]
            yield np.concatenate([encode(self.render(part[:3])), encode(self.render(part[3:]))])


def test_a_data_object_that_encodes_elsewhere_gives_the_same_scores(data):
    elsewhere = EncodesElsewhere(SIZES)
    kw = dict(num_train=40, num_eval=20, batch_size=8, encode_batch_size=40)  # several batches per call
    assert beta_vae_score(elsewhere, rotated, 4, **kw) == beta_vae_score(data, rotated, 4, **kw)
    kw["num_variance_estimate"] = 90
    assert factor_vae_score(elsewhere, rotated, 4, **kw) == factor_vae_score(data, rotated, 4, **kw)
    codes, factors = sample_codes(elsewhere, rotated, 37, 4, batch_size=16)
    np.testing.assert_array_equal(codes, sample_codes(data, rotated, 37, 4, batch_size=16)[0])
    assert set(elsewhere.batch_sizes) == {32, 40, 16} and len(factors) == 37  # the sizes asked for
    with pytest.raises(ValueError, match="encode_batches gave"):
        sample_codes(EncodesElsewhere(SIZES, short=True), rotated, 37, 4, batch_size=16)


def test_beta_vae_points_follow_disentanglement_lib(data):
    """The features and labels are those of disentanglement_lib's per-point loop."""
    from facevae.metrics.beta_vae import _generate_points

    rs = np.random.RandomState(11)
    x, y = _generate_points(data, rotated, 8, 5, np.random.RandomState(11), 4096)
    for p in range(5):
        k = rs.randint(K)
        f1 = data.sample_factors(8, rs)
        f2 = data.sample_factors(8, rs)
        f2[:, k] = f1[:, k]
        assert y[p] == k
        np.testing.assert_allclose(x[p], np.mean(np.abs(rotated(f1) - rotated(f2)), axis=0))


# --- known answers: sampling metrics ------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENCODERS))
def test_sampling_metrics_known_answers(data, name):
    enc = ENCODERS[name]
    b = beta_vae_score(data, enc, 0, num_train=400, num_eval=200)
    f = factor_vae_score(data, enc, 0, num_train=400, num_eval=200, num_variance_estimate=1000)
    for r in (b, f):
        assert 0.0 <= r["eval_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
    if name in ("identity", "permuted"):
        assert b["eval_accuracy"] == 1.0 and b["train_accuracy"] == 1.0
        assert f["eval_accuracy"] == 1.0 and f["train_accuracy"] == 1.0
    elif name == "random":  # chance: 1/K = 0.25
        assert b["eval_accuracy"] < 0.4
        assert f["eval_accuracy"] < 0.4
    else:  # factors 0 and 1 indistinguishable, 2 and 3 perfect: 0.75
        assert 0.6 < b["eval_accuracy"] < 0.9
        assert 0.6 < f["eval_accuracy"] < 0.9
    assert f["num_active_dims"] == K


def test_factor_vae_prunes_collapsed_dimensions(data):
    def with_dead(x):
        z = identity(x)
        return np.c_[z[:, :2], np.full(len(z), 3.0), 0.01 * random_codes(x)[:, :1], z[:, 2:]]

    r = factor_vae_score(data, with_dead, 0, num_train=100, num_eval=50, num_variance_estimate=500)
    assert r["num_active_dims"] == K and r["eval_accuracy"] == 1.0
    dead = factor_vae_score(data, lambda x: np.zeros((len(x), 3)), 0, num_train=10, num_eval=10,
                            num_variance_estimate=100)
    assert dead == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


# --- known answers: array metrics ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["identity", "permuted"])
def test_array_metrics_perfect(array_scores, name):
    s = array_scores[name]
    assert s["mig"] > 0.9
    assert s["dci_disentanglement"] > 0.95 and s["dci_completeness"] > 0.95
    assert s["dci_informativeness_test"] > 0.97
    assert s["modularity"] > 0.95
    assert s["explicitness_test"] > 0.97
    assert s["sap_continuous"] > 0.9
    # discrete SAP is a difference of single-dimension classification accuracies: the runner-up
    # dimension still scores chance (balanced: 1/size), and the linear SVC (C=0.01) is not scale
    # invariant, so even a perfect code stays well below 1
    assert s["sap"] > 0.25


def test_array_metrics_random(array_scores):
    s = array_scores["random"]
    assert s["mig"] < 0.03
    assert s["dci_disentanglement"] < 0.1 and s["dci_completeness"] < 0.1
    assert s["dci_informativeness_test"] < 0.4
    assert s["sap"] < 0.05 and s["sap_continuous"] < 0.02
    assert abs(s["explicitness_test"] - 0.5) < 0.05
    # modularity only asks that each dimension talks about one factor more than the others; the
    # small spurious informations of noise are unequal, so it stays well above 0 (but below 1)
    assert s["modularity"] < 0.9


def test_array_metrics_rotated_in_between(array_scores):
    s, good, bad = array_scores["rotated"], array_scores["identity"], array_scores["random"]
    assert 0.4 < s["mig"] < 0.6  # two factors ~1, two ~0
    assert 0.65 < s["dci_disentanglement"] < 0.85 and 0.65 < s["dci_completeness"] < 0.85
    assert s["dci_informativeness_test"] > 0.97  # a rotation loses no information
    assert bad["sap"] < s["sap"] < good["sap"]
    assert 0.4 < s["sap_continuous"] < 0.6
    assert bad["modularity"] < s["modularity"] < good["modularity"]


def test_mig_details(arrays):
    c_train, f_train, _, _ = arrays["permuted"]
    r = mig(c_train, f_train)
    assert r["mutual_info"].shape == (K, K) and r["entropy"].shape == (K,)
    # the most informative dimension of each factor is the one the permutation put it in
    assert list(np.argmax(r["mutual_info"], axis=0)) == [PERM.index(k) for k in range(K)]
    # a constant factor has no gap: it is left out, not NaN for the whole score
    r = mig(c_train, np.c_[f_train, np.zeros(len(f_train))])
    assert np.isnan(r["mig_per_factor"][-1]) and np.isfinite(r["discrete_mig"])


def test_dci_details(arrays):
    c_train, f_train, c_test, f_test = arrays["permuted"]
    r = dci(c_train[:200], f_train[:200], c_test[:100], f_test[:100], n_jobs=2)
    assert r["importance_matrix"].shape == (K, K)
    assert list(np.argmax(r["importance_matrix"], axis=0)) == [PERM.index(k) for k in range(K)]
    serial = dci(c_train[:200], f_train[:200], c_test[:100], f_test[:100], n_jobs=1)
    np.testing.assert_allclose(serial["importance_matrix"], r["importance_matrix"])


def test_modularity_formula():
    m = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.2, 0.1, 0.1]])
    # 1 - (sum m^2 - max m^2) / (max m^2 (K-1)) per row; a row without information scores 0
    expected = [1.0, 1 - 0.25 / (0.25 * 2), 0.0, 1 - 0.02 / (0.04 * 2)]
    assert modularity(m) == pytest.approx(np.mean(expected))


def test_array_metric_input_checks():
    with pytest.raises(ValueError, match="rows"):
        mig(np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mig(np.full((10, 2), np.nan), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="columns"):
        sap(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((10, 3)), np.zeros((10, 2)))


# --- contract variants --------------------------------------------------------------------------------
class LibStyle:
    """A disentanglement_lib-style object: factors_num_values, sample_observations_from_factors."""

    factors_num_values = [3, 4]

    def sample_factors(self, n, random_state):
        return np.stack([random_state.randint(s, size=n) for s in self.factors_num_values], axis=1)

    def sample_observations_from_factors(self, factors, random_state):
        return factors.astype(np.float32)


def test_disentanglement_lib_style_object_and_torch_codes():
    torch = pytest.importorskip("torch")
    data = LibStyle()
    r = beta_vae_score(data, lambda x: torch.as_tensor(x) * 2, 0, num_train=50, num_eval=20, batch_size=8)
    assert r["eval_accuracy"] == 1.0
    r = factor_vae_score(data, lambda x: torch.as_tensor(x), 0, num_train=50, num_eval=20, batch_size=8,
                         num_variance_estimate=100)
    assert r["eval_accuracy"] == 1.0
    codes, factors = sample_codes(data, lambda x: torch.as_tensor(x), 37, 0, batch_size=16)
    assert codes.shape == (37, 2) and factors.shape == (37, 2)
    np.testing.assert_array_equal(codes, factors)


def test_encode_must_return_one_code_per_observation(data):
    with pytest.raises(ValueError, match="codes"):
        beta_vae_score(data, lambda x: identity(x)[:-1], 0, num_train=5, num_eval=5, batch_size=4)


# --- weak labels ---------------------------------------------------------------------------------------
def test_weak_label_metrics_on_attributes():
    rng = np.random.default_rng(0)
    n_train, n_test = 600, 300
    attrs = np.where(rng.random((n_train + n_test, 3)) < [0.5, 0.2, 0.4], 1, -1)  # CelebA's -1/1
    # dimension 0 carries attribute 2, dimension 2 attribute 0; dimension 1 is noise; attribute 1
    # is carried by nothing
    codes = np.c_[attrs[:, 2] + 0.3 * rng.normal(size=len(attrs)), rng.normal(size=len(attrs)),
                  attrs[:, 0] + 0.3 * rng.normal(size=len(attrs))]
    names = ["Smiling", "Bald", "Male"]
    r = weak_label_metrics(codes[:n_train], attrs[:n_train], codes[n_train:], attrs[n_train:], names,
                           n_jobs=1)
    rows = {row["name"]: row for row in r["attributes"]}
    assert rows["Smiling"]["best_dim"] == 2 and rows["Male"]["best_dim"] == 0
    assert rows["Smiling"]["mig"] > 0.5 and rows["Male"]["mig"] > 0.5 and rows["Bald"]["mig"] < 0.05
    assert rows["Smiling"]["explicitness_auc"] > 0.95 and abs(rows["Bald"]["explicitness_auc"] - 0.5) < 0.1
    assert rows["Bald"]["positive_rate"] == pytest.approx(0.2, abs=0.05)
    for key in ("mig", "dci_disentanglement", "dci_completeness", "sap", "modularity", "explicitness_test"):
        assert 0.0 <= r[key] <= 1.0
    # booleans and 0/1 give the same numbers; a subset of metrics
    a = weak_label_metrics(codes[:n_train], attrs[:n_train] > 0, codes[n_train:], attrs[n_train:] > 0,
                           metrics=("mig", "sap"))
    assert a["mig"] == pytest.approx(r["mig"]) and a["sap"] == pytest.approx(r["sap"])
    assert "dci_disentanglement" not in a
    with pytest.raises(ValueError, match="attributes"):
        weak_label_metrics(codes, attrs * 3, codes, attrs)


# --- the synthetic faces: plumbing ---------------------------------------------------------------------
def test_synthetic_faces_smoke():
    from facevae.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(size=32, prior="uniform")
    projection = np.random.default_rng(0).normal(size=(8 * 8 * 3, 6))

    def encode(images):
        x = images.reshape(len(images), 8, 4, 8, 4, 3).mean(axis=(2, 4)) / 255.0
        return x.reshape(len(images), -1) @ projection

    r = ground_truth_metrics(faces, encode, 0, num_train=40, num_test=20, sampling_batch_size=8, n_jobs=1)
    expected = {"beta_vae_train", "beta_vae_eval", "factor_vae_train", "factor_vae_eval", "factor_vae_active_dims",
                "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_train",
                "dci_informativeness_test", "sap", "modularity", "explicitness_train", "explicitness_test"}
    assert set(r) == expected
    for key, value in r.items():
        if key != "factor_vae_active_dims":
            assert 0.0 <= value <= 1.0, (key, value)
    assert r["factor_vae_active_dims"] == 6
    # pixels carry information about the factors: better than chance (1/14) on the training points
    assert r["beta_vae_train"] > 1 / 14
