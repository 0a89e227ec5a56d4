"""The ``probe`` command: thin — parse, call the library, print. Errors are one line + exit 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import ProbeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="probe — find what attention heads do and change it at generate time.\n\n"
    "Examples:\n\n"
    "  probe scan --model smollm2 --out reports/smollm2\n\n"
    "  probe scan --model gemma3-270m --prompts my_prompts.jsonl --detect sinks --out reports/gemma\n\n"
    "  probe report reports/smollm2\n\n"
    "  probe generate --model smollm2 --intervention act \"The capital of France is\"",
)


def _parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, 'a,b' -> ['a', 'b'] (each item parsed too)."""
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(opts: List[str], detectors: List[str]) -> dict:
    """['sinks.eps=0.2', 'lengths=500,1000'] -> {detector: {key: value}} (no prefix = every detector)."""
    out: dict = {d: {} for d in detectors}
    for opt in opts:
        if "=" not in opt:
            raise ProbeError(f"bad --opt '{opt}'", "write --opt DETECTOR.KEY=VALUE or --opt KEY=VALUE")
        key, value = opt.split("=", 1)
        det, _, name = key.rpartition(".")
        for d in ([det] if det else detectors):
            if d not in out:
                raise ProbeError(f"--opt {opt} names detector '{d}' which is not in --detect", f"use one of {detectors}")
            out[d][name] = _parse_value(value)
    return out


@app.command()
def scan(
    model: str = typer.Option("smollm2", "--model", "-m", help="alias (smollm2, gemma3-270m, studio-vlm), folder, .gguf, or cached hub id"),
    detect: List[str] = typer.Option(["sinks"], "--detect", "-d", help="detector(s): sinks, retrieval, arithmetic, vision"),
    out: Path = typer.Option(Path("reports/scan"), "--out", "-o", help="report directory"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p", help=".txt (blank-line separated), .jsonl/.parquet/.csv with a 'text' field, or a saved datasets folder"),
    n_prompts: int = typer.Option(32, help="default prompt set: number of Austen passages"),
    prompt_tokens: int = typer.Option(512, help="default prompt set: tokens per passage"),
    chat_template: bool = typer.Option(False, "--chat-template", help="wrap each prompt in the model's chat template"),
    opt: List[str] = typer.Option([], "--opt", help="detector option DETECTOR.KEY=VALUE (e.g. sinks.eps=0.3, sinks.batch_size=8)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report in --out"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if available)"),
    backend: str = typer.Option("native", "--backend", help="capture through: native (probe's seam), transformer-lens, nnsight"),
    remote: bool = typer.Option(False, "--remote", help="run on NDIF through nnsight (needs network + NDIF API key)"),
    shard_by_rank: bool = typer.Option(False, "--shard-by-rank", help="torchrun: this rank scans its shard; rank 0 merges (probe/backends/README.md)"),
):
    """Scan a model's heads and write heads.parquet, tokens.parquet, massive.parquet, manifest.json, report.html."""
    from .data.prompts import default_prompts, load_prompts
    from .models import load
    from .report import check_out_dir, summary_text
    from .scanner import scan as run_scan

    detect = [d.strip() for item in detect for d in item.split(",") if d.strip()]   # --detect a,b == --detect a --detect b
    options = parse_options(opt, detect)
    from .backends import normalize

    if remote and normalize(backend) != "nnsight":
        raise ProbeError("--remote runs through nnsight (NDIF)", "add --backend nnsight")
    for d in detect:  # every detector captures through the chosen backend (native: leave options as they are)
        if normalize(backend) != "native":
            options[d].setdefault("backend", normalize(backend))
        if remote:
            options[d]["remote"] = True
    if shard_by_rank:
        from .backends.shard import cli_scan

        return cli_scan(model=model, detect=detect, out=out, prompts=prompts, n_prompts=n_prompts,
                        prompt_tokens=prompt_tokens, chat_template=chat_template, options=options,
                        overwrite=overwrite, device=device)
    check_out_dir(out, overwrite)
    from .detect import get_detector

    for d in detect:
        get_detector(d)
    handle = load(model, device=device)
    if prompts is not None:
        texts, source = load_prompts(prompts), str(prompts)
    else:
        texts, source = default_prompts(handle.tokenizer, n_prompts, prompt_tokens), f"austen:prideprejudice {n_prompts}x{prompt_tokens} tokens"
    report = run_scan(handle, texts, detect=detect, out=out, overwrite=overwrite, chat_template=chat_template,
                      prompt_source=source, options=options, progress=True)
    typer.echo(summary_text(report))
    typer.echo(f"wrote {report.path}/ (open {report.path}/report.html)")


@app.command()
def report(path: Path = typer.Argument(..., help="a report directory written by `probe scan`"),
           as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON")):
    """Print a terminal summary of a report."""
    from .report import read_report, summary_text

    rep = read_report(path)
    typer.echo(json.dumps(rep.manifest, indent=2) if as_json else summary_text(rep))


@app.command()
def models():
    """List the embedded model aliases and whether their packages are installed."""
    import importlib.util

    from .models import ALIASES, VLM_ALIASES

    for name, alias in ALIASES.items():
        ok = importlib.util.find_spec(alias.package) is not None
        typer.echo(f"{name:12} {'installed' if ok else 'missing: ' + alias.install}")
    for name in VLM_ALIASES:
        typer.echo(f"{name:12} assembled VLM (DINOv2 ViT-S/14 + SmolLM2 + trained projector)")


def _register_plugins() -> None:
    """Commands that live next to their library code (interventions, app, backends)."""
    import importlib

    for module in ("interventions.commands", "app.commands", "probe.backends.commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue  # that part is not in this build
            raise
        mod.register(app)


def _quiet_libraries() -> None:
    """No per-tensor progress bars or library warnings between probe's own lines."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the CLI, turning ProbeError into one line on stderr and exit code 2."""
    _quiet_libraries()
    _register_plugins()
    try:
        app(args=argv, standalone_mode=False)
    except ProbeError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
