"""benchmarks/step_attribution.py's estimator: a planted per-step overhead is recovered at equal host speed when the
host's speed changes between runs (the raw ratio of median steps is not), and its interval covers it."""
from __future__ import annotations

import random

from benchmarks.step_attribution import stored_rounds, summarize


def _runs(extra_ms: float, speeds: list, rng: random.Random) -> list:
    """Per round, 60 steps of STORED parts: model work 6 ms + attention 1 ms (+ extra_ms) + 0.5 ms outside, all
    scaled by that run's host speed, with 1 % per-step jitter (the model work's apart from the rest's)."""
    rounds = []
    for f in speeds:
        steps = []
        for _ in range(60):
            j, k = f * (1 + rng.gauss(0, 0.01)), f * (1 + rng.gauss(0, 0.01))
            fo, attn, out = 6.0 * j, (1.0 + extra_ms) * k, 0.5 * k
            steps.append([fo + attn + out, fo, attn, 0.0, out])
        rounds.append(steps)
    return rounds


def test_planted_overhead_is_recovered_under_host_speed_drift():
    rng = random.Random(0)
    slow = lambda: [rng.choice((1.0, 1.7)) for _ in range(12)]   # noqa: E731  (a host that is fast or slow per run)
    per_step = {"plain": _runs(0.0, slow(), rng), "edit": _runs(0.35, slow(), rng)}
    res = summarize(stored_rounds(per_step), draws=400)["edit"]
    truth = 7.85 / 7.5
    assert abs(res["x_ref_speed_normalized"] - truth) < 0.005
    lo, hi = res["x_ref_speed_normalized_ci95"]
    assert lo - 1e-4 <= truth <= hi + 1e-4
    # the same data without a planted overhead: the estimate is 1, whatever the speeds
    null = summarize(stored_rounds({"plain": per_step["plain"], "edit": _runs(0.0, slow(), rng)}), draws=200)["edit"]
    assert abs(null["x_ref_speed_normalized"] - 1.0) < 0.005


def test_raw_ratio_is_not_what_is_reported_when_speeds_differ():
    """With plain always on the slow host and the edit always on the fast one, the raw step ratio says the edit is
    faster; the normalised one still finds the planted overhead."""
    rng = random.Random(1)
    per_step = {"plain": _runs(0.0, [1.7] * 6, rng), "edit": _runs(0.35, [1.0] * 6, rng)}
    res = summarize(stored_rounds(per_step), draws=200)["edit"]
    assert res["x_ref_step_median"] < 0.7
    assert abs(res["x_ref_speed_normalized"] - 7.85 / 7.5) < 0.005
