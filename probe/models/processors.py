"""Multimodal processors from local files, including on machines without torchvision.

transformers' processors for Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision (and others that also handle
video) require a video processor, and every video processor needs torchvision; without it
``AutoProcessor.from_pretrained`` fails ("Can't load video processor") even for image-only use.
``load_processor`` then builds the same processor class without its video part: images and text
are processed by the stock code, videos are refused.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def image_only_processor_class(cls: type) -> type:
    """``cls`` (a transformers ProcessorMixin subclass with a ``video_processor``) without it.

    Same name, ``__init__`` and behaviour for text and images; transformers derives a processor's
    parts from ``get_attributes()``, which here leaves ``video_processor`` out (it stays None).
    """
    def get_attributes(klass) -> list[str]:
        return [a for a in cls.get_attributes.__func__(klass) if a != "video_processor"]

    return type(cls.__name__, (cls,), {"get_attributes": classmethod(get_attributes),
                                       "__doc__": f"{cls.__name__} without its video processor."})


def _processor_class_name(folder: Path) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            found = json.loads(path.read_text()).get("processor_class")
            if found:
                return found
    return None


def load_processor(name: str, local_only: bool = True):
    """``AutoProcessor.from_pretrained(name)``, or the image-only processor when the video part cannot load.

    Args:
        name: a local folder (or a cached hub id) holding the processor / tokenizer configs.
    Returns:
        the processor (its ``image_token`` / ``image_token_id`` as the stock class sets them).
    Raises:
        the original error when the fallback does not apply (no processor class named, no video part).
    """
    import transformers
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(name, local_files_only=local_only)
    except (OSError, ImportError, ValueError, TypeError) as err:
        folder = Path(name)
        cls_name = _processor_class_name(folder) if folder.is_dir() else None
        cls = getattr(transformers, cls_name, None) if cls_name else None
        if cls is None or "video_processor" not in cls.get_attributes():
            raise
        try:
            return image_only_processor_class(cls).from_pretrained(name, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - report the original failure, it names what is missing
            raise err from None
