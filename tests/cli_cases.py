"""The bad inputs tried on the real ``probe`` console script, as data: (argv, text expected in the one-line
error). ``{d}`` is the folder ``make_inputs`` fills. Used by tests/test_cli_hardening.py and by
scripts/error_table.py, which writes the table in tests/README.md. None of these loads a model.
"""
from __future__ import annotations

from pathlib import Path


def make_inputs(d: Path) -> Path:
    """The files the cases point at."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "a_file").write_text("x")
    (d / "empty.txt").write_text("\n\n  \n")
    (d / "p.txt").write_text("It is a truth universally acknowledged.\n\nMr. Bennet was so odd a mixture.\n")
    (d / "notes.md").write_text("hello")
    (d / "nofield.jsonl").write_text('{"prompt": "hello"}\n')
    (d / "folder").mkdir(exist_ok=True)
    (d / "folder" / "other.txt").write_text("not a report")
    return d


CASES = [
    (["report"], "missing argument 'DIR'"),
    (["scan", "--bogus-flag"], "no such option: --bogus-flag"),
    (["scan", "--model"], "option '--model' requires an argument"),
    (["scan", "--n-prompts", "many"], "invalid value for '--n-prompts'"),
    (["generate"], "missing argument 'PROMPT'"),
    (["nosuchcommand"], "no such command 'nosuchcommand'"),
    (["report", "{d}/nothing"], "no report at"),
    (["report", "{d}/folder"], "is not a probe report"),
    (["scan", "--detect", "bogus"], "unknown detector 'bogus' — choose from sinks, retrieval, arithmetic, vision, vhd, visual-sinks, previous-token"),
    (["scan", "--detect", "sinks,bogus"], "unknown detector 'bogus'"),
    (["scan", "--opt", "bogus=1"], "unknown option 'bogus' for detector(s) sinks — valid options:"),
    (["scan", "--detect", "retrieval", "--opt", "retrieval.bogus=1"], "unknown option 'bogus' for detector 'retrieval'"),
    (["scan", "--opt", "retrieval.lengths=512"], "names detector 'retrieval' which is not in --detect"),
    (["scan", "--opt", "eps"], "bad --opt 'eps'"),
    (["scan", "--n-prompts", "0"], "--n-prompts 0: must be at least 1"),
    (["scan", "--prompt-tokens", "-5"], "--prompt-tokens -5: must be at least 1"),
    (["scan", "--device", "tpu"], "--device 'tpu' is not a device"),
    (["scan", "--out", "{d}/a_file"], "is a file, not a folder"),
    (["scan", "--out", "{d}/a_file/report"], "is a file"),
    (["scan", "--out", "{d}/folder", "--overwrite"], "is not a probe report"),
    (["scan", "--out", "{d}/folder"], "already holds files — pass --overwrite"),
    (["scan", "--prompts", "{d}/missing.txt", "--out", "{d}/o1"], "prompt file {d}/missing.txt does not exist"),
    (["scan", "--prompts", "{d}/empty.txt", "--out", "{d}/o2"], "holds no prompts"),
    (["scan", "--prompts", "{d}/notes.md", "--out", "{d}/o3"], "unsupported prompt file type .md"),
    (["scan", "--prompts", "{d}/nofield.jsonl", "--out", "{d}/o4"], "has no 'text' field"),
    (["scan", "--model", "no-such-model", "--out", "{d}/o5"], "unknown model 'no-such-model'"),
    (["scan", "--detect", "vhd", "--out", "{d}/o6"], "detector 'vhd' needs a vision-language model"),
    (["scan", "--backend", "nnsight", "--detect", "sinks,arithmetic", "--out", "{d}/o7"], "detector 'arithmetic' captures only through the native seam"),
    (["scan", "--backend", "bogus"], "unknown backend 'bogus' — choose from native, transformer-lens, nnsight"),
    (["scan", "--remote"], "--remote runs through nnsight"),
    (["generate", "--intervention", "foo:bar", "Hello"], "unknown intervention 'foo'"),
    (["generate", "--intervention", "mask:L99H0", "Hello"], "no head L99H0 in smollm2 — layers are 0..29, heads 0..8"),
    (["generate", "--intervention", "act:layers=40", "Hello"], "no layer 40 in smollm2 — layers are 0..29"),
    (["generate", "--intervention", "mask", "Hello"], "mask needs heads"),
    (["generate", "--intervention", "act:beta=high", "Hello"], "bad intervention SPEC 'act:beta=high'"),
    (["generate", "--intervention", "scale:L3H2:alpha=2,bogus=1", "Hello"], "unknown option(s) ['bogus'] for scale"),
    (["generate", "--intervention", "var", "Hello"], "VAR needs a vision-language model; smollm2 is text-only"),
    (["generate", "--max-new-tokens", "0", "--intervention", "act", "Hello"], "--max-new-tokens 0: must be at least 1"),
    (["generate", "Hello"], "no intervention given"),
    (["generate", "--calibration", "{d}/missing.json", "Hello"], "calibration file {d}/missing.json does not exist"),
    (["generate", "--intervention", "act", "--image", "{d}/missing.png", "Hello"], "image file {d}/missing.png does not exist"),
    (["generate", "--intervention", "mask:L1H1", "--image", "{d}/a_file", "Hello"], "--image needs a vision-language model"),
    (["calibrate", "--task", "bogus"], "unknown task 'bogus'"),
    (["calibrate", "--dev-size", "0"], "--dev-size 0: must be at least 1"),
    (["calibrate", "--layers", "2-40"], "no layer 30 in smollm2"),
    (["calibrate", "--out", "{d}/folder"], "is a folder"),
]
CUDA_CASES = [   # only on machines without CUDA
    (["scan", "--device", "cuda"], "--device cuda: no CUDA device on this machine"),
    (["generate", "--device", "cuda:0", "--intervention", "act", "Hello"], "no CUDA device"),
    (["calibrate", "--device", "cuda"], "no CUDA device"),
    (["support", "--device", "cuda"], "no CUDA device"),
]
