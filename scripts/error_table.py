"""Write the table of bad inputs and faults in tests/README.md from real runs of the ``probe`` console script.

    python scripts/error_table.py            # rewrites the block between the markers in tests/README.md

Rows: every case in tests/cli_cases.py (no model loads), then the cases that need a model (a tiny
random-init Llama saved as a local folder) and the faults (a scan killed with SIGKILL, resumed).
Each row is the command, the first line probe printed on stderr, and the exit code. The tests
(tests/test_cli_hardening.py, tests/test_faults.py) check the same cases.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "tests" / "README.md"
BEGIN, END = "<!-- error-table:begin (scripts/error_table.py) -->", "<!-- error-table:end -->"


def _cases_module():
    spec = importlib.util.spec_from_file_location("cli_cases", ROOT / "tests" / "cli_cases.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _command() -> list[str]:
    script = shutil.which("probe")
    return [script] if script else [sys.executable, "-m", "probe.cli"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run(argv) -> tuple[str, int]:
    r = subprocess.run([*_command(), *map(str, argv)], capture_output=True, text=True, env=_env(), cwd=ROOT)
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith(("error:", "usage:"))]
    return (lines[0] if lines else (r.stderr.strip().splitlines() or [""])[-1]), r.returncode


def tiny_model(folder: Path) -> Path:
    """A random-init 3-layer Llama with SmolLM2's tokenizer and a 64-token context, saved as a folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from probe.models.aliases import alias_gguf_path
    from probe.models.cache import cache_root, file_sha256

    gguf = alias_gguf_path("smollm2")
    cached = cache_root() / "models" / f"{gguf.stem}-{file_sha256(gguf)[:12]}"
    if not (cached / "tokenizer_config.json").exists():
        import probe

        probe.load("smollm2", device="cpu")
    tok = AutoTokenizer.from_pretrained(cached)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)
    path = folder / "tiny-model"
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def model_rows(d: Path) -> list[tuple[str, str, int]]:
    rows = []
    model = tiny_model(d)
    (d / "long.txt").write_text("word " * 200)
    msg, code = run(["scan", "--model", model, "--prompts", d / "long.txt", "--out", d / "x"])
    rows.append(("scan --model TINY --prompts long.txt (200 tokens > 64)", msg, code))
    rep = d / "rep"
    run(["scan", "--model", model, "--prompts", d / "p.txt", "--out", rep, "--device", "cpu"])
    msg, code = run(["scan", "--model", model, "--prompts", d / "p.txt", "--out", rep])
    rows.append(("scan ... --out EXISTING_REPORT (no --overwrite)", msg, code))
    manifest = json.loads((rep / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (rep / "manifest.json").write_text(json.dumps(manifest))
    msg, code = run(["report", rep])
    rows.append(("report DIR (manifest of schema version 1)", msg, code))
    (rep / "manifest.json").write_text("{not json")
    msg, code = run(["report", rep])
    rows.append(("report DIR (manifest.json not JSON)", msg, code))
    # fault: SIGKILL mid-scan, then the same command again
    many = d / "many.txt"
    many.write_text("\n\n".join(f"Passage {i}: it is a truth universally acknowledged that a single man in possession "
                                f"of a good fortune must be in want of a wife." for i in range(48)))
    out = d / "killed"
    argv = ["scan", "--model", model, "--prompts", many, "--out", out, "--device", "cpu", "--opt", "sinks.batch_size=1"]
    proc = subprocess.Popen([*_command(), *map(str, argv)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = d / ".killed.partial"
    while proc.poll() is None and len(list(partial.glob("*/batches/*.pt"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(list(partial.glob("*/batches/*.pt")))
    rows.append((f"scan ... killed with SIGKILL after {kept} batches", f"(no output) report folder exists: {out.exists()}",
                 -signal.SIGKILL))
    r = subprocess.run([*_command(), *map(str, argv)], capture_output=True, text=True, env=_env())
    resumed = json.loads((out / "manifest.json").read_text()).get("resumed", {})
    rows.append(("the same scan again", f"report written; resumed {resumed.get('batches', 0)} batches; "
                 f"leftovers: {sorted(p.name for p in d.glob('.killed*'))}", r.returncode))
    return rows


def main() -> None:
    cases = _cases_module()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = cases.make_inputs(Path(tmp) / "inputs")
        import torch

        all_cases = cases.CASES + (cases.CUDA_CASES if not torch.cuda.is_available() else [])
        for argv, _ in all_cases:
            argv = [a.replace("{d}", str(d)) for a in argv]
            msg, code = run(argv)
            rows.append((" ".join(a.replace(str(d) + "/", "") for a in argv), msg.replace(str(d) + "/", ""), code))
        rows += [(c, m.replace(str(d) + "/", ""), code) for c, m, code in model_rows(d)]
    table = ["| `probe` command | what it prints (first line on stderr) | exit |", "|---|---|---|"]
    for cmd, msg, code in rows:
        table.append(f"| `{cmd}` | {msg.replace('|', '/')} | {code} |")
    block = "\n".join([BEGIN, *table, END])
    text = README.read_text() if README.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)
    print(f"{len(rows)} rows -> {README}")


if __name__ == "__main__":
    main()
