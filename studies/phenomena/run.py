"""The scan behind the top-level README's phenomena rows (first-token sinks, hidden sinks, massive
activations, backend agreement): ``probe scan`` with the sinks detector on SmolLM2-135M-Instruct, 8 Austen
passages x 256 tokens, CPU, fp32. Writes studies/phenomena/smollm2/ (heads/tokens/massive parquet +
manifest.json; the 4.9 MB report.html is left out: ``probe report``/``probe app`` rebuild views from the
parquet files) and backends.json (the same scan captured through TransformerLens and through nnsight:
largest absolute difference per heads-table column against probe's own seam).

    python -m studies.phenomena.run      # about four minutes on a laptop CPU
    python -m studies.summary            # regenerates the README's phenomena table
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
OUT = HERE / "smollm2"
SCAN = ["-m", "probe.cli", "scan", "--model", "smollm2", "--detect", "sinks", "--n-prompts", "8",
        "--prompt-tokens", "256", "--device", "cpu", "--overwrite"]
BACKENDS = ("transformer-lens", "nnsight")


def scan(out: Path, backend: str = "native") -> pd.DataFrame:
    subprocess.run([sys.executable, *SCAN, "--out", str(out), "--backend", backend], check=True)
    (out / "report.html").unlink(missing_ok=True)
    return pd.read_parquet(out / "heads.parquet")


def main() -> None:
    native = scan(OUT)
    cols = [c for c in native.columns if c not in ("layer", "head", "kv_head")]
    diffs = {}
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            other = scan(Path(tmp) / "scan", backend)
        m = native.merge(other, on=["layer", "head"], suffixes=("", "_other"))
        assert len(m) == len(native)
        diffs[backend] = {c: float((m[c] - m[f"{c}_other"]).abs().max()) for c in cols}
    (HERE / "backends.json").write_text(json.dumps(
        {"command": "python -m studies.phenomena.run", "scan": " ".join(SCAN[2:]),
         "max_abs_diff_vs_native": diffs}, indent=1))


if __name__ == "__main__":
    main()
