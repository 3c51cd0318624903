"""Transferability scores: rank frozen backbones on a target data set before fine-tuning any of them.

Every score maps the frozen features of one backbone on the labelled target data to one float, higher = better:
``fn(features (N, D), labels (N,), *, seed=0, **options) -> float``. A score only means something next to the
scores of other backbones on the *same* data set (same samples, same labels): values are not comparable across data
sets, and not across methods.

Methods (``SCORES``): ``logme`` (You et al., ICML 2021), ``sfda`` (Shao et al., ECCV 2022), ``hscore`` (Bao et al.,
ICIP 2019, with the shrinkage of Ibrahim et al., 2021), ``knn`` (leave-one-out k-NN, balanced accuracy),
``linear_probe`` (cross-validated logistic regression, balanced accuracy) and ``nleep`` (Li et al., CVPR 2021: LEEP
of a Gaussian mixture on PCA features). All arithmetic is float64. Labels may be
any integers (or strings): they are remapped to 0..K-1 in sorted order. Only ``linear_probe`` (its fold split) and
``nleep`` (the start of its mixture) use ``seed``; the other scores are deterministic functions of their input.

Feature dimension D >= N: logme, hscore and sfda work in the r <= min(N, D) dimensional span of the data (exact,
nothing is thrown away) with shrinkage where a covariance is inverted; sfda also keeps only the top N // K principal
components, because as an in-sample score it otherwise calls pure noise separable; nleep fits its mixture on PCA
coordinates of that span, with the dimension and the number of components capped by N. knn and linear_probe are
leave-one-out / held-out estimates and need nothing special. No score returns NaN or inf (a non-finite result raises
`DataError`). In-sample scores (hscore, sfda; logme less so) still favour larger D on small N: when candidates differ
a lot in D and N is small, trust knn / linear_probe more.

Example:
    >>> import numpy as np
    >>> from transferkit.ranking import score
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 30)
    >>> good = rng.normal(size=(90, 16)) + 3 * np.eye(16)[labels]
    >>> noise = rng.normal(size=(90, 16))
    >>> score("logme", good, labels) > score("logme", noise, labels)
    True
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import unknown_name_message

__all__ = [
    "INVARIANCES",
    "SCORES",
    "hscore",
    "knn_accuracy",
    "linear_probe_accuracy",
    "logme",
    "nleep",
    "score",
    "sfda",
]

# Eigenvalues of a Gram matrix below this fraction of the largest are treated as 0: eigh on X X^T is accurate to
# about 1e-16 * largest eigenvalue, so smaller ones are rounding noise (and exact 0 for duplicate/constant columns).
_RANK_RTOL = 1e-11


# ---------------------------------------------------------------------------------------------------------------
# Input checks and shared linear algebra
# ---------------------------------------------------------------------------------------------------------------


def _prepare(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated float64 features, labels remapped to 0..K-1 (sorted order of the originals), and K."""
    x = np.asarray(features)
    if x.dtype.kind not in "biuf":
        raise DataError(f"features must be a real numeric array; got dtype {x.dtype}.")
    if x.ndim != 2:
        raise DataError(f"features must be a 2-D array (N samples, D dims); got shape {x.shape}.")
    n, d = x.shape
    if n == 0 or d == 0:
        raise DataError(f"features must have at least one sample and one dimension; got shape {x.shape}.")
    x = np.array(x, dtype=np.float64, order="C")  # a copy: callers' arrays are never modified
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"features contain {int(bad.sum())} NaN/inf values (in {len(rows)} samples, first at row {rows[0]}); "
            "drop or fix those samples before scoring."
        )
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be a 1-D array of N class ids; got shape {y.shape}.")
    if len(y) != n:
        raise DataError(f"features has {n} samples but labels has {len(y)}; they must match one to one.")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
            raise DataError("labels must be integer class ids; got non-integer floating-point values.")
    elif y.dtype.kind not in "biuUS":
        raise DataError(f"labels must be integer class ids; got dtype {y.dtype}.")
    classes, y = np.unique(y, return_inverse=True)
    k = len(classes)
    if k < 2:
        raise DataError(f"labels must contain at least 2 classes to score transferability; got {k}.")
    counts = np.bincount(y, minlength=k)
    if counts.min() < 2:
        single = [classes[i].item() for i in np.flatnonzero(counts < 2)][:10]
        raise DataError(f"every class needs at least 2 samples; class(es) {single} have 1. Drop them or add samples.")
    return x, y.astype(np.int64), k


def _unit_scale(x: np.ndarray) -> np.ndarray:
    """x / max|x|: keeps Gram matrices far from overflow; only for scores invariant to a global scale."""
    m = np.abs(x).max()
    return x / m if m > 0 else x


