"""``model_facts``: a model's layer / head counts from its config alone, before any weights load.

The CLI checks SPECs, head indexes and detector inputs against these facts in well under a second
instead of after a load of many seconds. Sources: a folder's ``config.json``, the header of a
``.gguf`` file (metadata only; tensors are not read), the local Hugging Face cache.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ProbeError


@dataclass(frozen=True)
class ModelFacts:
    """What can be known about a model without loading it."""

    source: str
    n_layers: int
    n_heads: int
    n_kv_heads: Optional[int] = None
    hidden_size: Optional[int] = None
    context_length: Optional[int] = None
    is_vlm: bool = False

    def check_head(self, layer: int, head: int) -> None:
        """ProbeError naming the valid ranges when (layer, head) does not exist (as ``Handle.check_head``)."""
        if not (0 <= layer < self.n_layers) or not (0 <= head < self.n_heads):
            raise ProbeError(f"no head L{layer}H{head} in {self.source}",
                             f"layers are 0..{self.n_layers - 1}, heads 0..{self.n_heads - 1}")

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise ProbeError(f"no layer {layer} in {self.source}", f"layers are 0..{self.n_layers - 1}")


def unknown_model_error(name: str) -> ProbeError:
    from .aliases import KNOWN

    known = ", ".join(KNOWN)
    return ProbeError(
        f"unknown model '{name}': not an embedded alias ({known}), not a local folder or .gguf file, "
        "and not in the local Hugging Face cache (this machine is offline)",
        f"use one of {known}, a local path, or download it where there is internet "
        f"(huggingface-cli download {name}) and copy the cache here",
    )


# ---- GGUF header ------------------------------------------------------------------------------
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: str | Path, wanted: Optional[set] = None) -> dict:
    """The key/value metadata of a GGUF file (v2/v3), stopping once every ``wanted`` key is read."""
    out: dict = {}
    with open(path, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))[0]

        def string() -> str:
            return f.read(read("Q")).decode("utf-8", "replace")

        def value(kind: int):
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == 8:
                return string()
            if kind == 9:
                inner, count = read("I"), read("Q")
                if inner in _SCALARS:       # skip fixed-size arrays without decoding them
                    f.seek(struct.calcsize("<" + _SCALARS[inner]) * count, 1)
                    return None
                items = [value(inner) for _ in range(count)]
                return items if count <= 64 else None
            raise ValueError(f"GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise ProbeError(f"{path} is not a GGUF file (bad magic)", "point at a .gguf file")
        read("I")                                   # version
        read("Q")                                   # tensor count
        for _ in range(read("Q")):
            key = string()
            out[key] = value(read("I"))
            if wanted and wanted <= set(out):
                break
    return out


def _from_gguf(path: Path, source: str, is_vlm: bool = False) -> ModelFacts:
    meta = gguf_metadata(path, None)
    arch = meta.get("general.architecture")
    get = lambda k: meta.get(f"{arch}.{k}")  # noqa: E731
    if get("block_count") is None or get("attention.head_count") is None:
        raise ProbeError(f"{path} has no layer / head counts in its metadata", "use a GGUF written by llama.cpp's converter")
    heads = get("attention.head_count")
    heads = heads[0] if isinstance(heads, list) and heads else heads
    return ModelFacts(source, int(get("block_count")), int(heads), get("attention.head_count_kv"),
                      get("embedding_length"), get("context_length"), is_vlm)


def _from_config(cfg: dict, source: str) -> ModelFacts:
    is_vlm = "vision_config" in cfg and "text_config" in cfg
    text = cfg.get("text_config") or cfg
    try:
        return ModelFacts(source, int(text["num_hidden_layers"]), int(text["num_attention_heads"]),
                          text.get("num_key_value_heads"), text.get("hidden_size"), text.get("max_position_embeddings"),
                          is_vlm)
    except KeyError as err:
        raise ProbeError(f"unsupported architecture in {source}: config has no {err.args[0]}",
                         "probe supports causal decoder LMs (Llama, Gemma, Qwen, Mistral, ...) and LLaVA-style VLMs") from err


def model_facts(name: str) -> ModelFacts:
    """Layer / head counts of ``name`` (alias, folder, .gguf or cached hub id) without loading weights.

    Raises ProbeError for the same unknown / missing models ``probe.load`` refuses.
    """
    from .aliases import ALIASES as ALIAS_NAMES, VLM_ALIASES as VLM_NAMES

    name = str(name)
    if name in VLM_NAMES:
        from .aliases import require_vision_extra

        require_vision_extra(name)
        f = model_facts("smollm2")
        return ModelFacts(name, f.n_layers, f.n_heads, f.n_kv_heads, f.hidden_size, f.context_length, True)
    if name in ALIAS_NAMES:
        from .aliases import alias_gguf_path

        return _from_gguf(alias_gguf_path(name), name)
    if name.endswith(".gguf"):
        if not Path(name).is_file():
            raise ProbeError(f"GGUF file {name} does not exist", "check the path")
        return _from_gguf(Path(name), name)
    if Path(name).is_dir():
        cfg = Path(name) / "config.json"
        if not cfg.exists():
            raise ProbeError(f"folder {name} has no config.json", "point at a Hugging Face model folder (config.json + weights)")
        return _from_config(json.loads(cfg.read_text()), name)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:    # not a valid repo id
        found = None
    if not isinstance(found, str):
        raise unknown_model_error(name)
    return _from_config(json.loads(Path(found).read_text()), name)
