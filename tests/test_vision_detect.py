"""Vision detectors (visual sinks, VHD) and VLM interventions (VAR, VHR) on a tiny random LLaVA.

The model is the LLaVA-1.5 layout (CLIP vision tower + Llama + MLP projector, 16 image tokens on a
4x4 grid) with things planted through its weights:
- a massive activation in LM dim D_SINK on the first text token (embedding row of "what") -> the
  sink dim the detectors must find by themselves;
- the same dim made massive on image token PLANTED only: CLIP's position embedding of that patch
  carries a large value in vision dim U (nothing else does), the projector turns U into a huge
  D_SINK component (GELU far below its knee for every other patch);
- layer 0, KV group 1 (query heads 2, 3): value weights zero, value bias not -> those heads output
  the bias whatever they attend to, so their output cannot depend on the image (VHD must be 0).
tau is 6 here: phi <= sqrt(hidden) = 8 for this 64-dim LM (20 needs D > 400).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.detect import vision as vd
from probe.models import Handle

IMAGE = "<image>"
D_SINK, U, PLANTED, TAU = 11, 0, 5, 6.0
WORDS = ["<pad>", "<unk>", IMAGE, "what", "is", "this", "?", "answer", ":", "a", "cat", "dog", "big", "red",
         "describe", "the", "picture", "item"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tok


@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


def build_tiny() -> Handle:
    """The planted tiny LLaVA (see the module doc) as a probe Handle."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    tok = _tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=56, patch_size=14)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, attention_bias=True)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                      image_token_index=tok.convert_tokens_to_ids(IMAGE), image_seq_length=16,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        emb = model.model.vision_tower.embeddings
        emb.patch_embedding.weight[U] = 0.0                       # vision dim U: no image content
        emb.position_embedding.weight[:, U] = 0.0
        emb.position_embedding.weight[1 + PLANTED, U] = 100.0     # ... except at patch PLANTED
        proj = model.model.multi_modal_projector
        proj.linear_1.weight[0] = 0.0
        proj.linear_1.weight[0, U] = 3.0
        proj.linear_1.bias[0] = -10.0                             # GELU(~7) on PLANTED, ~0 elsewhere
        proj.linear_2.weight[:, 0] = 0.0
        proj.linear_2.weight[D_SINK, 0] = 300.0
        lm = model.model.language_model
        lm.embed_tokens.weight[tok.convert_tokens_to_ids("what"), D_SINK] = 50.0
        v = lm.layers[0].self_attn.v_proj
        hd = text.hidden_size // text.num_attention_heads
        v.weight[hd:2 * hd] = 0.0                                 # KV group 1 -> query heads 2, 3
        v.bias[hd:2 * hd] = torch.linspace(-1, 1, hd)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          image_token=IMAGE, num_additional_image_tokens=1)
    return Handle(model, tok, "tiny-llava", "object", processor=proc)


def _images(n, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, size=(n, 56, 56, 3), dtype=np.uint8))


PROMPTS = ["what is this ? answer :", "describe the picture", "what is a big red item ?"]
SINK_TEXTS = ("what is this ?", "what is the picture", "what is a cat")
OPTS = dict(images=_images(2), tau=TAU, sink_dim_texts=SINK_TEXTS)


def test_sink_dim_found_from_first_token(tiny):
    dims, frame = vd.find_sink_dims(tiny, SINK_TEXTS)
    assert dims == [D_SINK]
    assert frame[frame.sink_dim].dim.unique().tolist() == [D_SINK]


@pytest.fixture(scope="module")
def full_run(tiny):
    """Both detectors over 3 prompts x 2 images in batches of 5 (rows of different lengths)."""
    return vd.run(tiny, PROMPTS, batch_size=5, **OPTS)


