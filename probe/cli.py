"""The ``probe`` command: thin — parse, check, call the library, print.

Every mistake a person can make on the command line ends in one line on stderr and exit code 2:
usage errors (unknown flag, missing value or argument) print the error plus a usage line; checks
that need no model (detector names and options, SPECs against the model's config, prompt file,
--out, --device, counts) run before any weights load. Heavy modules (torch, transformers, pandas)
are imported inside the commands that need them, so ``probe --help`` and ``probe report DIR`` stay
fast (``scripts/bench_cli.py`` measures it).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .detect.registry import IMAGE_QUESTIONS, IMAGE_QUESTIONS_DEFAULT, OWN, SPECS, TEXT, spec
from .devices import DEFAULT_DEVICE, DEVICE_HELP
from .errors import ProbeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,           # plain click help: fast, and flags are shown as flags
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    help="probe — find what attention heads do and change it at generate time.\n\n"
    "Examples:\n\n"
    "  probe scan --model smollm2 --out reports/smollm2\n\n"
    "  probe scan --model gemma3-270m --prompts my_prompts.jsonl --detect sinks --out reports/gemma\n\n"
    "  probe report reports/smollm2\n\n"
    "  probe generate --model smollm2 --intervention act \"The capital of France is\"",
)

DETECT_HELP = ("detector(s), comma-separated or repeated: "
               + "; ".join(f"{s.name} ({s.summary})" for s in SPECS.values()))


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
    """['sinks.eps=0.2', 'lengths=500,1000'] -> {detector: {key: value}} (no prefix = every detector
    that declares the key). Unknown detectors and undeclared keys are refused with the valid ones."""
    out: dict = {d: {} for d in detectors}
    for opt in opts:
        if "=" not in opt:
            raise ProbeError(f"bad --opt '{opt}'", "write --opt DETECTOR.KEY=VALUE or --opt KEY=VALUE")
        key, value = opt.split("=", 1)
        det, _, name = key.rpartition(".")
        if det:
            if det not in out:
                raise ProbeError(f"--opt {opt} names detector '{det}' which is not in --detect", f"use one of {detectors}")
            spec(det).check_options([name])
            targets = [det]
        else:
            targets = [d for d in detectors if name in spec(d).options]
            if not targets:
                valid = sorted({o for d in detectors for o in spec(d).options})
                raise ProbeError(f"unknown option '{name}' for detector(s) {', '.join(detectors)}",
                                 f"valid options: {', '.join(valid)}")
        for d in targets:
            out[d][name] = _parse_value(value)
    return out


def split_detectors(detect: List[str]) -> List[str]:
    """--detect a,b == --detect a --detect b; every name checked against the registry."""
    names = [d.strip() for item in detect for d in item.split(",") if d.strip()]
    if not names:
        raise ProbeError("--detect names no detector", f"choose from {', '.join(SPECS)}")
    for name in names:
        spec(name)
    return names


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ProbeError(f"{name} {value}: must be at least 1", f"pass {name} 1 or more")


def check_detectors_fit(facts, detect: List[str]) -> None:
    """Vision detectors need a VLM; checked from the config before loading."""
    for d in detect:
        if spec(d).inputs == IMAGE_QUESTIONS and not facts.is_vlm:
            raise ProbeError(f"detector '{d}' needs a vision-language model; {facts.source} is text-only",
                             "use --model studio-vlm (or another LLaVA-style VLM), or drop it from --detect")


@app.command(epilog="Defaults are sized to the job: sinks reads 32 Austen passages x 512 tokens (--n-prompts, "
             "--prompt-tokens); vision/vhd/visual-sinks ask two questions about 12 images; retrieval and arithmetic "
             "build their own inputs and use a smaller grid on CPU (the plan and an estimate are printed first; "
             "make it larger or smaller with --opt retrieval.lengths=512,1024 --opt retrieval.depths=0,50,100 "
             "--opt arithmetic.n=16).")
def scan(
    model: str = typer.Option("smollm2", "--model", "-m", help="alias (smollm2, gemma3-270m, studio-vlm), folder, .gguf, or cached hub id"),
    detect: List[str] = typer.Option(["sinks"], "--detect", "-d", help=DETECT_HELP),
    out: Path = typer.Option(Path("reports/scan"), "--out", "-o", help="report directory"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p", help=".txt (blank-line separated), .jsonl/.json/.parquet/.csv with a 'text' field, or a saved datasets folder (default: each detector's own inputs)"),
    n_prompts: int = typer.Option(32, "--n-prompts", help="default text prompts: number of Austen passages"),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", help="default text prompts: tokens per passage"),
    chat_template: bool = typer.Option(False, "--chat-template", help="wrap each prompt in the model's chat template"),
    opt: List[str] = typer.Option([], "--opt", help="detector option DETECTOR.KEY=VALUE (e.g. sinks.eps=0.3, sinks.batch_size=8)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report in --out"),
    device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    backend: str = typer.Option("native", "--backend", help="capture through: native (probe's seam), transformer-lens, nnsight (sinks only)"),
    remote: bool = typer.Option(False, "--remote", help="run on NDIF through nnsight (needs network + NDIF API key)"),
    shard_by_rank: bool = typer.Option(False, "--shard-by-rank", help="under torchrun: this rank captures its share of the batches, rank 0 merges (probe/backends/README.md)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="reuse what a killed scan of the same settings finished (kept next to --out until the report is written)"),
):
    """Scan a model's heads and write heads.parquet, tokens.parquet, massive.parquet, manifest.json, report.html."""
    from .data.prompts import load_prompts
    from .devices import resolve_device
    from .models.facts import model_facts
    from .report.outdir import check_out_dir

    # -- everything that needs no model: fails in well under a second ------------------------
    detect = split_detectors(detect)
    options = parse_options(opt, detect)
    check_positive("--n-prompts", n_prompts)
    check_positive("--prompt-tokens", prompt_tokens)
    given, backend = backend, backend.strip().lower().replace("_", "-")
    if backend in ("transformerlens", "tl"):
        backend = "transformer-lens"
    if backend not in ("native", "transformer-lens", "nnsight"):
        raise ProbeError(f"unknown backend '{given}'", "choose from native, transformer-lens, nnsight")
    if remote and backend != "nnsight":
        raise ProbeError("--remote runs through nnsight (NDIF)", "add --backend nnsight")
    for d in detect:  # only detectors that honour a backend get it (the others would ignore or refuse it)
        if backend != "native":
            if backend not in spec(d).backends:
                raise ProbeError(f"detector '{d}' captures only through the native seam, not --backend {backend}",
                                 "drop --backend, or scan that detector separately")
            options[d].setdefault("backend", backend)
        if remote:
            options[d]["remote"] = True
    if not shard_by_rank:
        check_out_dir(out, overwrite)
    texts = load_prompts(prompts) if prompts is not None else None
    device = resolve_device(device)
    facts = model_facts(model)
    check_detectors_fit(facts, detect)

    def inputs_for(handle):
        """{detector: prompts} and {detector: source}: --prompts for all, else each detector's own default."""
        from .data.prompts import default_prompts

        ins, src, austen = {}, {}, None
        for d in detect:
            kind = spec(d).inputs
            if texts is not None:
                ins[d], src[d] = texts, str(prompts)
            elif kind == TEXT:
                if austen is None:
                    austen = default_prompts(handle.tokenizer, n_prompts, prompt_tokens)
                ins[d], src[d] = austen, f"austen:prideprejudice {n_prompts}x{prompt_tokens} tokens"
            elif kind == IMAGE_QUESTIONS:
                ins[d], src[d] = list(IMAGE_QUESTIONS_DEFAULT), "image questions (detector default)"
            else:
                ins[d], src[d] = [], "built by the detector"
        return ins, src

    shard = None
    if shard_by_rank:   # torchrun: RANK / WORLD_SIZE name this process's shard, LOCAL_RANK its GPU
        import os

        from .sharding import Shard

        shard = Shard.from_env()
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    from .models import load

    handle = load(model, device=device)
    ins, src = inputs_for(handle)
    from .report import summary_text
    from .scanner import plan_defaults, scan as run_scan

    plan_defaults(handle, detect, options, log=lambda s: typer.echo(s, err=True))
    report = run_scan(handle, ins, detect=detect, out=out, overwrite=overwrite, chat_template=chat_template,
                      prompt_source=src, options=options, progress=shard is None, resume=resume, shard=shard)
    if shard is not None:
        typer.echo(f"rank {shard.rank}/{shard.world}: {shard.computed} batch forwards run now", err=True)
        if report is None:
            return
    typer.echo(summary_text(report))
    merged = f"merged {shard.world} shards" if shard is not None else f"open {report.path}/report.html"
    typer.echo(f"wrote {report.path}/ ({merged})")


