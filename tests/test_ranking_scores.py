"""Transferability scores on synthetic features with a known answer: ordering, invariances, D >= N, errors, LogME."""

from __future__ import annotations

import doctest
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # effective when this file is the first to import numpy

import numpy as np
import pytest
import torch

import transferkit.ranking.scores as scores_mod
from transferkit.errors import ConfigError, DataError
from transferkit.ranking import (
    INVARIANCES,
    SCORES,
    hscore,
    knn_accuracy,
    linear_probe_accuracy,
    logme,
    nleep,
    score,
    sfda,
)
from transferkit.ranking.scores import _fit_logistic, _ledoit_wolf, _logme_evidence, _spectrum

torch.set_num_threads(1)

METHODS = sorted(SCORES)


def make(n: int, d: int, k: int, sep: float, seed: int = 0, counts: list[int] | None = None):
    """Gaussian classes around unit-norm random centres scaled by `sep` (sep = 0: pure noise), unit noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), counts) if counts is not None else np.arange(n) % k
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return rng.normal(size=(len(y), d)) + sep * centres[y], y


# --------------------------------------------------------------------------------------------------------------
# Ordering on a known answer
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_separable_beats_noise_and_more_separable_beats_less(method):
    values = [score(method, *make(150, 12, 3, sep, seed=1)) for sep in (0.0, 1.5, 5.0)]
    assert all(math.isfinite(v) for v in values)
    assert values[0] < values[1] < values[2], values


@pytest.mark.parametrize("method", METHODS)
def test_feature_dim_at_least_n(method):
    """D = 5 N: finite, still ordered; and a useless 1000-d backbone loses to an informative 100-d one."""
    noise = score(method, *make(60, 300, 3, 0.0, seed=2))
    good = score(method, *make(60, 300, 3, 6.0, seed=2))
    assert math.isfinite(noise) and math.isfinite(good)
    assert good > noise
    if method != "hscore":  # documented caveat: the shrinkage H-score still grows with D on noise
        assert score(method, *make(60, 100, 3, 3.0, seed=3)) > score(method, *make(60, 1000, 3, 0.0, seed=3))


def test_sfda_dimension_cap_is_what_keeps_high_dim_noise_at_chance():
    x, y = make(100, 2048, 5, 0.0, seed=4)
    capped = sfda(x, y)
    uncapped = sfda(x, y, max_dim=2048)
    assert capped < 0.35  # chance is 0.2
    assert uncapped > 0.95  # the in-sample degeneracy the cap exists for


def test_nleep_does_not_memorise_a_small_sample():
    """A mixture with a component per sample would give pure noise the maximum 0; the caps keep it near the prior."""
    x, y = make(100, 2048, 5, 0.0, seed=4)
    prior = math.log(1 / 5)
    assert prior < nleep(x, y) < prior + 0.25
    assert nleep(*make(100, 2048, 5, 8.0, seed=4)) > -0.2
    with pytest.raises(ConfigError, match="variance"):
        nleep(x, y, variance=1.5)


def test_hscore_without_shrinkage_degenerates_when_d_exceeds_n():
    x, y = make(40, 100, 3, 0.0, seed=5)
    assert hscore(x, y, shrinkage=False) == pytest.approx(2.0, abs=1e-6)  # K - 1, the maximum, on pure noise
    assert hscore(x, y) < 1.0


@pytest.mark.parametrize("method", METHODS)
def test_imbalanced_classes(method):
    counts = [120, 15, 15]
    assert score(method, *make(150, 12, 3, 5.0, seed=6, counts=counts)) > score(
        method, *make(150, 12, 3, 0.0, seed=6, counts=counts)
    )


@pytest.mark.parametrize(
    ("method", "options"), [("knn", {}), ("linear_probe", {}), ("linear_probe", {"balanced_loss": False})]
)
def test_balanced_accuracy_does_not_reward_the_majority_class(method, options):
    x, y = make(150, 12, 3, 0.0, seed=7, counts=[120, 15, 15])
    # Plain accuracy of "always the majority" would be 0.8; balanced accuracy of noise stays near 1/3.
    assert score(method, x, y, **options) < 0.55


# --------------------------------------------------------------------------------------------------------------
# Invariances: every claim in INVARIANCES is checked numerically
# --------------------------------------------------------------------------------------------------------------


def _transform(kind: str, x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "scale":
        return [x * 1e-3, x * 37.5, x * 1e4, x * 1e-200, x * 1e200]  # extremes: no under- or overflow
    if kind == "shift":
        return [x + rng.normal(scale=5.0, size=x.shape[1])]
    if kind == "dim_scale":
        return [x * np.exp(rng.uniform(-4, 4, size=x.shape[1]))]
    if kind == "sample_scale":
        return [x * np.exp(rng.uniform(-4, 4, size=(x.shape[0], 1)))]
    raise AssertionError(kind)


CLAIMS = [(m, kind) for m in METHODS for kind in sorted(INVARIANCES[m])]


@pytest.mark.parametrize(("method", "kind"), CLAIMS)
def test_claimed_invariance_holds(method, kind):
    x, y = make(90, 8, 3, 2.0, seed=8)
    base = score(method, x, y)
    for xt in _transform(kind, x, np.random.default_rng(9)):
        assert score(method, xt, y) == pytest.approx(base, rel=1e-7, abs=1e-9)


def test_every_method_declares_its_invariances():
    assert set(INVARIANCES) == set(SCORES)
    assert all(v <= {"scale", "shift", "dim_scale", "sample_scale"} for v in INVARIANCES.values())


def test_sfda_is_not_scale_invariant_as_documented():
    x, y = make(90, 8, 3, 2.0, seed=8)
    x = x * np.geomspace(0.1, 3.0, 8)  # anisotropic within-class noise: shrinking towards I changes the answer
    assert "scale" not in INVARIANCES["sfda"]
    # Small features: lam = exp(-5 sigma_max(S_W)) ~ 0.9 shrinks S_W towards the identity; at scale 1 it is ~0.
    assert sfda(0.05 * x, y) < sfda(x, y) - 0.05


def test_sfda_shrinkage_floor_is_ledoit_wolf():
    # Isotropic within-class noise: the Ledoit-Wolf intensity is 1, so with the floor lam = 1 at any scale and the
    # score stops depending on the scale; the paper's rule alone gives a (slightly) different lam per scale.
    x, y = make(90, 8, 3, 2.0, seed=8)
    xc = x - x.mean(axis=0)
    assert _ledoit_wolf(xc - np.stack([xc[y == c].mean(axis=0) for c in range(3)])[y], 8) == 1.0
    assert sfda(0.05 * x, y, shrinkage_floor=True) == pytest.approx(sfda(x, y, shrinkage_floor=True), abs=1e-12)
    assert sfda(0.05 * x, y) != pytest.approx(sfda(x, y), abs=1e-6)


def test_logme_is_not_shift_invariant_as_documented():
    x, y = make(90, 8, 3, 2.0, seed=8)
    assert abs(logme(x + 10.0, y) - logme(x, y)) > 1e-3


# --------------------------------------------------------------------------------------------------------------
# Labels, determinism, degenerate features
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_labels_are_remapped(method):
    x, y = make(60, 6, 3, 2.0, seed=10)
    remapped = np.array([3, 7, 42])[y]
    assert score(method, x, remapped) == score(method, x, y)
    assert score(method, x, remapped.astype(np.float32)) == score(method, x, y)
    assert score(method, x, np.array(["ant", "bee", "cat"])[y]) == score(method, x, y)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_for_a_seed(method):
    x, y = make(80, 10, 4, 1.5, seed=11)
    assert score(method, x, y, seed=3) == score(method, x, y, seed=3)


def test_linear_probe_seed_moves_only_the_folds():
    x, y = make(80, 10, 4, 1.0, seed=11)
    values = {linear_probe_accuracy(x, y, seed=s) for s in range(4)}
    assert len(values) > 1  # the seed is used: different splits give (slightly) different estimates
    assert max(values) - min(values) < 0.2


@pytest.mark.parametrize("method", METHODS)
def test_constant_and_duplicate_features(method):
    x, y = make(90, 6, 3, 3.0, seed=12)
    padded = np.hstack([x, np.ones((90, 3)), x[:, :2]])  # constant columns and duplicated columns
    value = score(method, padded, y)
    assert math.isfinite(value)
    assert value > score(method, *make(90, 11, 3, 0.0, seed=12))
    if "shift" in INVARIANCES[method] or method == "linear_probe":  # centring / standardising drops constants
        assert score(method, np.hstack([x, np.full((90, 2), 5.0)]), y) == pytest.approx(score(method, x, y))
    const = score(method, np.ones((90, 4)), y)  # a dead backbone: finite, and worse than informative features
    assert math.isfinite(const)
    assert const < value


def test_constant_features_score_no_information():
    y = np.arange(90) % 3
    x = np.ones((90, 4))
    assert hscore(x, y) == 0.0
    assert knn_accuracy(x, y) <= 1 / 3 + 1e-12  # all similarities tie: votes follow sample order, not the features
    assert linear_probe_accuracy(x, y) == pytest.approx(1 / 3)
    assert sfda(x, y) == pytest.approx(1 / 3)  # posterior = priors


def test_inputs_are_not_modified():
    x, y = make(60, 6, 3, 2.0, seed=13)
    x0, y0 = x.copy(), y.copy()
    for method in METHODS:
        score(method, x, y)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

X_OK, Y_OK = make(30, 4, 3, 1.0)


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (X_OK[:, 0], Y_OK, "2-D"),
        (X_OK[None], Y_OK, "2-D"),
        (np.zeros((0, 4)), np.zeros(0, int), "at least one sample"),
        (np.where(np.arange(120).reshape(30, 4) == 5, np.nan, X_OK), Y_OK, "NaN/inf"),
        (np.where(np.arange(120).reshape(30, 4) == 7, np.inf, X_OK), Y_OK, "NaN/inf"),
        (X_OK.astype(complex), Y_OK, "real numeric"),
        (X_OK, Y_OK[:-1], "29"),
        (X_OK, Y_OK[:, None], "1-D"),
        (X_OK, np.zeros(30, int), "at least 2 classes"),
        (X_OK, np.r_[Y_OK[:-1], 9], r"\[9\] have 1"),
        (X_OK, Y_OK + 0.5, "integer"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_data_raises_data_error(method, features, labels, match):
    with pytest.raises(DataError, match=match):
        score(method, features, labels)
    with pytest.raises(DataError, match=match):
        SCORES[method](features, labels)


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("logmee", {}, "Did you mean: logme"),
        ("knn", {"neighbours": 3}, "options are: k, chunk_size"),
        ("knn", {"k": 0}, "k must be"),
        ("knn", {"k": 2.5}, "k must be an integer"),
        ("linear_probe", {"folds": 1}, "folds must be"),
        ("linear_probe", {"l2": -1.0}, "l2 must be"),
        ("linear_probe", {"l2": "strong"}, "l2 must be"),
        ("logme", {"tol": float("nan")}, "tol must be"),
        ("logme", {"max_iter": 0}, "max_iter must be"),
        ("sfda", {"max_dim": 0}, "max_dim must be"),
    ],
)
def test_bad_config_raises_config_error(method, options, match):
    with pytest.raises(ConfigError, match=match):
        score(method, X_OK, Y_OK, **options)


def test_bad_seed_raises_config_error():
    with pytest.raises(ConfigError, match="seed"):
        score("knn", X_OK, Y_OK, seed=True)


# --------------------------------------------------------------------------------------------------------------
# LogME against a brute-force evidence maximisation
# --------------------------------------------------------------------------------------------------------------


def _direct_log_evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log N(t; 0, I / beta + F F^T / alpha), straight from the definition (no SVD identities)."""
    n = len(t)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + t @ np.linalg.solve(cov, t)))


