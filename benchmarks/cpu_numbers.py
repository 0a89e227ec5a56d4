"""The README's CPU numbers (load times, long-prompt memory, scan time, decode speed), measured and written to a file.

    PYTHONPATH=. python -m benchmarks.cpu_numbers            # measure (~6 min on 2 cores) -> benchmarks/results/cpu_numbers.json
    PYTHONPATH=. python -m benchmarks.cpu_numbers --render   # rewrite the README's <!-- table:cpu-numbers --> block

Each measurement runs in its own process (first loads need an empty cache; peak RSS is per process). The file
records the command of every row and the load average before it, so a contended figure says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studies.tables import markdown_table, read_blocks, write_blocks  # noqa: F401 (read_blocks: the drift test)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "cpu_numbers.json"
GEMMA_PROMPT = "<bos>The capital of France is"

LOAD_CHILD = "import time, probe; t = time.perf_counter(); probe.load({name!r}); print(round(time.perf_counter() - t, 2))"

GEMMA_CHILD = """
import json, torch, probe
h = probe.load("gemma3-270m")
enc = h.tokenizer({prompt!r}, return_tensors="pt", add_special_tokens=False)
with torch.no_grad(), probe.capture(h, stats=("sink",)) as rec:
    h.model(**enc, use_cache=False)
key0 = [float(rec.layer(i).sink_mass[:, :, 1:, 0].mean()) for i in range(h.n_layers)]  # queries 1.. on key 0
out = h.model.generate(**enc, max_new_tokens=10, do_sample=False)
print(json.dumps({{"continuation": h.tokenizer.decode(out[0, enc["input_ids"].shape[1]:]), "key0_min": min(key0),
                  "key0_max": max(key0), "layers": h.n_layers}}))
"""


def _run(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """stdout of ``cmd`` (run from the repository root) and the load average before it."""
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-500:]}")
    return out.stdout, load


def _json_lines(text: str) -> list[dict]:
    """The JSON rows a script printed (it may also print Python reprs of the same rows: skipped)."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict)]


def measure() -> dict:
    py = sys.executable
    rows = []
    for name in ("smollm2", "gemma3-270m"):
        with tempfile.TemporaryDirectory() as cache:
            for which in ("first", "later"):
                code = LOAD_CHILD.format(name=name)
                stdout, load = _run([py, "-c", code], env={"PROBE_CACHE": cache})
                rows.append(dict(what=f"load {name} ({which})", seconds=float(stdout.split()[-1]), load_avg=load,
                                 command=f'PROBE_CACHE=<{"empty" if which == "first" else "filled"}> python -c '
                                         f'"import probe; probe.load({name!r})"'))
    stdout, load = _run([py, "-c", GEMMA_CHILD.format(prompt=GEMMA_PROMPT)])
    rows.append(dict(what="gemma3-270m through the seam", prompt=GEMMA_PROMPT, load_avg=load,
                     command="benchmarks/cpu_numbers.py (GEMMA_CHILD)", **_json_lines(stdout)[-1]))
    mem = "studies/capture/long_prompt_memory.py"                    # one process per mode: peak RSS is per process
    for script, args in ((mem, ["--child", "plain", "--tokens", "4096"]), (mem, ["--child", "capture", "--tokens", "4096"]),
                         (mem, ["--child", "eager", "--tokens", "1024"]),
                         ("studies/capture/bench_scan.py", []),
                         ("studies/capture/bench_decode_cpu.py", [])):
        stdout, load = _run([py, script, *args])
        for r in _json_lines(stdout):
            rows.append(dict(script=script, load_avg_before_script=load, command=" ".join(["python", script, *args]), **r))
        print(f"{script}: done", flush=True)
    return dict(meta=dict(machine=f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                          python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
                rows=rows)


def table(path: Path = OUT) -> str:
    """Markdown rows for the README from the measured file."""
    data = json.loads(path.read_text())
    rows = data["rows"]
    by = {r["what"]: r for r in rows if "what" in r and r.get("script") is None}
    mem = {r["mode"]: r for r in rows if "mode" in r}
    scan = [r for r in rows if r.get("script", "").endswith("bench_scan.py")]
    dec = [r for r in rows if "variant" in r]
    gem = by["gemma3-270m through the seam"]

    def load(name):
        f, l_ = by[f"load {name} (first)"], by[f"load {name} (later)"]
        return [f"{name}: first load (parse + dequantize + cache) / later load", f"{f['seconds']:.1f} s / {l_['seconds']:.2f} s",
                f"{f['command']} (load average {f['load_avg']:.1f})"]

    out = [load("smollm2"), load("gemma3-270m")]
    for mode, label in (("plain", "plain SDPA forward"), ("capture", "**`probe.capture`** (received + key-0 mass + entropy, "
                                                                     "all layers)"),
                        ("eager", "`output_attentions=True` (eager)")):
        r = mem[mode]
        out.append([f"SmolLM2, {label}, {r['tokens']:,}-token prompt", f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB",
                    f"`{r['command']}`"])
    for r in scan:
        out.append([f"SmolLM2, {r['what']}, {r['prompts']} Austen prompts × {r['tokens']} tokens",
                    f"{r['seconds']:.1f} s (load average {r['load_avg_before']:.1f})", f"`{r['command']}`"])
    if dec:
        out.append([f"SmolLM2 greedy decode, {dec[0]['prompt_tokens']}-token prompt, {dec[0]['new_tokens']} new tokens: "
                    + " / ".join(r["variant"] for r in dec),
                    " / ".join(f"{r['tokens_per_s']:.1f}" for r in dec) + " tokens/s", f"`{dec[0]['command']}`"])
    out.append([f"Gemma-3-270M through the seam ({gem['layers']} layers): `{gem['prompt']}` →",
                f"`{gem['continuation']!r}`; key-0 mass {gem['key0_min']:.2f}–{gem['key0_max']:.2f} across layers",
                "`benchmarks/cpu_numbers.py`"])
    return (f"Measured {data['meta']['date']} on {data['meta']['machine']} (fp32) by `PYTHONPATH=. python -m "
            f"benchmarks.cpu_numbers`, file `benchmarks/results/cpu_numbers.json`.\n\n"
            + markdown_table(["what", "figure", "command"], out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", action="store_true", help="only rewrite the README block from the existing file")
    args = ap.parse_args()
    if not args.render:
        OUT.write_text(json.dumps(measure(), indent=1) + "\n")
        print(f"wrote {OUT}")
    write_blocks(ROOT / "README.md", {"cpu-numbers": table()})
    print("README.md: regenerated the cpu-numbers block")


if __name__ == "__main__":
    main()
