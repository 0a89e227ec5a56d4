"""Statistics shared by the studies: intervals, paired tests, multiple-comparison correction, metrics.

Thin, documented wrappers over scipy and statsmodels, so every study computes an interval or a
p-value the same way and a reader can check which estimator was used:

- ``wilson_interval``      binomial proportion CI (Wilson score; scipy ``binomtest``)
- ``bootstrap_interval``   CI of any statistic of one sample (scipy ``bootstrap``)
- ``paired_bootstrap``     CI of a statistic of several item-aligned arrays, items resampled jointly
                           (e.g. accuracy(A) - accuracy(B), AUC(A) - AUC(B) on the same items)
- ``mcnemar_exact``        exact McNemar test on paired binary outcomes (statsmodels)
- ``paired_permutation``   sign-flip permutation test of a mean paired difference (scipy)
- ``draws_p_value``        where an observed effect falls among random-control draws (empirical p)
- ``holm``                 Holm step-down adjusted p-values over a family (statsmodels ``multipletests``)
- ``label_metrics``        accuracy, balanced accuracy, ROC AUC, log-loss, per-label fractions, confusion

Every function takes plain sequences / numpy arrays (one entry per item) and returns plain floats or
small dataclasses, so results can be written straight into a csv/json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

__all__ = [
    "Interval", "wilson_interval", "bootstrap_interval", "paired_bootstrap", "McNemar", "mcnemar_exact",
    "paired_permutation", "draws_p_value", "holm", "roc_auc", "label_metrics",
]

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def as_dict(self, prefix: str = "") -> dict:
        """``{prefix+'estimate': ..., prefix+'low': ..., prefix+'high': ...}`` for a results row."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items() if k != "confidence"}

    def fmt(self, digits: int = 3) -> str:
        """``'0.712 [0.650, 0.768]'``."""
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Uses ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``. ``n`` must be >= 1.
    """
    if n < 1:
        raise ValueError("wilson_interval needs n >= 1")
    ci = _st.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), confidence)


def _rng(seed):
    return np.random.default_rng(seed)


def bootstrap_interval(values: Sequence[float], statistic: Callable = np.mean, confidence: float = 0.95,
                       n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, method: str = "percentile") -> Interval:
    """Bootstrap CI of ``statistic(values)`` (items resampled with replacement).

    ``values``: [N] one number per item. ``statistic`` must accept an ``axis`` keyword (numpy reductions do).
    ``method``: scipy's ``"percentile"`` (default; defined even when every value is equal), ``"basic"`` or ``"BCa"``.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("bootstrap_interval needs at least 2 values")
    est = float(statistic(x))
    if np.all(x == x[0]):
        return Interval(est, est, est, confidence)
    res = _st.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples, method=method,
                        rng=_rng(seed), vectorized=True)
    return Interval(est, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence)