@pytest.mark.parametrize(("n", "d"), [(25, 4), (8, 12)])  # D < N, and D > N (rank-deficient F^T F)
def test_logme_fixed_point_is_the_evidence_maximum(n, d):
    f, y = make(n, d, 2, 1.5, seed=14)
    targets = np.eye(2)[y]
    u, eig = _spectrum(f)
    alphas, betas, evidence = _logme_evidence(u, eig, targets)
    grid = np.logspace(-4, 4, 97)
    for j in range(2):
        t = targets[:, j]
        # The closed-form evidence equals the direct Gaussian density at the returned (alpha, beta) ...
        assert evidence[j] == pytest.approx(_direct_log_evidence(f, t, alphas[j], betas[j]), abs=1e-8)
        # ... and no (alpha, beta) on a wide log grid around it does better.
        best = max(_direct_log_evidence(f, t, a * alphas[j], b * betas[j]) for a in grid[::8] for b in grid[::8])
        fine = max(_direct_log_evidence(f, t, a * alphas[j], b * betas[j]) for a in grid[40:57] for b in grid[40:57])
        assert max(best, fine) <= evidence[j] + 1e-9
        # A direct 2-D optimiser on the definition lands on the same optimum.
        scipy_opt = pytest.importorskip("scipy.optimize")
        res = scipy_opt.minimize(
            lambda p, t=t: -_direct_log_evidence(f, t, math.exp(p[0]), math.exp(p[1])),
            x0=np.log([alphas[j] * 3.0, betas[j] / 3.0]),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
        )
        assert -res.fun == pytest.approx(evidence[j], abs=1e-6)
    assert logme(f, y) == pytest.approx(evidence.mean() / n, rel=1e-9)


