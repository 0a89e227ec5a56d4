"""Sink detectors on real SmolLM2 show what is known about it (docs/methods.md §9).

Each check is a fact about the model, so a detector swapped for a random one fails it:
random key-0 mass would not be near 0 in layers 0-1 and high in layers >= 12, a random hidden-sink
table would not single out " the", and random dims would not be 507.
"""
from __future__ import annotations

import pytest

from probe.data.prompts import default_prompts
from probe.detect import get_detector


@pytest.fixture(scope="module")
def sinks(smollm2):
    prompts = default_prompts(smollm2.tokenizer, n=4, tokens=160)
    return get_detector("sinks")(smollm2, prompts, batch_size=2)


def test_first_token_sinks_by_layer(sinks):
    heads = sinks.heads
    by_layer = heads.groupby("layer")["key0_mass"].mean()
    assert by_layer.loc[[0, 1]].max() < 0.1                       # early layers: little mass on key 0
    late = heads[heads.layer >= 12]
    assert (late.key0_mass > 0.3).mean() > 0.6                    # most heads of layers >= 12 sink
    assert by_layer.loc[12:].mean() > 4 * by_layer.loc[[0, 1, 10, 11]].mean()
    strongest = {(int(r.layer), int(r.head)) for r in heads.nlargest(6, "key0_mass").itertuples()}
    assert strongest & {(18, 6), (18, 7), (18, 8), (20, 6)}       # the known strongest sink heads


def test_sink_rate_metric(sinks):
    heads = sinks.heads
    assert 0.40 < sinks.summary["sink_rate"] < 0.90                 # a fraction (0-1), as the heads column
    assert sinks.summary["sink_rate"] == pytest.approx(heads.sink_rate.mean())   # summary = mean over heads
    assert set(heads.sink_rate.unique()) <= {0.0, 0.25, 0.5, 0.75, 1.0}          # fraction of 4 prompts
    # per head it follows the sink mass: heads sinking on every prompt carry far more key-0 mass than never-sinking ones
    always, never = heads[heads.sink_rate == 1.0], heads[heads.sink_rate == 0.0]
    assert len(always) and len(never) and always.key0_mass.min() > never.key0_mass.max()
    assert heads[heads.layer <= 1].sink_rate.mean() < 0.25 < heads[heads.layer >= 12].sink_rate.mean()


def test_hidden_sinks_at_non_zero_positions(sinks):
    tokens = sinks.tables["tokens"]
    assert len(tokens) and (tokens.position > 0).all()
    top = tokens.groupby("token").size().sort_values(ascending=False)
    assert top.index[0] == " the"                                 # early " the" tokens act as sinks
    the = tokens[(tokens.token == " the") & tokens.layer.between(4, 7)]
    assert the.received_mass.max() > 0.3


def test_massive_activation_sink_dim(sinks):
    massive = sinks.tables["massive"]
    assert 507 in sinks.summary["sink_dims"]
    d507 = massive[massive.dim == 507].set_index("layer")
    assert d507.loc[15, "max_value"] > 10000 and d507.loc[15, "sun_criterion"]
    assert d507.loc[15, "max_value"] > 10 * d507.loc[5, "max_value"]   # ~650 early, ~22,500 from layer 12
