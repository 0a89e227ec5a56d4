"""studio-vlm2 loads by alias from the repository's assets, offline, and reproduces its benchmark answers.

The four questions are the baseline POPE items with the largest |log p(Yes) - log p(No)| margins in the
committed per-item file (two "yes", two "no" answers, all answered correctly on the GPU run). Here the
tower uses the fp32 ONNX weights and the projector its fp16 asset copy, so margins may move a little;
the sign must not, and each margin must stay within 0.5 nats of the recorded one.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "vlm2" / "results"


def _questions(k: int = 2) -> list[dict]:
    with gzip.open(RESULTS / "pope_items.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    base = [r for r in rows if r["condition"] == "baseline" and r["pred"] == r["answer"]]
    base.sort(key=lambda r: -abs(r["lp_yes"] - r["lp_no"]))
    return [r for r in base if r["answer"] == "yes"][:k] + [r for r in base if r["answer"] == "no"][:k]


@pytest.fixture(scope="module")
def vlm2():
    import probe

    return probe.load("studio-vlm2", device="cpu")


def _margins(handle, questions) -> np.ndarray:
    from probe.data import scenes as sc
    from probe.detect.vision import encode_images
    from studies.vlm2 import train

    scenes = train.test_scenes(train.pools(None), max(q["scene"] for q in questions) + 1)
    texts = [handle.processor.image_token + sc.EXISTS_PROMPT.format(noun=q["noun"]) for q in questions]
    enc = encode_images(handle, texts, [scenes[q["scene"]].image for q in questions])
    tok = handle.tokenizer
    yes, no = tok(" Yes", add_special_tokens=False).input_ids[0], tok(" No", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        lp = torch.log_softmax(handle.model(**enc, use_cache=False).logits[:, -1].float(), -1)
    return (lp[:, yes] - lp[:, no]).numpy()


def test_studio_vlm2_loads_offline_and_answers_its_benchmark_items(vlm2):
    from probe.models.studio_vlm import PATCH_SIZE, PROJECTOR_ASSET_V2, projector_image_size

    size = projector_image_size(PROJECTOR_ASSET_V2)
    assert vlm2.model.config.image_seq_length == (size // PATCH_SIZE) ** 2
    assert vlm2.processor.image_processor.size["height"] == size
    qs = _questions()
    got = _margins(vlm2, qs)
    want = np.array([q["lp_yes"] - q["lp_no"] for q in qs])
    assert np.all(np.sign(got) == np.sign(want)), (got, want)
    assert np.allclose(got, want, atol=0.5), (got, want)
