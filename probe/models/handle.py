"""``Handle``: one object for every model source, knowing the facts the workbench needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..errors import ProbeError


@dataclass
class Handle:
    """A loaded model plus its tokenizer and the attention facts detectors rely on.

    Attributes:
        model: the Hugging Face model (``...ForCausalLM`` or ``LlavaForConditionalGeneration``).
        tokenizer: its tokenizer.
        source: what the user asked for (alias, folder, .gguf path, hub id).
        kind: "alias", "dir", "gguf" or "hub".
        file_hash: sha256 of the weights file when known (GGUF), else None.
        prepend_bos: whether ``encode`` puts the BOS token in front itself (Gemma-3 GGUF needs it).
        processor: the multimodal processor (VLMs), else None.
        load_seconds: wall time of the load.
    """

    model: Any
    tokenizer: Any
    source: str
    kind: str
    file_hash: Optional[str] = None
    prepend_bos: bool = False
    processor: Any = None
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    # ---- architecture facts -------------------------------------------------------------
    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def n_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.text_config, "num_key_value_heads", None) or self.n_heads)

    @property
    def head_dim(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def context_length(self) -> int:
        return int(getattr(self.text_config, "max_position_embeddings", 0) or 0)

    @property
    def sliding_windows(self) -> dict[int, int]:
        """{layer: window} for the sliding-window layers (empty for full-attention models)."""
        return {
            layer: int(module.sliding_window)
            for layer, module in enumerate(self.attention_modules())
            if getattr(module, "sliding_window", None)
        }

    @property
    def pad_id(self) -> int:
        """The token id used for left padding: the tokenizer's pad id (0 is a valid id), else EOS, else 0."""
        tok = self.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        if pad is not None:
            return int(pad)
        eos = getattr(tok, "eos_token_id", None)
        return int(eos) if eos is not None else 0

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_token_id(self) -> Optional[int]:
        return getattr(self.model.config, "image_token_id", None) or getattr(self.model.config, "image_token_index", None)

    def decoder_layers(self) -> list:
        """The text decoder's layers, in order."""
        try:
            layers = self.model.get_decoder().layers
        except AttributeError as err:
            raise ProbeError(
                f"unsupported architecture {type(self.model).__name__}: no decoder layers found",
                "probe supports decoder LMs and LLaVA-style VLMs whose decoder exposes .layers",
            ) from err
        return list(layers)

    def attention_modules(self) -> list:
        """The self-attention module of each decoder layer (they call transformers' attention interface)."""
        mods = []
        for i, layer in enumerate(self.decoder_layers()):
            attn = getattr(layer, "self_attn", None)
            if attn is None:
                raise ProbeError(
                    f"unsupported architecture {type(self.model).__name__}: layer {i} has no self_attn",
                    "probe supports models whose layers use transformers' attention interface (Llama, Gemma, Qwen, Mistral, LLaVA)",
                )
            mods.append(attn)
        return mods

    # ---- text -------------------------------------------------------------------------------
    def format_prompt(self, text: str, chat_template: bool = False) -> str:
        """Raw text, or the model's chat template around one user turn (generation prompt added)."""
        if chat_template:
            if not self.has_chat_template:
                raise ProbeError(f"model {self.source} has no chat template", "drop --chat-template")
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def encode(self, texts: list[str] | str, chat_template: bool = False, max_length: Optional[int] = None) -> dict:
        """Tokenize a batch with left padding (so the last position is every row's newest token).

        Returns {"input_ids": [B, T] long, "attention_mask": [B, T] long} on the model's device.
        Raises ProbeError when a prompt is empty or longer than the model's context.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for i, text in enumerate(texts):
            if not text or not text.strip():
                raise ProbeError(f"prompt {i} is empty", "give every prompt some text")
            text = self.format_prompt(text, chat_template)
            ids = self.tokenizer(text, add_special_tokens=not chat_template)["input_ids"]
            bos = self.tokenizer.bos_token_id
            if self.prepend_bos and bos is not None and (not ids or ids[0] != bos):
                ids = [bos] + ids
            limit = max_length or self.context_length
            if limit and len(ids) > limit:
                raise ProbeError(
                    f"prompt {i} has {len(ids)} tokens, longer than the model's context of {limit}",
                    "shorten the prompt or split it",
                )
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[b, width - len(r):] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def image_spans(self, input_ids) -> list[list[tuple[int, int]]]:
        """Image-token spans [start, end) per batch row ([] per row for text-only models)."""
        tid = self.image_token_id
        if tid is None:
            return [[] for _ in range(len(input_ids))]
        from .vlm_inputs import image_token_spans

        return image_token_spans(input_ids, tid)

    def token_strings(self, ids) -> list[str]:
        """Readable token strings (byte-level pieces decoded one by one)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def check_head(self, layer: int, head: int) -> None:
        """Raise ProbeError naming the valid ranges when (layer, head) does not exist."""
        if not (0 <= layer < self.n_layers) or not (0 <= head < self.n_heads):
            raise ProbeError(
                f"no head L{layer}H{head} in {self.source}",
                f"layers are 0..{self.n_layers - 1}, heads 0..{self.n_heads - 1}",
            )

    def describe(self) -> dict:
        """The facts a report's manifest records."""
        return {
            "source": self.source,
            "kind": self.kind,
            "class": type(self.model).__name__,
            "file_sha256": self.file_hash,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "context_length": self.context_length,
            "sliding_windows": {str(k): v for k, v in self.sliding_windows.items()},
            "prepend_bos": self.prepend_bos,
            "chat_template": self.has_chat_template,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }


def as_handle(handle_or_model) -> tuple["Handle", Any]:
    """(Handle, model) for a probe Handle or a bare Hugging Face model (wrapped without a tokenizer)."""
    if isinstance(handle_or_model, Handle):
        return handle_or_model, handle_or_model.model
    return Handle(handle_or_model, None, type(handle_or_model).__name__, "object"), handle_or_model
