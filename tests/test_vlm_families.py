"""The VLM families users bring (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2.5-VL), end to end.

PLUMBING TESTS WITH RANDOM WEIGHTS: each family is a tiny random-init checkpoint of the exact
transformers class and layout (``tests/vlm_families.py``), saved to a folder and loaded with
``probe.load(folder)`` -- the path a user's real checkpoint takes. They prove the layout runs
through the detectors, interventions, CLI and app, and that image spans / sinks / VHD land where
planted facts put them; they say nothing about what the real models do.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vlm_families as vf
from probe.detect import vision as vd
from probe.errors import ProbeError

FAMILIES = vf.FAMILIES
# LLaVA-1.5 at the real geometry carries 576 image tokens: its heavier cases run in `make test` but not `-m "not slow"`
HEAVY = [pytest.param(f, marks=pytest.mark.slow) if f == "llava-1.5" else f for f in FAMILIES]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_families")
    return {fam: vf.write(fam, root / fam) for fam in FAMILIES}


@pytest.fixture(scope="module")
def handles(folders):
    import probe

    return {fam: probe.load(str(folders[fam]), device="cpu") for fam in FAMILIES}


def _encode(h, fam, n=2):
    texts = [vd.with_image_token(h, q) for q in ("what is this ?", "describe the picture a red dog")[:n]]
    return vd.encode_images(h, texts, vf.images(fam, n))


def _runs(ids, token_id):
    """Contiguous runs of token_id in one row, computed independently of probe's helper."""
    pos = (ids == token_id).nonzero().flatten().tolist()
    runs, start = [], None
    for i, p in enumerate(pos):
        if start is None:
            start = p
        if i + 1 == len(pos) or pos[i + 1] != p + 1:
            runs.append((start, p + 1))
            start = None
    return runs


@pytest.mark.parametrize("fam", FAMILIES)
def test_loads_as_the_exact_class_with_the_processor_from_local_files(handles, fam):
    from probe.models.vlm_layouts import family_of

    h = handles[fam]
    family = family_of(h.model)
    assert family is not None and family.name == fam and type(h.model).__name__ == family.hf_class
    assert h.image_token_id == h.processor.image_token_id
    assert h.n_layers == 4 and h.n_heads == 4 and h.n_kv_heads == 2


