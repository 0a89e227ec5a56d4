"""Notebook-facing results: Report attributes / repr / HTML, probe.open_report, probe.plot figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import probe

TEXTS = ["the cat and the dog and the cat sat on the mat", "one two three one two three four"]


@pytest.fixture(scope="module")
def tiny_report(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "tiny"
    return probe.scan(tiny_llama, TEXTS, detect=["sinks", "previous-token"], out=out,
                      options={"sinks": {"min_queries": 2, "hidden_threshold": 0.05, "relative_ratio": 2.0}})


def test_report_tables_are_attributes_and_open_report_reads_them(tiny_report):
    back = probe.open_report(tiny_report.path)
    for name in ("heads", "tokens", "massive"):
        assert getattr(back, name).equals(back.tables[name]) and name in dir(back)
    pd.testing.assert_frame_equal(back.heads, tiny_report.heads)
    with pytest.raises(AttributeError, match="tables: heads, massive, tokens"):
        back.arithmetic
    with pytest.raises(probe.ProbeError, match="no report"):
        probe.open_report(tiny_report.path / "missing")


def test_report_repr_is_one_line_and_html_names_the_top_heads(tiny_report):
    r = repr(tiny_report)
    assert "\n" not in r and len(r) < 300 and "tiny-llama" in r and "heads[18]" in r
    html = tiny_report._repr_html_()
    best = tiny_report.heads.nlargest(1, "previous_token_score").iloc[0]
    assert f"L{int(best.layer)}H{int(best['head'])} <b>{best.previous_token_score:.3f}</b>" in html
    assert "sinks, previous-token" in html and "report.massive" in html and len(html) < 20_000


def test_heads_heatmap_of_any_score(tiny_report):
    fig = probe.plot.heads(tiny_report, "previous_token_score")
    grid = tiny_report.heads.pivot(index="layer", columns="head", values="previous_token_score").values
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), grid)
    with pytest.raises(probe.ProbeError, match="choose from"):
        probe.plot.heads(tiny_report, "nope")


def test_token_view_colours_tokens_by_received_mass(tiny_llama):
    text = "a long enough prompt " * 6
    fig = probe.plot.tokens(tiny_llama, text, layer=1, head=4, width=8)
    enc = tiny_llama.encode(text)
    with torch.no_grad(), probe.capture(tiny_llama, stats=("full",), layers=[1]) as rec:
        tiny_llama.model(**enc, use_cache=False)
    p = rec.layer(1).probs[0, 4]                                    # [S, S]
    s = (p.sum(0) / (p > 0).sum(0).clamp_min(1)).numpy()            # mean over the queries that see each key
    z = np.asarray(fig.data[0].z, dtype=float).reshape(-1)[:len(s)]
    np.testing.assert_allclose(z, s, atol=1e-5)
    assert list(fig.data[0].text.reshape(-1)[:3]) == tiny_llama.token_strings(enc["input_ids"][0])[:3]


def test_attention_view_is_the_full_map_and_refuses_long_prompts(tiny_llama):
    fig = probe.plot.attention(tiny_llama, "the cat sat", layer=2, head=0)
    z = np.asarray(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(z, 1), 0)
    with pytest.raises(probe.ProbeError, match="too long"):
        probe.plot.attention(tiny_llama, "word " * 50, layer=0, head=0, max_tokens=20)


def test_patching_heatmap_places_each_effect():
    table = pd.DataFrame(dict(site=["z"] * 4 + ["resid_pre"] * 2, layer=[0, 0, 1, 1, 0, 1], head=[0, 1, 0, 1, -1, -1],
                              position=["all"] * 6, normalized_effect=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    fig = probe.plot.patching(table)
    cols = list(fig.data[0].x)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z[1, cols.index("H1")] == 0.4 and z[0, cols.index("resid_pre")] == 0.5


def test_compare_aligns_layers_by_depth_fraction(tiny_report):
    shallow = tiny_report.heads.copy()
    deep = pd.DataFrame([(l, h, 0, float(l)) for l in range(5) for h in range(6)],
                        columns=["layer", "head", "kv_head", "previous_token_score"])
    profile, diff = probe.plot.compare(shallow, deep, "previous_token_score")
    assert diff is None                                            # 3 vs 5 layers: no cell-by-cell difference
    np.testing.assert_allclose(profile.data[2].x, [0, 0.25, 0.5, 0.75, 1.0])   # deep's mean line
    np.testing.assert_allclose(profile.data[2].y, [0, 1, 2, 3, 4])
    shifted = shallow.assign(previous_token_score=shallow.previous_token_score + 0.5)
    _, diff = probe.plot.compare(shallow, shifted, "previous_token_score")
    np.testing.assert_allclose(np.asarray(diff.data[0].z, dtype=float), 0.5, atol=1e-6)