def test_logme_useless_features_reach_the_alpha_to_infinity_supremum():
    # Two noise dimensions: for some targets the evidence keeps rising as alpha -> inf (w -> 0), no interior optimum.
    f, y = make(40, 2, 3, 0.0, seed=22)
    targets = np.eye(3)[y]
    alphas, betas, evidence = _logme_evidence(*_spectrum(f), targets)
    assert np.isinf(alphas).any() and np.isfinite(alphas).any()  # both kinds of optimum
    grid = [(a, b) for a in np.logspace(-3, 9, 25) for b in np.logspace(-2, 2, 21)]
    for j in range(3):
        t = targets[:, j]
        assert max(_direct_log_evidence(f, t, a, b) for a, b in grid) <= evidence[j] + 1e-9
        assert evidence[j] == pytest.approx(_direct_log_evidence(f, t, alphas[j], betas[j]), abs=1e-8)


def test_logme_target_orthogonal_to_features_uses_the_noise_only_optimum():
    f = np.zeros((10, 3))
    y = np.arange(10) % 2
    n = 10  # each one-vs-all target has |t|^2 = 5: evidence = -N/2 (log(2 pi |t|^2 / N) + 1)
    expected = -0.5 * n * (math.log(2 * math.pi * 5 / n) + 1) / n
    assert logme(f, y) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------------------
