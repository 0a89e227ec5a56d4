"""Multi-object Fashion-MNIST scenes, POPE-style questions and CHAIR-style scoring (probe.data.scenes),
and the benchmark metrics of studies/vlm2/report.py on hand-made rows."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from probe.data import scenes as sc


def _pool(n_per_class=5, seed=0):
    """Synthetic 28x28 items whose pixels encode their class (value 20 * (class + 1)) and a 10x10 blob."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    items = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = rng.integers(4, 14, size=2)
        items[i, r:r + 10, col:col + 10] = 20 * (c + 1)
    return items, labels


def test_scene_pixels_hold_the_listed_objects_in_their_cells():
    items, labels = _pool()
    scenes = sc.make_scenes(items, labels, 200, seed=3)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    for s in scenes[:50]:
        assert s.image.shape == (112, 112) and s.image.dtype == np.uint8
        assert len(s.classes) == len(s.objects)                                      # distinct classes
        assert [p for _, p in s.objects] == sorted({p for _, p in s.objects})       # one object per cell, cell order
        for cell in range(4):
            block = s.image[(cell // 2) * 56:(cell // 2 + 1) * 56, (cell % 2) * 56:(cell % 2 + 1) * 56]
            here = [c for c, p in s.objects if p == cell]
            values = set(np.unique(block).tolist()) - {0}
            assert values == ({20 * (here[0] + 1)} if here else set())
    again = sc.make_scenes(items, labels, 200, seed=3)
    assert all(np.array_equal(a.image, b.image) and a.objects == b.objects for a, b in zip(scenes, again))


def test_themes_make_classes_co_occur_unevenly():
    items, labels = _pool()
    freq, co = sc.statistics(sc.make_scenes(items, labels, 3000, seed=0))
    assert co.shape == (10, 10) and np.allclose(co, co.T) and (np.diag(co) == 0).all()
    # within-theme pairs (T-shirt / trousers, coat / ankle boot) far more often than across (T-shirt / coat)
    assert co[0, 1] > 4 * co[0, 4] and co[4, 9] > 4 * co[4, 0]
    assert freq[1] > freq[6]                                  # trousers are in two themes, shirt in one


def test_caption_where_and_mentions_round_trip():
    s = sc.Scene(np.zeros((112, 112), np.uint8), [(9, 0), (0, 2), (6, 3)], "x")
    text = sc.caption(s)
    assert text == " An ankle boot at the top left, a T-shirt at the bottom left and a shirt at the bottom right."
    assert sc.mentioned(text) == [9, 0, 6]                   # "T-shirt" is not also a "shirt"
    assert sc.where_answer(s, 1) == " Nothing" and sc.where_answer(s, 0) == " An ankle boot"
    assert sc.mentioned("Two boots and a pair of trousers on top") == [9, 1]


def test_pope_negatives_follow_their_strategy():
    items, labels = _pool()
    train = sc.make_scenes(items, labels, 2000, seed=0)
    freq, co = sc.statistics(train)
    tests = sc.make_scenes(items, labels, 60, seed=1)
    q = sc.pope_questions(tests, freq, co, seed=2)
    by_pop = sorted(range(10), key=lambda c: (-freq[c], c))
    for split in ("random", "popular", "adversarial"):
        rows = q[split]
        assert len(rows) == 120 and sum(r["answer"] == "yes" for r in rows) == 60
        for r in rows:
            assert (r["cls"] in tests[r["scene"]].classes) == (r["answer"] == "yes")
    assert [r["cls"] for r in q["random"] if r["answer"] == "yes"] == [r["cls"] for r in q["adversarial"] if r["answer"] == "yes"]
    for r in q["popular"]:
        if r["answer"] == "no":
            assert r["cls"] == next(c for c in by_pop if c not in tests[r["scene"]].classes)
    for r in q["adversarial"]:
        if r["answer"] == "no":
            present = tests[r["scene"]].classes
            score = lambda c: sum(co[p, c] for p in present)  # noqa: E731
            assert score(r["cls"]) == max(score(c) for c in range(10) if c not in present)
    adv = np.mean([sum(co[p, r["cls"]] for p in tests[r["scene"]].classes) for r in q["adversarial"] if r["answer"] == "no"])
    rnd = np.mean([sum(co[p, r["cls"]] for p in tests[r["scene"]].classes) for r in q["random"] if r["answer"] == "no"])
    assert adv > 2 * rnd


def test_chair_counts():
    s1 = sc.Scene(np.zeros((1, 1), np.uint8), [(7, 0), (8, 1)], "")
    s2 = sc.Scene(np.zeros((1, 1), np.uint8), [(3, 0)], "")
    m = sc.chair([" A sneaker at the top left and a coat at the top right.", " A dress."], [s1, s2])
    assert (m["mentions"], m["hallucinated"], m["captions_with_hallucination"]) == (3, 1, 1)
    assert m["chair_i"] == pytest.approx(1 / 3) and m["chair_s"] == 0.5 and m["recall"] == pytest.approx(2 / 3)


def _report_module():
    path = Path(__file__).resolve().parent.parent / "studies" / "vlm2" / "report.py"
    spec = importlib.util.spec_from_file_location("vlm2_report", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vlm2_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_pope_metrics_on_known_counts():
    rep = _report_module()
    # 10 yes questions (8 answered yes), 10 no questions (3 answered yes)
    rows = ([{"answer": "yes", "pred": "yes"}] * 8 + [{"answer": "yes", "pred": "no"}] * 2
            + [{"answer": "no", "pred": "yes"}] * 3 + [{"answer": "no", "pred": "no"}] * 7)
    m = rep.pope_metrics(rows)
    assert m["accuracy"]["value"] == 0.75 and m["precision"]["value"] == 8 / 11 and m["recall"]["value"] == 0.8
    assert m["f1"]["value"] == pytest.approx(2 * 8 / (16 + 3 + 2)) and m["yes_ratio"]["value"] == 0.55
    assert m["accuracy"]["low"] < 0.75 < m["accuracy"]["high"] and m["f1"]["low"] <= m["f1"]["value"] <= m["f1"]["high"]


def test_studio_vlm2_without_its_projector_names_the_fix(monkeypatch, tmp_path):
    import probe
    from probe.errors import ProbeError
    from probe.models import studio_vlm

    monkeypatch.setattr(studio_vlm, "PROJECTOR_ASSET_V2", tmp_path / "studio_vlm2_projector.safetensors")
    with pytest.raises(ProbeError, match="studies/vlm2/README.md"):
        probe.load("studio-vlm2", device="cpu")


def test_backgrounds_keep_items_objects_and_fill_only_the_empty_canvas():
    from probe.data import photos as ph

    items, labels = _pool()
    scenes = sc.make_scenes(items, labels, 40, seed=3)
    rng = np.random.default_rng(0)
    photos = {"a.png": rng.integers(0, 256, (240, 300)).astype(np.uint8),
              "b.png": np.full((224, 224), 200, np.uint8)}
    out = ph.with_backgrounds(scenes, photos, p=0.5, seed=7, contrast=(0.3, 0.7))
    assert [s.objects for s in out] == [s.objects for s in scenes]               # text and questions unchanged
    got = [s.background for s in out]
    assert 5 < sum(b is not None for b in got) < 35 and set(got) - {None} <= set(photos)
    for s, o in zip(scenes, out):
        item = s.image > 0
        assert np.array_equal(o.image[item], s.image[item])                      # every item pixel kept
        if o.background is None:
            assert o.image is s.image
        elif o.background == "b.png":                                             # flat photo: 200 * U(0.3, 0.7)
            vals = np.unique(o.image[~item])
            assert len(vals) == 1 and 60 <= vals[0] <= 140
    again = ph.with_backgrounds(scenes, photos, p=0.5, seed=7, contrast=(0.3, 0.7))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(out, again))
    assert ph.with_backgrounds(scenes, photos, p=0.0, seed=7)[0] is scenes[0]


def test_train_and_test_photos_are_disjoint_and_named_sources():
    from probe.data import photos as ph

    assert not set(ph.TRAIN_PHOTOS) & set(ph.TEST_PHOTOS)
    assert len(ph.TRAIN_PHOTOS) == len(ph.TEST_PHOTOS) == 18
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        ph.load_photos("test", folder=Path("/nonexistent"))


def test_answer_loss_weighs_items_equally_when_asked():
    import torch

    from studies.vlm2.train import answer_loss

    # item 0: a caption of 4 tokens with loss 1 each; item 1: a yes/no answer (+ eos) with losses 3 and 1
    tok = torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 1.0])
    rows = torch.tensor([0, 0, 0, 0, 1, 1])
    assert float(answer_loss(tok, rows, 2, per_item=False)) == pytest.approx(8 / 6)
    assert float(answer_loss(tok, rows, 2, per_item=True)) == pytest.approx((1.0 + 2.0) / 2)


def test_carried_tower_rounding_is_small_and_invertible():
    import torch

    from studies.vlm2.prepare_carry import dequantize_state, quantize_state

    g = torch.Generator().manual_seed(0)
    sd = {"big.weight": torch.randn(384, 1536, generator=g) * 0.05, "ln.weight": torch.rand(384, generator=g)}
    q = quantize_state(sd)
    assert q["big.weight.q8"].dtype == torch.int8 and q["big.weight.q8scale"].shape == (384, 1536 // 64)
    assert q["ln.weight"].dtype == torch.float16
    back = dequantize_state(q)
    assert set(back) == set(sd)
    err = (back["big.weight"] - sd["big.weight"]).abs()
    step = sd["big.weight"].reshape(384, -1, 64).abs().amax(-1) / 127                   # [384, 24] quantisation step
    assert (err.reshape(384, -1, 64) <= step[..., None] / 2 + 1e-6).all()
    assert torch.allclose(back["ln.weight"], sd["ln.weight"], atol=1e-3)