@app.command()
def report(path: Path = typer.Argument(..., metavar="DIR", help="a report directory written by `probe scan`"),
           as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON")):
    """Print a terminal summary of a report."""
    from .report.io import read_report
    from .report.render import summary_text

    rep = read_report(path)
    typer.echo(json.dumps(rep.manifest, indent=2) if as_json else summary_text(rep))


@app.command()
def models():
    """List the embedded model aliases and whether their packages are installed."""
    import importlib.util

    from .models.aliases import ALIASES, VLM_ALIASES

    for name, alias in ALIASES.items():
        ok = importlib.util.find_spec(alias.package) is not None
        typer.echo(f"{name:12} {'installed' if ok else 'missing: ' + alias.install}")
    for name in VLM_ALIASES:
        typer.echo(f"{name:12} assembled VLM (DINOv2 ViT-S/14 + SmolLM2 + trained projector)")


@app.command()
def support(model: str = typer.Argument("smollm2", metavar="MODEL", help="alias, folder, .gguf or cached hub id"),
            as_json: bool = typer.Option(False, "--json", help="rows as JSON"),
            device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
            families: bool = typer.Option(False, "--families", help="list the VLM families probe knows (loads nothing)")):
    """Table of what each backend (native, transformer-lens, nnsight) can capture for MODEL."""
    from .backends.support import families_text, render, table
    from .devices import resolve_device
    from .models import load
    from .models.facts import model_facts

    if families:
        typer.echo(families_text())
        return
    device = resolve_device(device)
    model_facts(model)
    handle = load(model, device=device)
    typer.echo(json.dumps(table(handle), indent=2) if as_json else render(handle))


def _register_plugins() -> None:
    """Commands that live next to their library code (interventions, app)."""
    import importlib

    for module in ("interventions.commands", "app.commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue  # that part is not in this build
            raise
        mod.register(app)


def quiet_libraries() -> None:
    """No library progress bars or warnings between probe's own lines (probe shows one bar per
    long operation itself). Environment only: nothing heavy is imported here."""
    import os
    import warnings

    for var, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(var, value)
    if "transformers" in sys.modules:      # already imported (a notebook, a test): switch it off directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")


def _click_exceptions():
    """The exception classes the running typer raises: typer >= 0.29 ships its own click as
    ``typer._click`` (whose classes are not click's), older typer raises click's own."""
    mods = []
    try:
        from typer import _click as vendored

        mods.append(vendored.exceptions)
    except ImportError:
        pass
    if "click" in sys.modules:       # only when something imported it: never pay for the import
        mods.append(sys.modules["click"].exceptions)
    pick = lambda name: tuple(getattr(m, name) for m in mods if hasattr(m, name))  # noqa: E731
    exits = tuple(c for c in (getattr(typer, "Exit", None), getattr(typer, "Abort", None)) if c) + pick("Exit") + pick("Abort")
    return pick("UsageError"), pick("ClickException"), exits, pick("NoArgsIsHelpError")


def _usage_line(ctx) -> str:
    if ctx is None:
        return "usage: probe COMMAND [OPTIONS] (probe -h for help)"
    usage = ctx.get_usage().strip().removeprefix("Usage:").strip()
    return f"usage: {usage} ({ctx.command_path} -h for help)"


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: usage errors and ProbeErrors become one line on stderr (plus a usage line for
    usage errors) and exit code 2; Ctrl-C exits 130."""
    quiet_libraries()
    _register_plugins()
    usage, other, exits, no_args = _click_exceptions()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="probe", standalone_mode=False)
    except ProbeError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except no_args as err:   # `probe` alone: the help, as --help would print it
        typer.echo(err.ctx.get_help() if err.ctx else "probe -h for help")
        sys.exit(0)
    except usage as err:
        message = err.format_message().strip().rstrip(".")
        typer.echo(f"error: {message[:1].lower() + message[1:]}", err=True)
        typer.echo(_usage_line(err.ctx), err=True)
        sys.exit(2)
    except other as err:
        typer.echo(f"error: {err.format_message()}", err=True)
        sys.exit(err.exit_code or 1)
    except exits as err:
        code = getattr(err, "exit_code", None)
        if code is None:                        # Abort (Ctrl-C inside a prompt)
            typer.echo("aborted", err=True)
            code = 1
        sys.exit(code)


if __name__ == "__main__":
    main()