def _varying_dims(x: np.ndarray) -> int:
    """Number of non-constant columns: the D of isotropic shrinkage targets, so dead units do not dilute them."""
    return int(np.count_nonzero(np.ptp(x, axis=0) > 0))


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin SVD x = U diag(sqrt(eig)) V^T restricted to the numerical rank r: returns U (N, r) and eig (r,).

    Uses eigh of the smaller of X X^T and X^T X (2-4x faster than an SVD of X); eig are the squared singular values,
    in descending order.
    """
    n, d = x.shape
    if n <= d:
        eig, q = np.linalg.eigh(x @ x.T)
    else:
        eig, q = np.linalg.eigh(x.T @ x)
    eig, q = eig[::-1], q[:, ::-1]
    if eig.size == 0 or eig[0] <= 0:
        return np.zeros((n, 0)), np.zeros(0)
    keep = eig > _RANK_RTOL * eig[0]
    eig, q = eig[keep], q[:, keep]
    u = q if n <= d else (x @ q) / np.sqrt(eig)
    return u, eig


def _ledoit_wolf(z: np.ndarray, dim: int) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity of the covariance of centred samples `z` towards mu * I.

    `z` (N, r) may hold coordinates in an r-dim orthonormal basis of the data span while the covariance lives in
    `dim` >= r dimensions: the missing directions have zero variance, which the formulas account for through `dim`.
    Uses only N x r arrays: ||S||_F^2, tr(S) and sum_i ||z_i||^4 are basis-independent.
    """
    n = z.shape[0]
    s = (z.T @ z) / n
    tr = float(np.trace(s))
    fro2 = float(np.sum(s * s))
    delta = fro2 - tr * tr / dim  # ||S - mu I||_F^2, the distance to the target
    beta = (float(np.sum(np.sum(z * z, axis=1) ** 2)) / n - fro2) / n  # estimated error of S, ||S - Sigma||^2
    if delta <= 0:  # S is already a multiple of the identity (or zero): any intensity gives the same matrix
        return 0.0 if tr > 0 else 1.0
    return float(min(max(beta, 0.0), delta) / delta)


def _one_hot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k))
    out[np.arange(len(y)), y] = 1.0
    return out


def _class_means(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, y, z)
    return sums / np.bincount(y, minlength=k)[:, None]


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Mean per-class recall: a majority-class predictor scores 1/K whatever the class balance."""
    hits = np.bincount(y, weights=(pred == y).astype(np.float64), minlength=k)
    return float(np.mean(hits / np.bincount(y, minlength=k)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_finite(value: float, method: str) -> float:
    if not math.isfinite(value):
        raise DataError(
            f"{method} produced a non-finite score ({value}); the features are numerically degenerate "
            "(for example astronomically large values). Rescale them and try again."
        )
    return float(value)


def _positive(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> None:
    """Raises ConfigError unless `value` is a finite number above `minimum` (at least it, if not `strict`)."""
    if integer and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ConfigError(f"{name} must be an integer; got {value!r}.")
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and (value > minimum if strict else value >= minimum)):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(f"{name} must be a finite number {bound}; got {value!r}.")


# ---------------------------------------------------------------------------------------------------------------
# LogME
# ---------------------------------------------------------------------------------------------------------------


def _logme_evidence(
    u: np.ndarray, eig: np.ndarray, targets: np.ndarray, max_iter: int = 500, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximised log evidence of y_k = F w + noise per target column, with F = U diag(sqrt(eig)) V^T.

    Model: w ~ N(0, I / alpha), noise ~ N(0, I / beta), so y ~ N(0, I / beta + F F^T / alpha). With z = U^T y,
    lam = alpha / beta, m = posterior mean of w, everything is diagonal in the SVD basis:
        gamma = sum eig / (eig + lam),  |m|^2 = sum eig z^2 / (eig + lam)^2,
        |F m - y|^2 = sum (lam / (eig + lam))^2 z^2 + (|y|^2 - |z|^2),
    and MacKay's fixed point (LogME Algorithm 1) is alpha = gamma / |m|^2, beta = (N - gamma) / |F m - y|^2. The log
    evidence is N/2 log beta + r/2 log alpha - 1/2 sum log(alpha + beta eig) - beta/2 |F m - y|^2 - alpha/2 |m|^2
    - N/2 log(2 pi), where r = rank F (the D - r null directions of F cancel out of D/2 log alpha - 1/2 log|A|).

    Returns (alpha, beta, evidence), one entry per column of `targets` (N, T); evidence is not divided by N.
    """
    n = targets.shape[0]
    y2 = np.sum(targets * targets, axis=0)
    evidence = np.empty(targets.shape[1])
    alpha = np.full(targets.shape[1], np.inf)
    beta = n / np.maximum(y2, np.finfo(float).tiny)
    z2 = (u.T @ targets) ** 2 if eig.size else np.zeros((0, targets.shape[1]))
    res0 = np.maximum(y2 - z2.sum(axis=0), 0.0)  # part of y outside the span of F
    # A target with no component in the span of F is explained by noise alone: alpha = inf (w = 0) is the optimum.
    signal = z2.sum(axis=0) > 1e-24 * np.maximum(y2, np.finfo(float).tiny)
    evidence[:] = -0.5 * n * (np.log(2 * np.pi * y2 / n) + 1.0)
    if signal.any():
        e = eig[:, None]
        zz, r0 = z2[:, signal], res0[signal]
        a, b = np.ones(zz.shape[1]), np.ones(zz.shape[1])  # the paper's initialisation
        # Keep lam inside a range set by the spectrum: when y lies in the span of F (D >= N) the optimum can sit at
        # beta -> inf, and the iteration would otherwise creep towards it until it over- or underflows.
        lam_lo, lam_hi = 1e-12 * eig[0], 1e12 * eig[0]
        for _ in range(max_iter):
            lam = np.clip(a / b, lam_lo, lam_hi)
            gamma = np.sum(e / (e + lam), axis=0)
            m2 = np.sum(e * zz / (e + lam) ** 2, axis=0)
            res2 = np.sum((lam / (e + lam)) ** 2 * zz, axis=0) + r0
            a = gamma / m2
            b = (n - gamma) / np.maximum(res2, 1e-300)
            new_lam = np.clip(a / b, lam_lo, lam_hi)
            if np.all(np.abs(new_lam - lam) <= tol * lam):
                break
        # Evidence at the returned (alpha, beta): recompute m and the residual for exactly these values.
        lam = a / b
        m2 = np.sum(e * zz * (b / (a + b * e)) ** 2, axis=0)
        res2 = np.sum((lam / (e + lam)) ** 2 * zz, axis=0) + r0
        r = len(eig)
        ev = (
            0.5 * n * np.log(b)
            + 0.5 * r * np.log(a)
            - 0.5 * np.sum(np.log(a + b * e), axis=0)
            - 0.5 * b * res2
            - 0.5 * a * m2
            - 0.5 * n * np.log(2 * np.pi)
        )
        # The supremum can sit at alpha -> inf (features useless for this target: w = 0), which the fixed point
        # only creeps towards; that limit is the noise-only evidence, so take it when it is higher.
        edge = ev < evidence[signal]
        a, b = np.where(edge, np.inf, a), np.where(edge, beta[signal], b)
        evidence[signal], alpha[signal], beta[signal] = np.maximum(ev, evidence[signal]), a, b
    return alpha, beta, evidence


