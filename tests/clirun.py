"""Run the real ``probe`` console script in a subprocess (this checkout's code via PYTHONPATH)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def probe_command() -> list[str]:
    """The installed console script when there is one, else ``python -m probe.cli`` (same ``main``)."""
    script = shutil.which("probe")
    return [script] if script else [sys.executable, "-m", "probe.cli"]


def cli_env(extra_path: str | None = None) -> dict:
    path = os.pathsep.join(p for p in (extra_path, str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def run_probe(*args, timeout: float = 600, extra_path: str | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*probe_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(extra_path), cwd=kw.pop("cwd", ROOT), **kw)