# Cross-checks against scikit-learn (optional dev dependency)
# --------------------------------------------------------------------------------------------------------------


def test_ledoit_wolf_and_hscore_match_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    for n, d in [(50, 6), (30, 80)]:
        x, y = make(n, d, 3, 2.0, seed=15)
        xc = x - x.mean(axis=0)
        assert _ledoit_wolf(xc, d) == pytest.approx(covariance.ledoit_wolf_shrinkage(xc, assume_centered=True))
        lw = covariance.LedoitWolf().fit(x)
        g = np.stack([x[y == c].mean(axis=0) for c in range(3)])[y]
        cov_g = np.cov(g, rowvar=False, bias=True)
        expected = np.trace(np.linalg.solve(lw.covariance_, (1 - lw.shrinkage_) * cov_g))
        assert hscore(x, y) == pytest.approx(expected, rel=1e-8)


def test_plain_hscore_matches_its_definition():
    x, y = make(200, 5, 3, 2.0, seed=16)
    g = np.stack([x[y == c].mean(axis=0) for c in range(3)])[y]
    expected = np.trace(np.linalg.solve(np.cov(x, rowvar=False, bias=True), np.cov(g, rowvar=False, bias=True)))
    assert hscore(x, y, shrinkage=False) == pytest.approx(expected, rel=1e-8)