def logme(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, max_iter: int = 500, tol: float = 1e-10
) -> float:
    """LogME: average maximised log marginal likelihood (evidence) of a Bayesian linear model on the features.

    You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021.
    For each class k the target is the one-vs-all indicator y_k; y_k = F w + noise with a Gaussian prior on w
    (precision alpha) and Gaussian noise (precision beta), and (alpha, beta) maximise the evidence p(y_k | F) by the
    paper's fixed-point iteration on the SVD of F. The score is mean_k(log p(y_k | F, alpha_k, beta_k)) / N.
    Features are used as given (no centring, no bias term), as in the paper.

    Scaling: invariant to a global rescaling of the features (F -> c F is absorbed by alpha -> c^2 alpha); not
    invariant to per-dimension rescaling or to a shift. D >= N is fine: the evidence only involves F F^T, computed
    on the rank-r span of F. Cost: one eigendecomposition of the smaller Gram matrix, then O(r K) per iteration.

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: unused (LogME is deterministic); kept for the common signature.
        max_iter: cap on fixed-point iterations per class. Informative features converge in 10-30; near-useless
            ones slowly (measured, N=1000, D=1280: at most 1.3e-5 of error per sample after 100 iterations, 5e-7
            after 500, which take ~0.05 s; N=100, D=2048 noise: 8e-5 after 500).
        tol: stop when alpha / beta changes by less than this relative amount for every class.

    Returns:
        Mean per-sample log evidence (usually negative, positive for very well separated classes; higher = better).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> logme(rng.normal(size=(100, 8)) + 2 * y[:, None], y) > logme(rng.normal(size=(100, 8)), y)
        True
    """
    _positive("max_iter", max_iter, integer=True)
    _positive("tol", tol)
    x, y, k = _prepare(features, labels)
    u, eig = _spectrum(_unit_scale(x))
    _, _, evidence = _logme_evidence(u, eig, _one_hot(y, k), max_iter=max_iter, tol=tol)
    return _check_finite(float(np.mean(evidence)) / len(y), "logme")


# ---------------------------------------------------------------------------------------------------------------
# SFDA
# ---------------------------------------------------------------------------------------------------------------