@pytest.mark.parametrize("fam", FAMILIES)
def test_image_spans_match_the_processor_and_the_features(handles, fam):
    h = handles[fam]
    enc = _encode(h, fam)                                       # 2 rows of different lengths, left padded
    ids = enc["input_ids"]
    spans = h.image_spans(ids)
    for b in range(2):
        assert spans[b] == _runs(ids[b], h.processor.image_token_id) and len(spans[b]) == 1
    pads = (enc["attention_mask"] == 0).sum(-1)
    (s0, e0), (s1, e1) = spans[0][0], spans[1][0]
    assert e0 - s0 == e1 - s1
    n = e0 - s0
    if fam == "llava-1.5":
        assert n == 576                                         # 336 px / 14 = 24 x 24, CLS dropped
    elif fam == "qwen2.5-vl":
        thw = enc["image_grid_thw"][0]
        assert n == int(thw.prod()) // 4                        # 2x2 merged patches
        cfg = h.model.config
        assert int(ids[0, s0 - 1]) == cfg.vision_start_token_id and int(ids[0, e0]) == cfg.vision_end_token_id
        assert s0 - int(pads[0]) == 1                           # inline after <|vision_start|>
    else:                                                       # anyres: base tile + tiles + newlines
        assert n > 4
    # the projected image features land exactly on the span (and nowhere else)
    seen = {}
    lm = h.model.model.language_model
    hook = lm.register_forward_pre_hook(lambda m, a, k: seen.update(embeds=k["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            h.model(**enc, use_cache=False)
    finally:
        hook.remove()
    text_embeds = lm.embed_tokens(ids)                          # [B, T, D]
    differs = (seen["embeds"] - text_embeds).abs().amax(-1) > 0  # [B, T]
    for b, ((s, e),) in enumerate(spans):
        expect = torch.zeros(ids.shape[1], dtype=torch.bool)
        expect[s:e] = True
        assert torch.equal(differs[b], expect)


@pytest.mark.parametrize("fam", FAMILIES)
def test_vision_tower_attention_falls_through_the_seam(handles, fam):
    import probe
    from probe.capture.seam import ATTN_NAME

    h = handles[fam]
    enc = _encode(h, fam, 1)
    image = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    vcfg = h.model.config.vision_config
    with torch.no_grad():
        before = h.model.model.get_image_features(**image).pooler_output
        base = h.model(**enc, use_cache=False).logits
        with probe.capture(h, stats=("received",), hidden="summary") as rec:
            assert vcfg._attn_implementation == ATTN_NAME      # the tower really calls the seam ...
            inside = h.model.model.get_image_features(**image).pooler_output
            logits = h.model(**enc, use_cache=False).logits
    for a, b in zip(before, inside):
        assert torch.equal(a, b)                                # ... and gets SDPA's result untouched
    assert torch.allclose(logits, base, atol=1e-4)
    for layer in range(h.n_layers):                            # statistics for the text decoder only
        assert rec.layer(layer, call=-1).T == enc["input_ids"].shape[1]
    with pytest.raises(ProbeError):
        rec.layer(h.n_layers, call=-1)
    assert vcfg._attn_implementation != ATTN_NAME


@pytest.fixture(scope="module")
def detections(handles):
    return {fam: vd.run(handles[fam], list(vf.QUESTIONS), images=vf.images(fam, 2), tau=vf.TAU, batch_size=4)
            for fam in FAMILIES}


@pytest.mark.parametrize("fam", HEAVY)
def test_visual_sinks_and_vhd_find_the_planted_facts(handles, detections, fam):
    out = detections[fam]
    assert out.settings["sink_dims"] == [vf.D_SINK]
    table = out.tables["visual_tokens"]
    sinks = table[table.is_visual_sink]
    planted = vf.planted(fam)
    if fam in ("llava-1.5", "qwen2.5-vl"):                     # one grid: exactly the planted token
        assert set(sinks.image_pos) == {planted}
        assert len(sinks) == 4 * 2                             # 2 questions x 2 images x layers 2, 3
        side = 24 if fam == "llava-1.5" else 4
        assert (sinks.patch_row == planted // side).all() and (sinks.patch_col == planted % side).all()
    else:                                                      # base tile first, then anyres tiles
        assert planted in set(sinks.image_pos)
        assert sinks.groupby(["item", "layer"]).size().min() >= 1
    assert sinks.phi.min() > vf.TAU > table[~table.is_visual_sink].phi.max()
    vhd = out.heads.set_index(["layer", "head"]).vhd
    assert vhd[(0, 2)] < 1e-5 and vhd[(0, 3)] < 1e-5            # layer 0, KV group 1 cannot see the image
    assert vhd[(0, 0)] > 1e-3 and vhd[(0, 1)] > 1e-3
    if fam == "llava-1.5":
        assert table.vision_norm.notna().all()
    first = table[(table.item == 0) & (table.layer == 2)]
    offset = 1 if fam == "qwen2.5-vl" else 0                   # after <|vision_start|>
    assert first.position.tolist() == [offset + k for k in range(len(first))]


@pytest.mark.parametrize("fam", HEAVY)
def test_var_and_vhr_run_and_leave_no_trace(handles, fam):
    from interventions import VAR, VHR, intervene, parse_spec

    h = handles[fam]
    enc = _encode(h, fam)
    with torch.no_grad():
        before = h.model(**enc, use_cache=False).logits
    var = VAR(tau=vf.TAU, log_selection=True)
    with torch.no_grad(), intervene(h, var):
        during = h.model(**enc, use_cache=False).logits
    spans = h.image_spans(enc["input_ids"])
    pads = (enc["attention_mask"] == 0).sum(-1).tolist()
    assert var.spans == [(s[0][0] - p, s[0][1] - p) for s, p in zip(spans, pads)]
    planted = vf.planted(fam)
    for b, (s, _) in enumerate(var.spans):
        assert s + planted in var.found_sinks[2][b]            # the planted visual sink, as a prompt position
    assert (during - before).abs().max() > 1e-5 and var.selection_table().eligible.sum() > 0
    one = vd.encode_images(h, [vd.with_image_token(h, "what is this ?")], vf.images(fam, 1))
    vhr = VHR(alpha=2.0, layers=[1, 2, 3])
    heads = vhr.select(h, one)
    assert heads and {l for l, _ in heads} <= {1, 2, 3} and vhr.vhd[0].abs().sum() == 0
    auto = parse_spec("vhr:alpha=2,layers=1-3")                # selection at generate's prefill
    with torch.no_grad(), intervene(h, auto):
        gen = h.model.generate(**one, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert auto.heads == heads and gen.shape[1] == one["input_ids"].shape[1] + 2
    with torch.no_grad(), intervene(h, VAR(tau=vf.TAU)):
        h.model.generate(**one, max_new_tokens=2, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(h.model(**enc, use_cache=False).logits, before)


@pytest.mark.slow
def test_cli_scan_generate_support_and_app_tables(folders, tmp_path, monkeypatch, capsys):
    """The commands a user runs on their checkpoint folder (Qwen2.5-VL: inline tokens, M-RoPE, no torchvision)."""
    from PIL import Image

    from probe.cli import main
    from probe.report import read_report

    folder = folders["qwen2.5-vl"]
    prompts = tmp_path / "p.txt"
    prompts.write_text("what is this ?\n\ndescribe the picture\n")
    image = tmp_path / "x.png"
    Image.fromarray(vf.images("qwen2.5-vl", 1)[0]).save(image)
    out = tmp_path / "r"
    main(["scan", "--model", str(folder), "--detect", "vhd,visual-sinks", "--prompts", str(prompts), "--out", str(out),
          "--opt", f"tau={vf.TAU}", "--opt", "n_fashion=1", "--opt", "photos=", "--device", "cpu"])
    capsys.readouterr()
    rep = read_report(out)
    assert {"vhd", "visual_sink_mass"} <= set(rep.heads.columns)
    # one Fashion-MNIST image, 28 px -> 56 px (min_pixels) -> 2x2 merged tokens; 2 prompts x layers 2, 3
    assert len(rep.tables["visual_tokens"]) == 2 * 2 * 4
    for spec in (f"var:tau={vf.TAU}", "vhr:layers=1-3"):
        main(["generate", "--model", str(folder), "-i", spec, "--image", str(image), "--json", "--max-new-tokens", "2",
              "what is this ?"])
        res = json.loads(capsys.readouterr().out)
        assert res["interventions"] and "baseline" in res
    main(["support", str(folder), "--device", "cpu"])
    text = capsys.readouterr().out
    assert "qwen2.5-vl" in text and "Qwen2_5_VLForConditionalGeneration" in text and "random" in text

    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    for key, value in (("PROBE_APP_REPORT", out), ("PROBE_APP_REPORTS_ROOT", tmp_path)):
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("PROBE_APP_MODEL", raising=False)
    monkeypatch.setattr("sys.argv", ["main.py"])
    from pathlib import Path

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    heads = [str(s.value) for s in at.subheader]
    assert "Top heads by vhd" in heads and "visual_tokens.parquet" in heads


def test_probe_support_families_lists_each_family(capsys):
    from probe.cli import main

    main(["support", "--families"])
    text = capsys.readouterr().out
    for fam in ("llava-1.5", "llava-next", "llava-onevision", "qwen2.5-vl"):
        assert fam in text
    assert "random" in text


def test_image_only_processor_keeps_the_stock_behaviour(folders):
    """Without torchvision AutoProcessor cannot build Qwen2.5-VL's processor; the fallback is the same class."""
    import importlib.util

    from transformers import Qwen2_5_VLProcessor

    from probe.models.processors import load_processor

    proc = load_processor(str(folders["qwen2.5-vl"]))
    assert isinstance(proc, Qwen2_5_VLProcessor) and type(proc).__name__ == "Qwen2_5_VLProcessor"
    if importlib.util.find_spec("torchvision") is None:
        assert getattr(proc, "video_processor", None) is None
    enc = proc(text=["<|vision_start|><|image_pad|><|vision_end|> what"], images=vf.images("qwen2.5-vl", 1),
               return_tensors="pt")
    assert int((enc["input_ids"] == proc.image_token_id).sum()) == int(enc["image_grid_thw"].prod()) // 4
    assert np.isfinite(enc["pixel_values"].numpy()).all()


def test_qwen_grid_of_a_non_square_image(handles):
    """Qwen2.5-VL keeps the aspect ratio: a 112 x 56 image is 4 x 2 merged tokens; the planted white
    block at merged row 2, column 1 must come out as the visual sink at that grid cell."""
    h = handles["qwen2.5-vl"]
    im = np.zeros((112, 56, 3), dtype=np.uint8)
    im[56:84, 28:56] = 255
    out = vd.run_visual_sinks(h, ["what is this ?"], images=[im], tau=vf.TAU)
    table = out.tables["visual_tokens"]
    assert len(table) == 2 * 8 and table.patch_row.max() == 3 and table.patch_col.max() == 1
    sinks = table[table.is_visual_sink]
    assert set(zip(sinks.patch_row, sinks.patch_col)) == {(2, 1)} and set(sinks.image_pos) == {5}
    fig = vd.visual_sink_figure(table, 0)
    assert np.asarray(fig.data[0].z).shape == (4, 2)