def test_logistic_fit_matches_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = make(120, 6, 3, 1.0, seed=17)
    l2 = 1e-2
    w, b = _fit_logistic(x, y, 3, l2, max_iter=500, balanced=False)
    ref = linear_model.LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(x, y)
    ours = torch.softmax(torch.from_numpy(x @ w + b), dim=1).numpy()
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-5


# --------------------------------------------------------------------------------------------------------------
# kNN specifics, registry, examples
# --------------------------------------------------------------------------------------------------------------


def test_knn_ties_follow_the_documented_rule():
    # Samples 0-2 share one direction; 0 and 1 are class 0, 2 is class 1; samples 3-5 point elsewhere (class 1).
    x = np.array([[1.0, 0], [2.0, 0], [3.0, 0], [0, 1.0], [0.1, 1.0], [0, 2.0]])
    y = np.array([0, 0, 1, 1, 1, 1])
    # k=1: sample 0 ties between 1 (class 0) and 2 (class 1): the lower index wins -> right; sample 1 -> sample 0
    # -> right; sample 2 -> sample 0 -> class 0 -> wrong; samples 3-5 are right. Recalls 1 and 3/4.
    assert knn_accuracy(x, y, k=1) == pytest.approx((1.0 + 0.75) / 2)


def _knn_reference(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Slow, literal version of the documented rule, on the same similarity matrix."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    n_classes = y.max() + 1
    recall_hits = np.zeros(n_classes)
    for i in range(len(y)):
        others = sorted((j for j in range(len(y)) if j != i), key=lambda j: (-sim[i, j], j))[:k]
        votes = {c: sum(1 for j in others if y[j] == c) for c in range(n_classes)}
        sums = {c: sum(sim[i, j] for j in others if y[j] == c) for c in range(n_classes)}
        pred = min(range(n_classes), key=lambda c: (-votes[c], -sums[c], c))
        recall_hits[y[i]] += pred == y[i]
    return float(np.mean(recall_hits / np.bincount(y)))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_knn_matches_a_literal_reference_on_data_full_of_ties(k):
    # Rows with exactly two ones out of five: ten distinct patterns, so many neighbours tie exactly.
    rng = np.random.default_rng(20)
    patterns = np.array([[1.0 if j in (a, b) else 0.0 for j in range(5)] for a in range(5) for b in range(a + 1, 5)])
    x = patterns[rng.integers(0, 10, size=40)]
    y = rng.permutation(np.arange(40) % 3)
    assert knn_accuracy(x, y, k=k) == pytest.approx(_knn_reference(x, y, k), abs=1e-12)
    assert knn_accuracy(x, y, k=k, chunk_size=7) == knn_accuracy(x, y, k=k)


def test_knn_chunking_and_large_k():
    x, y = make(70, 5, 3, 1.0, seed=18)
    assert knn_accuracy(x, y, k=7, chunk_size=3) == knn_accuracy(x, y, k=7)
    assert math.isfinite(knn_accuracy(x, y, k=1000))  # capped at N - 1


def test_registry_and_entry_point_agree():
    assert METHODS == ["hscore", "knn", "linear_probe", "logme", "nleep", "sfda"]
    x, y = make(60, 5, 3, 2.0, seed=19)
    for name, fn in SCORES.items():
        assert score(name, x, y) == fn(x, y)
    assert score("knn", x, y, k=3) == knn_accuracy(x, y, k=3)


def test_docstring_examples():
    result = doctest.testmod(scores_mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 5
