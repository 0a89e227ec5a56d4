"""``probe.load``: turn an alias, a local folder, a .gguf file or a cached hub id into a Handle."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from ..errors import ProbeError
from .aliases import ALIASES, DEFAULT_MODEL, VLM_ALIASES, Alias, alias_gguf_path, require_vision_extra  # noqa: F401  (re-exported)
from .cache import cache_root, file_sha256
from .facts import unknown_model_error
from .handle import Handle


def _default_dtype(device: str) -> torch.dtype:
    # bf16 is ~5x slower than fp32 on AVX2 CPUs: fp32 on CPU, bf16 on GPU.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _atomic_save(model, tokenizer, target: Path) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def load_gguf(path: str | Path, dtype: torch.dtype, device: str, attn: str) -> tuple:
    """Load a GGUF through transformers, caching the dequantized weights as safetensors.

    First load: parse + dequantize the GGUF (tens of seconds), save fp32 safetensors under the
    cache. Later loads read the safetensors (seconds). Returns (model, tokenizer, sha256).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    digest = file_sha256(path)
    cached = cache_root() / "models" / f"{path.stem}-{digest[:12]}"
    if not (cached / "config.json").exists():
        if importlib.util.find_spec("gguf") is None:
            raise ProbeError("reading .gguf files needs the gguf package", "pip install gguf")
        print(f"probe: first load of {path.name}: converting it to safetensors under {cached} (once; tens of seconds)",
              file=sys.stderr, flush=True)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        _atomic_save(model, tok, cached)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, attn_implementation=attn)
    return model.to(device).eval(), tok, digest


def _load_folder_or_hub(name: str, dtype: torch.dtype, device: str, attn: str, local_only: bool, **hf_kwargs):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from .processors import load_processor

    config = AutoConfig.from_pretrained(name, local_files_only=local_only)
    is_vlm = hasattr(config, "vision_config") and hasattr(config, "text_config")
    cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = cls.from_pretrained(name, dtype=dtype, attn_implementation=attn, local_files_only=local_only, **hf_kwargs)
    if "device_map" not in hf_kwargs:
        model = model.to(device)
    processor = load_processor(name, local_only) if is_vlm else None
    tok = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    return model.eval(), tok, processor


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    attn_implementation: str = "sdpa",
    **hf_kwargs,
) -> Handle:
    """Load a model for probing.

    Args:
        name_or_path: an embedded alias ("smollm2", "gemma3-270m", "studio-vlm"), a local Hugging
            Face model folder, a ``.gguf`` file, or a hub id already in the local HF cache.
        device: "cpu", "cuda", "cuda:1", ... (default: cuda when available, else cpu).
        dtype: weights dtype (default fp32 on CPU, bf16 on GPU).
        attn_implementation: the model's normal attention ("sdpa" or "eager"); capture and
            interventions switch to probe's seam only inside their context managers.
        **hf_kwargs: passed to ``from_pretrained`` for folders / hub ids (e.g. ``device_map="auto"``).
    Returns:
        Handle.
    Raises:
        ProbeError: unknown model, missing package, nothing cached offline, unsupported architecture.
    """
    t0 = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or _default_dtype(device)
    name = str(name_or_path)
    processor = None
    if name in VLM_ALIASES:
        from .studio_vlm import PROJECTOR_ASSET_V2, build_studio_vlm, projector_image_size

        require_vision_extra(name)
        v2 = name == "studio-vlm2"
        if v2 and not PROJECTOR_ASSET_V2.is_file():
            raise ProbeError(f"studio-vlm2's projector weights ({PROJECTOR_ASSET_V2.name}) are not in this checkout",
                             "train them: studies/vlm2/README.md (python -m studies.vlm2.train --out DIR, then copy "
                             "DIR/studio_vlm2_projector.safetensors to probe/assets/)")
        lm = load("smollm2", device=device, dtype=dtype, attn_implementation=attn_implementation)
        model, processor = build_studio_vlm(lm.model, lm.tokenizer, **(
            dict(projector_path=PROJECTOR_ASSET_V2, image_size=projector_image_size(PROJECTOR_ASSET_V2)) if v2 else {}))
        handle = Handle(model.to(device).eval(), processor.tokenizer, name, "alias", lm.file_hash, processor=processor)
    elif name in ALIASES:
        model, tok, digest = load_gguf(alias_gguf_path(name), dtype, device, attn_implementation)
        handle = Handle(model, tok, name, "alias", digest, prepend_bos=ALIASES[name].prepend_bos)
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise ProbeError(f"GGUF file {name} does not exist", "check the path")
        model, tok, digest = load_gguf(name, dtype, device, attn_implementation)
        handle = Handle(model, tok, name, "gguf", digest)
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ProbeError(f"folder {name} has no config.json", "point at a Hugging Face model folder (config.json + weights)")
        try:
            model, tok, processor = _load_folder_or_hub(name, dtype, device, attn_implementation, True, **hf_kwargs)
        except OSError as err:
            raise ProbeError(f"cannot load the model in {name}: {str(err).splitlines()[0][:160]}",
                             "the folder needs config.json plus weights (model.safetensors) and a tokenizer") from err
        except (ValueError, KeyError) as err:
            raise ProbeError(f"unsupported architecture in {name}: {str(err).splitlines()[0][:160]}",
                             "probe supports causal decoder LMs (Llama, Gemma, Qwen, Mistral, ...) and LLaVA-style VLMs") from err
        handle = Handle(model, tok, name, "dir", None, processor=processor)
    else:
        try:
            model, tok, processor = _load_folder_or_hub(name, dtype, device, attn_implementation, True, **hf_kwargs)
        except (OSError, ValueError) as err:
            raise unknown_model_error(name) from err
        handle = Handle(model, tok, name, "hub", None, processor=processor)
    handle.attention_modules()  # raises ProbeError for unsupported architectures
    handle.load_seconds = time.perf_counter() - t0
    return handle
