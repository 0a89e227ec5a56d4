"""The scan behind the top-level README's phenomena rows (first-token sinks, hidden sinks, massive
activations): ``probe scan`` with the sinks detector on SmolLM2-135M-Instruct, 8 Austen passages x 256
tokens, CPU, fp32. Writes studies/phenomena/smollm2/ (heads/tokens/massive parquet + manifest.json; the
4.9 MB report.html is left out: ``probe report``/``probe app`` rebuild views from the parquet files).

    PYTHONPATH=. python studies/phenomena/run.py      # about a minute on a laptop CPU
    PYTHONPATH=. python studies/summary.py            # regenerates the README's phenomena table
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "smollm2"
COMMAND = ["-m", "probe.cli", "scan", "--model", "smollm2", "--detect", "sinks", "--n-prompts", "8",
           "--prompt-tokens", "256", "--device", "cpu", "--out", str(OUT), "--overwrite"]

if __name__ == "__main__":
    subprocess.run([sys.executable, *COMMAND], check=True)
    (OUT / "report.html").unlink(missing_ok=True)