def test_visual_sink_is_the_planted_token_in_every_layer(full_run):
    out = full_run
    table = out.tables["visual_tokens"]
    assert out.settings["sink_dims"] == [D_SINK]
    assert len(table) == 3 * 2 * 2 * 16                       # prompts x images x layers 2..3 x image tokens
    sinks = table[table.is_visual_sink]
    assert set(sinks.image_pos) == {PLANTED}
    assert len(sinks) == 3 * 2 * 2                            # every item, every layer >= 2
    assert (sinks.patch_row == PLANTED // 4).all() and (sinks.patch_col == PLANTED % 4).all()
    others = table[~table.is_visual_sink]
    assert sinks.phi.min() > TAU > others.phi.max()
    # one dominant dim: phi -> sqrt(hidden size) = 8, the bound it can only approach (checks the rms normalisation)
    assert (sinks.phi > 7.5).all()
    assert out.summary["visual_sinks_by_layer"] == {2: 6, 3: 6}
    heads = out.heads
    assert {"vhd", "image_attention_mass", "visual_sink_mass", "image_centric_rate"} <= set(heads.columns)
    assert (heads.visual_sink_mass <= heads.image_attention_mass + 1e-6).all()
    assert (heads[heads.layer < 2].visual_sink_mass == 0).all()   # sinks only counted from layer 2
    fig = vd.visual_sink_figure(table, 0, OPTS["images"][0])      # image | sink layers | vision norms
    z = np.asarray(fig.data[1].z)                                  # [4, 4] layers with phi > tau per patch
    assert z[PLANTED // 4, PLANTED % 4] == 2 and z.sum() == 2
    norms = np.asarray(fig.data[2].z)                              # the vision tower's own token norms
    assert norms.shape == (4, 4) and (norms > 0).all()            # (CLIP's pre-LayerNorm evens the norms out)


def test_vhd_zero_for_a_head_blind_to_the_image(tiny, full_run):
    out = vd.run_vhd(tiny, PROMPTS[:1], **OPTS)
    for heads in (out.heads, full_run.heads):
        h = heads.set_index(["layer", "head"]).vhd
        assert h[(0, 2)] < 1e-5 and h[(0, 3)] < 1e-5           # constant values: output = bias
        assert h[(0, 0)] > 1e-3 and h[(0, 1)] > 1e-3
        assert (h.loc[1:] > 1e-4).all()                       # later layers all see the image
    assert "visual_tokens" not in out.tables and "image_attention_mass" not in out.heads


def test_batched_spans_give_the_same_numbers(tiny, full_run):
    one = vd.run(tiny, PROMPTS, batch_size=1, **OPTS)
    many = full_run                                           # rows of different lengths, left padded
    a, b = one.tables["visual_tokens"], many.tables["visual_tokens"]
    assert a[["item", "layer", "image_pos", "position"]].equals(b[["item", "layer", "image_pos", "position"]])
    assert np.allclose(a.phi, b.phi, atol=1e-3) and (a.is_visual_sink == b.is_visual_sink).all()
    assert np.allclose(one.heads.vhd, many.heads.vhd, atol=1e-4, rtol=1e-3)
    first = a[(a.item == 0) & (a.layer == 2)]
    assert first.position.tolist() == list(range(16))         # image first: positions 0..15 of the prompt
    enc = vd.encode_images(tiny, [vd.with_image_token(tiny, p) for p in PROMPTS], _images(3))
    spans = vd.image_span_tensor(tiny, enc["input_ids"])      # [3, 1, 2]
    pads = (enc["attention_mask"] == 0).sum(-1)
    assert (spans[:, 0, 0] == pads).all() and (spans[:, 0, 1] - spans[:, 0, 0] == 16).all()


def test_vhr_rule():
    vhd = torch.tensor([[1.0, 2.0, 3.0, 4.0, 50.0], [5.0, 1.0, 1.0, 1.0, 1.0]])   # [2 layers, 5 heads]
    ta = torch.tensor([[1.0, 1.0, 1.0, 1.0, 90.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    sel = vd.vhr_select(vhd, ta)
    assert sel[0].tolist() == [False, False, True, True, False]    # head 4 is an outlier (VHD and TA high)
    assert sel[1].tolist() == [True, False, False, False, False]   # high VHD alone is not an outlier
    assert vd.vhr_select(vhd, ta, outlier_removal=False)[0].tolist() == [False, False, False, True, True]
    assert vd.vhr_layers(32) == [1, *range(18, 32)] and vd.vhr_layers(30) == [1, *range(17, 30)]


def _logits(handle, enc):
    with torch.no_grad():
        return handle.model(**enc, use_cache=False).logits


def test_var_and_vhr_change_the_answer_and_leave_no_trace(tiny):
    from interventions import VAR, VHR, intervene, parse_spec

    enc = vd.encode_images(tiny, [vd.with_image_token(tiny, p) for p in PROMPTS[:2]], _images(2))
    before = _logits(tiny, enc)
    var = VAR(tau=TAU, sink_dims=[D_SINK], log_selection=True)
    with intervene(tiny, var):
        during = _logits(tiny, enc)
    # sinks per row in prompt positions: the planted visual sink, and in row 0 the text sink "what" (16)
    assert var.found_sinks[2] == [[PLANTED, 16], [PLANTED]]
    # the selection log: some (layer, head, query) rows were edited, and logging does not change the output
    table = var.selection_table()
    assert 0 < var.selected_fraction <= 1 and table.selected.sum() > 0 and (table.selected <= table.eligible).all()
    with intervene(tiny, VAR(tau=TAU, sink_dims=[D_SINK])):
        assert torch.allclose(_logits(tiny, enc), during, atol=1e-6)
    assert var.spans == [(0, 16), (0, 16)]
    assert (during - before).abs().max() > 1e-4
    assert torch.equal(_logits(tiny, enc), before)

    one = {k: v[:1] for k, v in enc.items()}
    vhr = VHR(alpha=2.0, layers=[1, 2, 3])
    heads = vhr.select(tiny, one)
    assert heads and all(l in (1, 2, 3) for l, _ in heads)
    assert all(len([h for l2, h in heads if l2 == l]) <= 2 for l in (1, 2, 3))   # above median of 4 heads
    assert vhr.vhd[0].abs().sum() == 0 and vhr.vhd[1:].gt(0).any()
    with intervene(tiny, vhr):
        scaled = _logits(tiny, one)
    assert (scaled - before[:1]).abs().max() > 1e-4
    assert torch.equal(_logits(tiny, enc), before)

    auto = parse_spec("vhr:alpha=2,layers=1-3")               # selection at the prefill of generate
    with intervene(tiny, auto):
        gen = tiny.model.generate(**one, max_new_tokens=3, do_sample=False)
    assert auto.heads == heads and gen.shape[1] == one["input_ids"].shape[1] + 3
    assert torch.equal(_logits(tiny, enc), before)
    assert repr(parse_spec("var:preset=paper")) .startswith("VAR(keep=0.4 [transfer=0.6], rho=0.5")


def test_var_needs_an_image(tiny):
    from interventions import VAR, intervene
    from probe.errors import ProbeError

    enc = tiny.encode(["what is this ?"])
    with pytest.raises(ProbeError, match="without an image"):
        with intervene(tiny, VAR(tau=TAU, sink_dims=[D_SINK])):
            _logits(tiny, enc)
    with pytest.raises(ProbeError, match="not a vision-language model"):
        vd.run(Handle(tiny.model, tiny.tokenizer, "x", "object"), PROMPTS)


def test_var_on_a_repeated_prompt_cache_matches_full_sequences(tiny):
    """class_logprobs scores names on the prompt's KV cache repeated per name; VAR must edit those
    rows exactly as it edits the same tokens in full sequences."""
    from interventions import VAR, intervene
    from probe.models.studio_vlm import class_logprobs

    prompt, names, imgs = f"{IMAGE} what is this ? answer :", ["cat", "big red dog"], _images(2, seed=3)
    var = lambda: VAR(tau=TAU, sink_dims=[D_SINK])  # noqa: E731
    with intervene(tiny, var()):
        cached = class_logprobs(tiny.model, tiny.processor, prompt, names, images=imgs, batch_size=2)  # [2, 2]
    plain = class_logprobs(tiny.model, tiny.processor, prompt, names, images=imgs, batch_size=2)
    tok = tiny.tokenizer
    for i, img in enumerate(imgs):
        for c, name in enumerate(names):
            enc = vd.encode_images(tiny, [prompt + " " + name], [img])
            n = len(tok(" " + name, add_special_tokens=False).input_ids)
            with intervene(tiny, var()):
                lp = _logits(tiny, enc).log_softmax(-1)[0]                             # [T, V]
            ids = enc["input_ids"][0]
            full = sum(lp[len(ids) - n - 1 + j, ids[len(ids) - n + j]] for j in range(n))
            assert abs(cached[i, c].item() - full.item()) < 1e-4
    assert (cached - plain).abs().max() > 1e-4


def test_generate_pair_with_an_image_file(tiny, tmp_path):
    from PIL import Image

    from interventions.commands import generate_pair
    from interventions.spec import parse_spec
    from probe.errors import ProbeError

    path = tmp_path / "x.png"
    Image.fromarray(_images(1, seed=4)[0]).save(path)
    ivs = [parse_spec(f"var:tau={TAU},sink_dims={D_SINK}")]
    res = generate_pair(tiny, "what is this ?", ivs, max_new_tokens=3, image=path)
    assert res["interventions"][0].startswith("VAR(keep=0.6") and res["first_step"]["max_abs_logit_change"] > 0
    with pytest.raises(ProbeError, match="does not exist"):
        generate_pair(tiny, "what is this ?", ivs, max_new_tokens=3, image=tmp_path / "missing.png")
    with pytest.raises(ProbeError, match="needs a vision-language model"):
        generate_pair(Handle(tiny.model, tiny.tokenizer, "x", "object"), "what", ivs, image=path)


def test_scan_merges_vhd_and_visual_sink_columns(tiny, tmp_path):
    from probe.report import read_report
    from probe.scanner import scan

    opts = {"images": _images(2), "tau": TAU, "sink_dim_texts": SINK_TEXTS}
    rep = scan(tiny, PROMPTS[:1], detect=["vhd", "visual-sinks"], out=tmp_path / "r",
               options={"vhd": dict(opts), "visual-sinks": dict(opts)})
    back = read_report(rep.path)
    cols = set(back.tables["heads"].columns)
    assert {"vhd", "vhd_ta", "vhr_rate", "image_attention_mass", "visual_sink_mass", "image_centric_rate"} <= cols
    assert len(back.tables["heads"]) == 4 * 4 and len(back.tables["visual_tokens"]) == 2 * 2 * 16
    assert back.manifest["summary"]["visual-sinks"]["sink_dims"] == [D_SINK]