def _fisher_posterior(z: np.ndarray, y: np.ndarray, k: int, dim: int, shrinkage: float) -> np.ndarray:
    """p(class | x) of the regularised-FDA classifier in Fisher space (Shao et al. 2022, Sec. 3.1).

    S_W = prior-weighted within-class covariance, regularised to (1 - lam) S_W + lam * mu * I with mu = tr(S_W) / D.
    The K - 1 Fisher directions maximise between- over (regularised) within-class scatter; in the projected space
    the class score is x~ . mu~_c - |mu~_c|^2 / 2 + log prior_c, turned into probabilities by a softmax.
    """
    n, r = z.shape
    counts = np.bincount(y, minlength=k)
    log_prior = np.log(counts / n)
    if r == 0:
        return np.tile(np.exp(log_prior), (n, 1))
    means = _class_means(z, y, k)
    resid = z - means[y]
    sw = resid.T @ resid / n
    mu = np.trace(sw) / dim
    center = (counts / n) @ means
    if mu <= 0:  # no within-class spread at all (every sample equals its class mean): a tiny isotropic floor
        mu = 1e-12 * np.sum((z - center) ** 2) / (n * dim)
        if mu <= 0:
            return np.tile(np.exp(log_prior), (n, 1))
    sw_reg = (1.0 - shrinkage) * sw + shrinkage * mu * np.eye(r)
    ev, q = np.linalg.eigh(sw_reg)
    whiten = q / np.sqrt(np.maximum(ev, ev.max() * 1e-15))  # whiten.T @ sw_reg @ whiten = I
    mw = (means - center) @ whiten
    # Fisher directions = top right singular vectors of the prior-weighted whitened class means (the eigenvectors
    # of S_B in the metric of the regularised S_W).
    _, _, vt = np.linalg.svd(np.sqrt(counts / n)[:, None] * mw, full_matrices=False)
    proj = vt[: min(k - 1, r)].T
    xp = (z - center) @ whiten @ proj
    mp = mw @ proj
    return _softmax(xp @ mp.T - 0.5 * np.sum(mp * mp, axis=1) + log_prior)


