"""Model sources -> Handle: embedded aliases, local folders, GGUF files, the local hub cache.

Loaded on first use (``probe.models.load`` imports torch and transformers; ``facts`` reads a
model's config only).
"""
_LAZY = {"Handle": "handle", "load": "loader", "ALIASES": "loader", "VLM_ALIASES": "loader",
         "DEFAULT_MODEL": "loader", "model_facts": "facts", "ModelFacts": "facts"}
_LAZY.update({"ALIASES": "aliases", "VLM_ALIASES": "aliases", "DEFAULT_MODEL": "aliases"})


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Handle", "load", "ALIASES", "VLM_ALIASES", "DEFAULT_MODEL", "model_facts", "ModelFacts"]
