"""Where probe keeps derived files: dequantized GGUF weights as safetensors, assembled GGUFs.

The root is ``$PROBE_CACHE`` or ``~/.cache/probe``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The probe cache directory (created on demand)."""
    root = Path(os.environ.get("PROBE_CACHE") or Path.home() / ".cache" / "probe")
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, memoised next to the cache by (path, size, mtime) so big files hash once."""
    path = Path(path)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_root() / "hashes" / key
    if memo.exists():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest)
    return digest
