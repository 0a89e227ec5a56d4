"""Wall time of the ``probe`` console script for commands that should feel instant.

    python scripts/bench_cli.py [--repeat 5] [--report DIR] [--out benchmarks/results/cli_startup.json]

Targets (issue #13): ``probe --help`` under 1 s, ``probe report DIR`` under 2 s on a 2-core CPU
machine. Measured here, never asserted in tests (timings depend on the machine's load). Each
command runs ``--repeat`` times in a fresh process; the median and min are recorded with the
machine's load average and the CPU seconds each process used (user + system, which a busy
machine inflates far less than wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def probe_command() -> list[str]:
    """The installed console script (as a user runs it), else ``python -m probe.cli``."""
    script = shutil.which("probe")
    return [script] if script else [sys.executable, "-m", "probe.cli"]


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def time_command(argv: list[str], repeat: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run([*probe_command(), *argv], capture_output=True, text=True, env=cli_env())
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)   # load-independent
        if r.returncode != 0:
            raise SystemExit(f"probe {' '.join(argv)} failed: {r.stderr[-500:]}")
    return {"command": "probe " + " ".join(argv), "median_s": round(statistics.median(walls), 3),
            "min_s": round(min(walls), 3), "runs": [round(w, 3) for w in walls],
            "cpu_s_median": round(statistics.median(cpus), 3)}


def small_report(folder: Path) -> Path:
    """A real report from a tiny random-init Llama (written through probe.scan) to time ``probe report`` on."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import probe
    from probe.models import Handle

    tok = AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512)
    handle = Handle(LlamaForCausalLM(cfg).eval(), tok, "tiny-llama", "object")
    out = folder / "report"
    probe.scan(handle, ["It is a truth universally acknowledged.", "Mr. Bennet was so odd a mixture."], out=out)
    return out


def _smollm2_tokenizer_dir() -> str:
    from probe.models.aliases import alias_gguf_path
    from probe.models.cache import cache_root, file_sha256

    path = alias_gguf_path("smollm2")
    cached = cache_root() / "models" / f"{path.stem}-{file_sha256(path)[:12]}"
    if not (cached / "tokenizer_config.json").exists():
        import probe

        probe.load("smollm2", device="cpu")
    return str(cached)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--report", type=Path, default=None, help="report folder to time `probe report` on (default: a tiny one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_startup.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report or small_report(Path(tmp))
        rows = [time_command(["--help"], args.repeat), time_command(["scan", "--help"], args.repeat),
                time_command(["report", str(report)], args.repeat)]
    result = {"script": "python scripts/bench_cli.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count(),
              "load_average_1m": round(os.getloadavg()[0], 2), "targets_s": {"probe --help": 1.0, "probe report DIR": 2.0},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['command'][:60]:60} wall median {r['median_s']:.2f} s, min {r['min_s']:.2f} s; "
              f"CPU {r['cpu_s_median']:.2f} s")
    print(f"load average {result['load_average_1m']} on {result['cpus']} cpus -> {args.out}")


if __name__ == "__main__":
    main()
