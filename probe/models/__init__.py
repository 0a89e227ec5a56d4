"""Model sources -> Handle: embedded aliases, local folders, GGUF files, the local hub cache."""
from .handle import Handle
from .loader import ALIASES, DEFAULT_MODEL, VLM_ALIASES, load

__all__ = ["Handle", "load", "ALIASES", "VLM_ALIASES", "DEFAULT_MODEL"]