def sfda(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    a: float = 5.0,
    self_challenge: bool = True,
    shrinkage_floor: bool = False,
    log_prob: bool = False,
    max_dim: int | None = None,
) -> float:
    """SFDA: class separability of the features in a regularised Fisher space, on self-challenged (mixed) features.

    Shao, Zhao, Ge, Zhang, Yang, Wang, Shan, Luo, "Not All Models Are Equal: Predicting Model Transferability in a
    Self-challenging Fisher Space", ECCV 2022. As implemented:

    1. Regularised FDA: S_W = within-class covariance (prior-weighted average of the biased class covariances),
       regularised as (1 - lam) S_W + lam * (tr(S_W) / D) I, with the paper's adaptive strength
       lam = exp(-a * largest eigenvalue of S_W) (a = 5 as in the authors' release). Project onto the K - 1 Fisher
       directions and classify with a softmax over x~ . mu~_c - |mu~_c|^2 / 2 + log prior_c (mu~_c = projected class
       means). Mathematically this equals linear discriminant analysis with the regularised S_W.
    2. Self-challenge (ConfMix): p_i = softmax over classes of the step-1 probabilities of sample i (a deliberately
       flat "softened" confidence), taken at its true class; every sample moves towards the mean of the other
       classes' means: x_i <- p_i x_i + (1 - p_i) * mean_{c != y_i} mu_c. Hard samples move further.
    3. Repeat step 1 on the mixed features with the same lam; the score is the mean over samples of the probability
       of the true class (``log_prob=True``: mean log-probability instead).

    Details not fixed by the paper's text follow the authors' public release (a = 5, the softened confidence, the
    unweighted outer-class mean, mean probability without log, lam floored at 1e-10).

    Deviation, for D large next to N only (nothing changes while D <= N // K): the features are first reduced to
    their top m = min(D', max_dim) principal components, D' being the number of non-constant dimensions (dead
    units change nothing) and ``max_dim`` defaulting to N // K, the mean class size. SFDA is an in-sample score:
    its class means and S_W are fitted on the samples it then classifies, and with D >> N / K even pure noise looks
    perfectly separable (measured: N=100, K=5, D=2048 noise scores 1.000 uncapped, 0.26 capped, chance being 0.2),
    so a high-dimensional useless backbone would outrank a good low-dimensional one. The paper's lam is ~0 whenever
    the largest eigenvalue of S_W exceeds ~5, so without the cap S_W would also be singular once D >= N - K; with
    it (m <= N / K <= N - K) S_W is invertible. Some optimism remains when m approaches N / K (noise: ~0.6 for
    K = 2, ~0.26 for K = 5).
    ``shrinkage_floor=True`` (off by default) additionally raises lam to the Ledoit-Wolf shrinkage of the
    within-class residuals, which damps that optimism further but also shrinks well-estimated S_W (N >> D).

    Scaling: NOT invariant to feature scaling: the paper's lam depends on the absolute size of S_W (larger
    features get less shrinkage). Invariant to a shift of the features. Scores lie in (0, 1] (``log_prob``: <= 0).

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: unused (SFDA is deterministic); kept for the common signature.
        a: adaptive-shrinkage constant in lam = exp(-a * sigma_max(S_W)).
        self_challenge: apply the ConfMix step (False: plain regularised-FDA score).
        shrinkage_floor: use max(paper lam, Ledoit-Wolf lam) as the shrinkage (False: the paper's lam, floored at
            1e-10 as in the authors' release).
        log_prob: score with the mean log-probability of the true class instead of the mean probability.
        max_dim: number of principal components kept (default N // K); pass D to reduce nothing.

    Returns:
        Mean probability (or log-probability) of the true class; higher = better.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> sfda(rng.normal(size=(100, 8)) + 2 * y[:, None], y) > sfda(rng.normal(size=(100, 8)), y)
        True
    """
    _positive("a", a, strict=False)
    if max_dim is not None:
        _positive("max_dim", max_dim, integer=True)
    x, y, k = _prepare(features, labels)
    n = len(y)
    d = min(_varying_dims(x), max_dim if max_dim is not None else max(1, n // k))
    xc = x - x.mean(axis=0)
    peak = float(np.abs(xc).max())
    u, eig = _spectrum(xc / peak if peak > 0 else xc)  # unit scale inside the Gram matrix only: SFDA is scale-aware
    z = u[:, :d] * (np.sqrt(eig[:d]) * peak)  # top principal coordinates of the centred features (N, r <= d)
    if z.shape[1] == 0:
        lam = 1.0
    else:
        resid = z - _class_means(z, y, k)[y]
        sw = resid.T @ resid / n
        top = float(np.linalg.eigvalsh(sw)[-1])
        lam = math.exp(-a * top)
        if shrinkage_floor:
            lam = max(lam, _ledoit_wolf(resid, d))
        lam = min(max(lam, 1e-10), 1.0)
    prob = _fisher_posterior(z, y, k, d, lam)
    if self_challenge:
        conf = _softmax(prob)[np.arange(n), y][:, None]
        means = _class_means(z, y, k)
        outer = (means.sum(axis=0) - means) / (k - 1)
        z = conf * z + (1.0 - conf) * outer[y]
        prob = _fisher_posterior(z, y, k, d, lam)
    p_true = prob[np.arange(n), y]
    value = float(np.mean(np.log(np.maximum(p_true, 1e-300)))) if log_prob else float(np.mean(p_true))
    return _check_finite(value, "sfda")


# ---------------------------------------------------------------------------------------------------------------
# H-score
# ---------------------------------------------------------------------------------------------------------------


def hscore(features: np.ndarray, labels: np.ndarray, *, seed: int = 0, shrinkage: bool = True) -> float:
    """H-score with Ledoit-Wolf shrinkage: tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y])).

    Bao, Li, Huang, Liang, Tan, Zhang, Zhao, "An Information-theoretic Approach to Transferability in Task Transfer
    Learning", ICIP 2019 (H-score); Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking
    transferability metrics, their peculiarities, stability and performance", 2021 (shrinkage). cov(f) is the
    feature covariance, cov_alpha(f) = (1 - alpha) cov(f) + alpha (tr(cov(f)) / D) I its Ledoit-Wolf shrunk
    estimate, and cov(E[f | y]) the covariance of the class-conditional means (between-class covariance, class
    frequencies as weights). Both covariances use the 1/N normalisation. D counts the non-constant dimensions only:
    dead units would otherwise dilute the isotropic target and change the score.

    Scaling: invariant to a global rescaling and to a shift of the features (alpha is scale-free); not invariant to
    per-dimension rescaling (the shrinkage target is isotropic). Values lie in [0, K - 1]. D >= N is fine: alpha > 0
    keeps cov_alpha invertible and the trace only involves the rank-r span of the centred data, where everything is
    computed exactly. ``shrinkage=False`` gives the original H-score with the pseudo-inverse, which approaches K - 1
    for *any* features once D >= N - 1: use it only for N >> D.

    Caveat (in-sample score): shrinkage tames but does not remove the optimism of D >> N. Measured on pure noise with
    N = 100, K = 5: 0.32 at D = 512 and 1.14 at D = 2048, more than informative 512-d features with a moderate class
    signal (0.52). At small N, compare backbones of similar D with it, or rely on linear_probe / knn / logme.

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: unused (deterministic); kept for the common signature.
        shrinkage: apply the Ledoit-Wolf shrinkage (default, recommended).

    Returns:
        The (shrinkage) H-score; higher = better.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> hscore(rng.normal(size=(100, 8)) + 2 * y[:, None], y) > hscore(rng.normal(size=(100, 8)), y)
        True
    """
    x, y, k = _prepare(features, labels)
    n, d = len(y), _varying_dims(x)
    u, eig = _spectrum(_unit_scale(x - x.mean(axis=0)))
    if eig.size == 0:  # constant features carry no information about the labels
        return 0.0
    z = u * np.sqrt(eig)  # cov(f) is diag(eig / N) in this basis
    alpha = _ledoit_wolf(z, d) if shrinkage else 0.0
    mu = eig.sum() / (n * d)
    counts = np.bincount(y, minlength=k)
    between = (counts / n) @ (_class_means(z, y, k) ** 2)  # diagonal of cov(E[f | y]) in the same basis
    value = (1.0 - alpha) * np.sum(between / ((1.0 - alpha) * eig / n + alpha * mu))
    return _check_finite(float(value), "hscore")


# ---------------------------------------------------------------------------------------------------------------
# k-nearest neighbours
# ---------------------------------------------------------------------------------------------------------------


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, k: int = 5, chunk_size: int | None = None
) -> float:
    """Leave-one-out k-NN balanced accuracy with cosine similarity.

    Each sample is classified by majority vote of its k most cosine-similar other samples (features L2-normalised;
    a zero vector has similarity 0 to everything). Deterministic ties: among equally similar neighbours the lower
    sample index wins; a tied vote goes to the class with the larger summed similarity, then to the smaller class id.
    The score is the balanced accuracy (mean per-class recall), so a majority-class vote scores 1/K.

    Scaling: invariant to a global rescaling and to a per-sample rescaling of the features (cosine); not invariant
    to per-dimension rescaling or to a shift. No covariance is estimated, so D >= N needs nothing special.
    Cost: O(N^2 D) time, O(chunk_size * N) memory.

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: unused (deterministic); kept for the common signature.
        k: number of neighbours (capped at N - 1).
        chunk_size: rows of the similarity matrix computed at once (default: about 4M entries).

    Returns:
        Balanced leave-one-out accuracy in [0, 1]; higher = better.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> knn_accuracy(rng.normal(size=(100, 8)) + 2 * np.eye(8)[y], y, k=5) > 0.9
        True
    """
    _positive("k", k, integer=True)
    if chunk_size is not None:
        _positive("chunk_size", chunk_size, integer=True)
    x, y, n_classes = _prepare(features, labels)
    n = len(y)
    k = min(k, n - 1)
    x = _unit_scale(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    onehot = _one_hot(y, n_classes)
    step = chunk_size or max(1, (1 << 22) // n)
    pred = np.empty(n, dtype=np.int64)
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        sim = x[rows] @ x.T
        sim[np.arange(len(rows)), rows] = -np.inf  # leave one out
        # The k-th largest similarity per row; take everything above it, then the lowest-index ties to fill k.
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1 : k]
        above = sim > kth
        tied = sim == kth
        need = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        votes = chosen.astype(np.float64) @ onehot
        simsum = np.where(chosen, sim, 0.0) @ onehot
        best = votes == votes.max(axis=1, keepdims=True)
        pred[rows] = np.argmax(np.where(best, simsum, -np.inf), axis=1)  # argmax: first (lowest) class on a tie
    return _balanced_accuracy(y, pred, n_classes)


# ---------------------------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------------------------


def _stratified_folds(y: np.ndarray, k: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per sample: each class shuffled with `seed`, then dealt round-robin so folds stay class-balanced."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(k)])
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, k: int, l2: float, max_iter: int, balanced: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: mean (class-weighted) cross-entropy + l2/2 |W|^2, L-BFGS in float64.

    Starts from zero weights, so the fit is a deterministic function of the data (the problem is convex).
    """
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    weight = None
    if balanced:  # each class contributes equally to the loss, matching the balanced-accuracy target
        counts = np.bincount(y, minlength=k).astype(np.float64)
        weight = torch.from_numpy(len(y) / (k * counts))
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w + b
        if weight is None:
            ce = torch.nn.functional.cross_entropy(logits, yt)
        else:  # weighted mean with weights normalised by N (not by the weight sum) keeps l2 comparable
            ce = (torch.nn.functional.cross_entropy(logits, yt, reduction="none") * weight[yt]).mean()
        loss = ce + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def linear_probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    folds: int = 5,
    l2: float = 1e-3,
    max_iter: int = 200,
    balanced_loss: bool = True,
) -> float:
    """Stratified k-fold cross-validated balanced accuracy of an L2-regularised multinomial logistic regression.

    Folds are stratified by class and shuffled with `seed`; `folds` is lowered to the smallest class size when a
    class has fewer samples (every training split then holds every class). Each fold standardises the features with
    the training part's mean and standard deviation (constant dimensions are left at 0), fits
    mean cross-entropy + l2/2 * |W|^2 (bias not penalised; classes weighted to equal total weight when
    ``balanced_loss``) with L-BFGS in float64 from zero weights, and predicts the held-out part. The score is the
    balanced accuracy (mean per-class recall) of the pooled out-of-fold predictions.

    Scaling: invariant to per-dimension rescaling and shifts of the features (standardisation), up to rounding.
    Deterministic for a given seed (on the same machine and thread count). Held-out predictions, so D >= N does not
    inflate the score. ``l2`` = 1 / (C * n_train) in scikit-learn's parametrisation.

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: seed of the fold split.
        folds: number of cross-validation folds (>= 2).
        l2: L2 penalty on the weights, relative to the mean loss.
        max_iter: L-BFGS iterations per fold.
        balanced_loss: weight classes inversely to their frequency in the loss.

    Returns:
        Balanced cross-validated accuracy in [0, 1]; higher = better.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> linear_probe_accuracy(rng.normal(size=(100, 8)) + 2 * y[:, None], y) > 0.9
        True
    """
    _positive("folds", folds, integer=True, minimum=1)
    _positive("l2", l2, strict=False)
    _positive("max_iter", max_iter, integer=True)
    x, y, k = _prepare(features, labels)
    x = _unit_scale(x)  # standardisation makes the score scale-free; this only keeps x^2 from overflowing
    n_folds = min(folds, int(np.bincount(y).min()))
    fold = _stratified_folds(y, k, n_folds, seed)
    pred = np.empty(len(y), dtype=np.int64)
    for f in range(n_folds):
        train, test = fold != f, fold == f
        xtr = x[train]
        mean = xtr.mean(axis=0)
        std = xtr.std(axis=0)
        # Constant (on this split) dimensions: divide by 1, so they become 0 instead of 0/0.
        std = np.where(std > 1e-12 * max(float(np.abs(xtr).max()), 1e-300), std, 1.0)
        w, b = _fit_logistic((xtr - mean) / std, y[train], k, l2, max_iter, balanced_loss)
        pred[test] = np.argmax(((x[test] - mean) / std) @ w + b, axis=1)
    return _balanced_accuracy(y, pred, k)


# ---------------------------------------------------------------------------------------------------------------
# NLEEP
# ---------------------------------------------------------------------------------------------------------------


def _kmeans_pp(z: np.ndarray, v: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): `v` rows of `z` as initial centres."""
    centres = [z[rng.integers(len(z))]]
    d2 = np.sum((z - centres[0]) ** 2, axis=1)
    for _ in range(1, v):
        total = d2.sum()
        i = int(rng.choice(len(z), p=d2 / total)) if total > 0 else int(rng.integers(len(z)))
        centres.append(z[i])
        d2 = np.minimum(d2, np.sum((z - z[i]) ** 2, axis=1))
    return np.stack(centres)


def _sq_dist_over_var(z: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    """sum_d (z_nd - m_vd)^2 / var_vd as an (N, V) array, without an (N, V, d) temporary."""
    inv = 1.0 / var
    return (z * z) @ inv.T - 2.0 * z @ (means * inv).T + np.sum(means * means * inv, axis=1)[None]


def _diagonal_gmm(z: np.ndarray, v: int, rng: np.random.Generator, max_iter: int) -> tuple[np.ndarray, float]:
    """p(component | sample), (N, v), of a diagonal-covariance Gaussian mixture fitted to `z` by EM from one
    k-means++ start, and its mean log-likelihood."""
    n, _ = z.shape
    spread = max(float(z.var(axis=0).mean()), 1e-300)
    reg = 1e-3 * spread  # added to every variance (like sklearn's reg_covar, but scale-free): no collapse on a sample
    means = _kmeans_pp(z, v, rng)
    resp = _softmax(-0.5 * _sq_dist_over_var(z, means, np.full_like(means, spread)))
    prev = ll = -np.inf
    for _ in range(max_iter):
        weight = resp.sum(axis=0) + 1e-12
        means = (resp.T @ z) / weight[:, None]
        var = np.maximum((resp.T @ (z * z)) / weight[:, None] - means**2, 0.0) + reg
        log_p = (
            np.log(weight / n)[None]
            - 0.5 * np.sum(np.log(2 * np.pi * var), axis=1)[None]
            - 0.5 * _sq_dist_over_var(z, means, var)
        )
        top = log_p.max(axis=1, keepdims=True)
        norm = top + np.log(np.exp(log_p - top).sum(axis=1, keepdims=True))
        resp = np.exp(log_p - norm)
        ll = float(norm.mean())
        if abs(ll - prev) <= 1e-10 * max(1.0, abs(ll)):
            break
        prev = ll
    return resp, ll


def nleep(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    variance: float = 0.8,
    components_per_class: int = 5,
    max_iter: int = 200,
    n_init: int = 3,
) -> float:
    """NLEEP: the LEEP score of a Gaussian mixture fitted to the PCA-reduced features.

    Li, Jia, Zhang, Sun, Chang, Gong, Tan, "Ranking Neural Checkpoints", CVPR 2021. The features are centred and
    reduced by PCA to the fewest components that explain `variance` of their variance; a Gaussian mixture with
    V = `components_per_class` * K components is fitted (EM; the best of `n_init` k-means++ starts drawn with
    `seed`) and plays the
    source classifier of LEEP (Nguyen et al., ICML 2020): with q(z | x) its posteriors, p(y | z) = sum_i q(z | x_i)
    [y_i = y] / sum_i q(z | x_i), and the score is mean_i log sum_z p(y_i | z) q(z | x_i).

    Differences from the reference, both for small N: the mixture has diagonal covariances, each with 1e-3 of the
    mean variance added, instead of full ones, and it is kept from memorising the sample: V <= N / 10 and the PCA
    dimension <= N / V (a mixture with a component per sample gives every backbone the maximum score 0). Below 20
    samples that leaves one component, and every backbone scores the class prior: use another score there.

    Scaling: invariant to a global rescaling and to a shift of the features (PCA on centred features, a relative
    variance floor); not invariant to per-dimension rescaling. D >= N is fine (PCA works in the span of the data).
    Cost: O(n_init * iterations * N * V * d) time and O(N * V) memory for d kept dimensions.

    Args:
        features: (N, D) frozen features of one backbone.
        labels: (N,) class ids.
        seed: seed of the k-means++ start of the mixture.
        variance: fraction of the variance the PCA keeps, in (0, 1].
        components_per_class: mixture components per class (the paper's 5).
        max_iter: cap on EM iterations.
        n_init: EM starts; the one with the highest likelihood is kept (one start moved the score by up to 0.07 on
            200 samples, more than the gaps between close backbones).

    Returns:
        Mean log-likelihood of the labels under the mixture's LEEP classifier, <= 0; higher = better.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50)
        >>> nleep(rng.normal(size=(100, 8)) + 3 * np.eye(8)[y], y) > nleep(rng.normal(size=(100, 8)), y)
        True
    """
    _positive("variance", variance)
    if variance > 1:
        raise ConfigError(f"variance must be a fraction in (0, 1]; got {variance!r}.")
    _positive("components_per_class", components_per_class, integer=True)
    _positive("max_iter", max_iter, integer=True)
    _positive("n_init", n_init, integer=True)
    x, y, k = _prepare(features, labels)
    n = len(y)
    onehot = _one_hot(y, k)
    u, eig = _spectrum(_unit_scale(x - x.mean(axis=0)))
    if eig.size == 0:  # constant features: one component, p(y | z) is the class prior
        return _check_finite(float(np.mean(np.log(onehot.mean(axis=0)[y]))), "nleep")
    v = int(max(1, min(components_per_class * k, n // 10)))
    explained = np.cumsum(eig) / eig.sum()
    dim = int(min(np.searchsorted(explained, variance - 1e-12) + 1, max(1, n // v), len(eig)))
    z = u[:, :dim] * np.sqrt(eig[:dim] / n)  # PCA coordinates with unit-free variances
    rng = np.random.default_rng(seed)
    q, _ = max((_diagonal_gmm(z, v, rng, max_iter) for _ in range(n_init)), key=lambda fit: fit[1])
    joint = q.T @ onehot  # (V, K): sum_i q(z | x_i) [y_i = y]
    p_y_given_z = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
    p_y = np.sum(q * p_y_given_z[:, y].T, axis=1)
    return _check_finite(float(np.mean(np.log(np.maximum(p_y, 1e-300)))), "nleep")


# ---------------------------------------------------------------------------------------------------------------
# Registry and entry point
# ---------------------------------------------------------------------------------------------------------------

SCORES: dict[str, Callable[..., float]] = {
    "logme": logme,
    "sfda": sfda,
    "hscore": hscore,
    "knn": knn_accuracy,
    "linear_probe": linear_probe_accuracy,
    "nleep": nleep,
}
"""Score name -> function ``fn(features, labels, *, seed=0, **options) -> float`` (higher = better)."""

INVARIANCES: dict[str, frozenset[str]] = {
    "logme": frozenset({"scale"}),
    "sfda": frozenset({"shift"}),
    "hscore": frozenset({"scale", "shift"}),
    "knn": frozenset({"scale", "sample_scale"}),
    "linear_probe": frozenset({"scale", "shift", "dim_scale"}),
    "nleep": frozenset({"scale", "shift"}),
}
"""Transformations of the features that leave each score unchanged (up to rounding); the tests check every claim.

``scale``: x -> c x (one c > 0); ``shift``: x -> x + b (one b for all samples); ``dim_scale``: each dimension
multiplied by its own c_j > 0; ``sample_scale``: each sample multiplied by its own c_i > 0.
"""


def score(method: str, features: np.ndarray, labels: np.ndarray, seed: int = 0, **options: Any) -> float:
    """Transferability score of one backbone's frozen features on a labelled target set (higher = better).

    Validates the input (2-D finite features, one label per sample, >= 2 classes, >= 2 samples per class) and
    dispatches to ``SCORES[method]``. Compare the result only with other backbones' scores from the same method on
    the same data set.

    Args:
        method: one of ``SCORES``: "logme", "sfda", "hscore", "knn", "linear_probe", "nleep".
        features: (N, D) features; any real dtype (computed in float64).
        labels: (N,) class ids; any integers (or strings), remapped to 0..K-1.
        seed: seed for the methods that use randomness (``linear_probe`` folds, ``nleep`` mixture starts).
        **options: method-specific options (for example ``k=10`` for "knn", ``folds=3`` for "linear_probe").

    Returns:
        The score as a Python float.

    Raises:
        ConfigError: unknown method or option, or an option out of range.
        DataError: unusable features or labels.

    Example:
        >>> import numpy as np
        >>> y = np.repeat([3, 7], 20)
        >>> x = np.random.default_rng(0).normal(size=(40, 5)) + 6 * np.eye(5)[(y == 7).astype(int)]
        >>> score("knn", x, y, k=3)
        1.0
    """
    if not isinstance(method, str) or method not in SCORES:
        raise ConfigError(unknown_name_message("transferability score", str(method), list(SCORES)))
    fn = SCORES[method]
    params = inspect.signature(fn).parameters
    valid = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "seed"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"score {method!r} has no option(s) {unknown}; its options are: {', '.join(valid) or 'none'}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer; got {seed!r}.")
    return float(fn(features, labels, seed=int(seed), **options))
