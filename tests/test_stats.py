"""probe.stats against published values, closed forms and an independent library path."""
from __future__ import annotations

import math

import numpy as np
import pytest

from probe import stats


def test_wilson_matches_published_and_closed_form():
    # Newcombe (1998), Stat. Med. 17:857, example: 81 / 263 -> Wilson 95% CI 0.2553 to 0.3662
    ci = stats.wilson_interval(81, 263)
    assert ci.low == pytest.approx(0.2553, abs=1e-4) and ci.high == pytest.approx(0.3662, abs=1e-4)
    # closed form (z = 1.959964) for 8 / 10
    k, n, z = 8, 10, 1.959963985
    c = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    r = z * math.sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    ci = stats.wilson_interval(k, n)
    assert (ci.low, ci.high) == pytest.approx((c - r, c + r), abs=1e-9)
    assert ci.estimate == 0.8 and stats.wilson_interval(0, 5).low == 0.0
    with pytest.raises(ValueError):
        stats.wilson_interval(0, 0)


def test_mcnemar_exact_is_binomial_on_discordant_pairs():
    a = np.array([1] * 5 + [1] * 1 + [0] * 9 + [0] * 3, dtype=bool)      # 5 both, 1 only A, 9 only B, 3 neither
    b = np.array([1] * 5 + [0] * 1 + [1] * 9 + [0] * 3, dtype=bool)
    r = stats.mcnemar_exact(a, b)
    assert (r.only_a, r.only_b) == (1, 9)
    assert r.p_value == pytest.approx(2 * (1 + 10) / 2 ** 10)           # 2 P(X <= 1), X ~ Bin(10, 1/2)
    assert stats.mcnemar_exact(a, a).p_value == 1.0
    assert stats.mcnemar_exact([1, 0], [0, 1]).p_value == 1.0


def test_holm_step_down():
    # sorted 0.005*4, 0.01*3, 0.03*2, max(0.04*1, previous) -> original order
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]).size == 0


def test_roc_auc_known_value_and_ties():
    assert stats.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert stats.roc_auc([0, 1], [1.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(stats.roc_auc([1, 1], [0.1, 0.2]))
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(2)
    y, s = rng.integers(0, 2, 50), rng.integers(0, 5, 50).astype(float)      # many ties
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert stats.roc_auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))


def test_bootstrap_interval_of_a_mean_is_close_to_the_normal_interval():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    ci = stats.bootstrap_interval(x, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low == pytest.approx(x.mean() - half, abs=0.02) and ci.high == pytest.approx(x.mean() + half, abs=0.02)
    assert stats.bootstrap_interval(x, seed=3) == ci                     # seeded: reproducible
    assert stats.bootstrap_interval([1.0, 1.0, 1.0]) == stats.Interval(1.0, 1.0, 1.0)


def test_paired_bootstrap_resamples_items_jointly():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    shifted = stats.paired_bootstrap(lambda u, v: u.mean() - v.mean(), a + 0.5, a)
    assert (shifted.estimate, shifted.low, shifted.high) == pytest.approx((0.5, 0.5, 0.5))   # pairing cancels noise
    b = rng.normal(size=300)
    indep = stats.paired_bootstrap(lambda u, v: u.mean() - v.mean(), a, b, seed=1)
    half = 1.96 * (a - b).std(ddof=1) / math.sqrt(a.size)
    assert indep.high - indep.low == pytest.approx(2 * half, rel=0.15)
    y = np.array([0, 1] * 50)
    auc_gain = stats.paired_bootstrap(lambda yy, s1, s2: stats.roc_auc(yy, s1) - stats.roc_auc(yy, s2),
                                      y, y + rng.normal(0, 0.1, 100), rng.normal(size=100))
    assert auc_gain.low > 0.2


def test_paired_permutation_exact_small_case():
    # 3 pairs, differences 1, 2, 3: of the 8 sign flips only all-plus / all-minus reach |mean| >= 2
    assert stats.paired_permutation([2, 3, 4], [1, 1, 1]) == pytest.approx(2 / 8)
    assert stats.paired_permutation([1, 2], [1, 2]) == 1.0


def test_draws_p_value():
    assert stats.draws_p_value(5, range(10)) == pytest.approx(6 / 11)
    assert stats.draws_p_value(100, range(10)) == pytest.approx(1 / 11)
    assert stats.draws_p_value(-1, range(10), alternative="less") == pytest.approx(1 / 11)


def test_label_metrics_binary_by_hand():
    gold = [0, 0, 0, 1, 1, 1]
    logits = np.array([[2, 0], [0, 1], [0, 3], [0, 1], [0, 2], [1, 0]], dtype=float)   # preds 0 1 1 1 1 0
    m = stats.label_metrics(gold, logits, [" negative", " positive"])
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m["frac_pred_positive"] == pytest.approx(4 / 6) and m["max_frac_pred"] == pytest.approx(4 / 6)
    assert (m["n_negative_as_positive"], m["n_positive_as_negative"]) == (2, 1)
    assert m["auc"] == pytest.approx(stats.roc_auc(gold, logits[:, 1] - logits[:, 0]))
    sig = lambda t: 1 / (1 + math.exp(-t))                                                # noqa: E731
    d = logits[:, 1] - logits[:, 0]
    ll = -np.mean([math.log(sig(di) if g else 1 - sig(di)) for g, di in zip(gold, d)])
    assert m["log_loss"] == pytest.approx(ll)


def test_label_metrics_multiclass():
    m = stats.label_metrics([0, 1, 2], np.eye(3) * 5, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["max_frac_pred"] == pytest.approx(1 / 3) and math.isnan(m["auc"])
    with pytest.raises(ValueError):
        stats.label_metrics([0, 1], np.zeros((3, 2)), ["a", "b"])