def paired_bootstrap(statistic: Callable[..., float], *arrays: Sequence, confidence: float = 0.95,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """Bootstrap CI of ``statistic(*arrays)`` where all arrays are aligned per item ([N] each).

    The same resampled item indices are applied to every array (a paired bootstrap), so
    ``paired_bootstrap(lambda a, b: a.mean() - b.mean(), correct_a, correct_b)`` is the CI of a
    difference in accuracy on shared items, and
    ``paired_bootstrap(lambda y, s1, s2: roc_auc(y, s1) - roc_auc(y, s2), y, s1, s2)`` of an AUC gain.
    Resamples where the statistic is undefined (NaN, e.g. an AUC with one class) are dropped.
    """
    cols = [np.asarray(a) for a in arrays]
    n = len(cols[0])
    if n < 2 or any(len(c) != n for c in cols):
        raise ValueError("paired_bootstrap needs >= 2 items and arrays of equal length")
    est = float(statistic(*cols))
    rng = _rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    draws = np.array([statistic(*(c[i] for c in cols)) for i in idx], dtype=float)
    draws = draws[np.isfinite(draws)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if draws.size else (np.nan, np.nan)
    return Interval(est, float(low), float(high), confidence)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test. ``only_a``: items A got right and B wrong; ``only_b``: the reverse."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Exact (binomial) McNemar test of paired correctness ([N] bools each), two-sided.

    Uses ``statsmodels.stats.contingency_tables.mcnemar(table, exact=True)``; p = 1 when no item is discordant.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("mcnemar_exact needs arrays of equal length")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    only_a, only_b = table[0][1], table[1][0]
    p = 1.0 if only_a + only_b == 0 else float(mcnemar(table, exact=True).pvalue)
    return McNemar(only_a, only_b, min(p, 1.0))


def paired_permutation(a: Sequence[float], b: Sequence[float], n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for mean(a - b) == 0 on paired items ([N] each).

    ``scipy.stats.permutation_test(..., permutation_type="samples")``: exact when 2**N <= n_resamples.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.allclose(x, y):
        return 1.0
    res = _st.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=n_resamples, rng=_rng(seed), alternative="two-sided")
    return float(res.pvalue)


def draws_p_value(observed: float, draws: Sequence[float], alternative: str = "greater") -> float:
    """Empirical p-value of ``observed`` against effects of random-control draws: (1 + #{draw >= observed}) / (1 + k).

    ``alternative="greater"``: is the observed effect larger than random heads'? ``"less"``: smaller.
    With k draws the smallest attainable p is 1 / (k + 1) (0.091 for 10 draws): report it as such.
    """
    d = np.asarray(draws, dtype=float)
    if d.size == 0:
        raise ValueError("draws_p_value needs at least one draw")
    hits = np.sum(d >= observed) if alternative == "greater" else np.sum(d <= observed)
    return float((1 + hits) / (1 + d.size))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values ([M] -> [M], same order), via statsmodels ``multipletests``.

    Reject the family-wise null at level a for every comparison whose adjusted p is <= a.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive): P(score_pos > score_neg), ties count 1/2.

    Computed as the Mann-Whitney U statistic over ``n_pos * n_neg`` from mid-ranks (``scipy.stats.rankdata``).
    NaN when only one class is present.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = _st.rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def label_metrics(gold: Sequence[int], logits, labels: Sequence[str]) -> dict:
    """Metrics of an argmax decision over K candidate labels.

    gold: [N] gold label indices; logits: [N, K] the candidates' next-token logits; labels: [K] names.
    Returns ``n``, ``accuracy``, ``balanced_accuracy`` (mean recall over gold labels present), ``log_loss``
    (cross-entropy of the softmax over the K candidates, nats), ``auc`` (K = 2 only: ROC AUC of the logit
    difference logit[1] - logit[0] for gold == 1; NaN for K > 2), ``max_frac_pred`` (share of items given the
    single most-predicted label: 1/K-ish for a balanced classifier, 1.0 for a constant one), and for K = 2
    ``frac_pred_<label>`` per label plus the confusion counts ``n_<gold>_as_<pred>``.
    """
    y = np.asarray(gold, dtype=int)
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[0] != y.size or z.shape[1] != len(labels):
        raise ValueError("label_metrics needs gold [N], logits [N, K], labels [K]")
    pred = z.argmax(1)
    present = np.unique(y)
    logz = z - z.max(1, keepdims=True)
    logp = logz - np.log(np.exp(logz).sum(1, keepdims=True))                       # [N, K] log softmax
    counts = np.bincount(pred, minlength=len(labels))
    out = {
        "n": int(y.size),
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(np.mean([np.mean(pred[y == c] == c) for c in present])),
        "log_loss": float(-np.mean(logp[np.arange(y.size), y])),
        "auc": roc_auc(y, z[:, 1] - z[:, 0]) if len(labels) == 2 else float("nan"),
        "max_frac_pred": float(counts.max() / y.size),
    }
    if len(labels) == 2:
        names = [str(l).strip() for l in labels]
        for c, name in enumerate(names):
            out[f"frac_pred_{name}"] = float(counts[c] / y.size)
        for g, gname in enumerate(names):
            for p, pname in enumerate(names):
                out[f"n_{gname}_as_{pname}"] = int(np.sum((y == g) & (pred == p)))
    return out
