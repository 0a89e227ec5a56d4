"""CLI commands ``probe generate`` and ``probe calibrate``; ``probe/cli.py`` calls ``register(app)``.

Imports go through the submodules (``interventions.core`` ...) so they work however the package
was installed.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import List, Optional

import typer

from probe.devices import DEFAULT_DEVICE, DEVICE_HELP
from probe.errors import ProbeError


def _top(handle, logits) -> tuple[str, int, float]:
    i = int(logits.argmax())
    return handle.tokenizer.decode([i]), i, float(logits[i])


def build_interventions(handle, specs: List[str], calibration: Optional[Path], prompt: str) -> list:
    """SPEC strings (+ an ACT calibration file) -> intervention objects; mean masks use the prompt's means."""
    from interventions.act import ACT, load_calibration
    from interventions.mask import HeadMask
    from interventions.spec import parse_spec

    ivs = [parse_spec(s) for s in specs]
    if calibration is not None:
        cal = load_calibration(calibration)
        acts = [iv for iv in ivs if isinstance(iv, ACT)]
        if acts:
            for a in acts:
                a.heads, a.calibration = cal["heads"], cal
        else:
            ivs.append(ACT(beta=cal.get("beta", 0.4), threshold=cal.get("threshold", 0.1), heads=str(calibration)))
    if not ivs:
        raise ProbeError("no intervention given", "add --intervention SPEC (e.g. act, mask:L18H6) or --calibration FILE")
    if any(isinstance(iv, HeadMask) and iv.mode == "mean" for iv in ivs):
        means = HeadMask.compute_means(handle, [prompt])
        for iv in ivs:
            if isinstance(iv, HeadMask) and iv.mode == "mean":
                iv.means = means
    return ivs


def generate_pair(handle, prompt: str, ivs: list, max_new_tokens: int = 32, chat_template: bool = False,
                  image: Optional[Path] = None) -> dict:
    """Greedy baseline and intervened continuations plus the first step's top-token logit change."""
    import torch

    from interventions.core import intervene
    from interventions.vlm import encode_with_image

    enc = (encode_with_image(handle, prompt, image, chat_template) if image is not None
           else handle.encode(prompt, chat_template=chat_template))
    n = enc["input_ids"].shape[1]
    gen = dict(max_new_tokens=max_new_tokens, do_sample=False,
               pad_token_id=handle.pad_id)
    with torch.no_grad():
        base_logits = handle.model(**enc, use_cache=False).logits[0, -1].float()              # [V]
        base_ids = handle.model.generate(**enc, **gen)[0, n:]
        with intervene(handle, *ivs):
            int_logits = handle.model(**enc, use_cache=False).logits[0, -1].float()
            logged = [iv for iv in ivs if getattr(iv, "log_selection", False)]
            for iv in logged:
                iv.selection = {}                      # count the generation only, not the first-step forward
            int_ids = handle.model.generate(**enc, **gen)[0, n:]
    bt, bi, bl = _top(handle, base_logits)
    it, ii, il = _top(handle, int_logits)
    delta = int_logits - base_logits
    decode = lambda ids: handle.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    return {
        "prompt": prompt, "model": handle.source, "interventions": [repr(iv) for iv in ivs],
        "baseline": decode(base_ids), "intervened": decode(int_ids),
        "first_step": {
            "baseline_top": bt, "baseline_top_logit": round(bl, 4),
            "intervened_top": it, "intervened_top_logit": round(il, 4),
            "baseline_top_logit_change": round(float(delta[bi]), 4),
            "max_abs_logit_change": round(float(delta.abs().max()), 4),
            "top_changed": bi != ii,
        },
        "selection": [_selection_summary(iv) for iv in logged],
    }


def _selection_summary(iv) -> dict:
    """Redistribute / VAR ``log=1``: eligible and selected (layer, head, query) rows over the generation."""
    t = iv.selection_table()
    return {"intervention": repr(iv), "eligible_rows": int(t.eligible.sum()), "selected_rows": int(t.selected.sum()),
            "selected_fraction": iv.selected_fraction,
            "top_heads": [f"L{r.layer}H{r.head} {r.fraction:.2f}" for r in t.nlargest(5, "selected").itertuples()]}


def _side_by_side(a: str, b: str, width: int = 38) -> str:
    left = textwrap.wrap(a.replace("\n", " ⏎ "), width) or [""]
    right = textwrap.wrap(b.replace("\n", " ⏎ "), width) or [""]
    rows = [f"{'baseline':<{width}} | intervened", f"{'-' * width}-+-{'-' * width}"]
    for i in range(max(len(left), len(right))):
        rows.append(f"{left[i] if i < len(left) else '':<{width}} | {right[i] if i < len(right) else ''}")
    return "\n".join(rows)


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``calibrate`` to the probe CLI."""

    @app.command()
    def generate(
        prompt: str = typer.Argument(..., metavar="PROMPT", help="the prompt text"),
        model: str = typer.Option("smollm2", "--model", "-m", help="alias, folder, .gguf or cached hub id"),
        max_new_tokens: int = typer.Option(32, "--max-new-tokens", "-n", help="greedy tokens to generate"),
        intervention: List[str] = typer.Option([], "--intervention", "-i", help="SPEC, repeatable: act, act:beta=0.4,threshold=0.1, mask:L18H6[:mode=uniform|zero|mean], scale:L3H2:alpha=2, sinkwindow:sinks=4,window=1020, redistribute:span=5-20, var, vhr (VLMs, with --image)"),
        calibration: Optional[Path] = typer.Option(None, "--calibration", help="ACT calibration file from `probe calibrate` (its heads)"),
        chat_template: bool = typer.Option(False, "--chat-template", help="wrap the prompt in the model's chat template"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        image: Optional[Path] = typer.Option(None, "--image", help="image file for a VLM (e.g. studio-vlm); the image goes first unless the prompt has the image token"),
        device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
    ):
        """Generate with and without interventions; show both and the first step's top-token logit change."""
        from interventions.spec import check_against, parse_spec
        from probe.devices import resolve_device
        from probe.models import load
        from probe.models.facts import model_facts

        # checks that need no weights: SPECs against the config, files, counts, device
        if max_new_tokens < 1:
            raise ProbeError(f"--max-new-tokens {max_new_tokens}: must be at least 1", "pass --max-new-tokens 1 or more")
        if not prompt.strip():
            raise ProbeError("the prompt is empty", "give the prompt text as the last argument")
        if calibration is not None and not calibration.is_file():
            raise ProbeError(f"calibration file {calibration} does not exist", "run `probe calibrate --out FILE` first")
        if not intervention and calibration is None:
            raise ProbeError("no intervention given", "add --intervention SPEC (e.g. act, mask:L18H6) or --calibration FILE")
        if image is not None and not image.is_file():
            raise ProbeError(f"image file {image} does not exist", "check the --image path")
        device = resolve_device(device)
        facts = model_facts(model)
        check_against([parse_spec(s) for s in intervention], facts)
        if image is not None and not facts.is_vlm:
            raise ProbeError(f"--image needs a vision-language model; {model} is text-only", "use --model studio-vlm")
        handle = load(model, device=device)
        ivs = build_interventions(handle, intervention, calibration, prompt)
        res = generate_pair(handle, prompt, ivs, max_new_tokens, chat_template, image)
        if as_json:
            typer.echo(json.dumps(res, ensure_ascii=False))
            return
        fs = res["first_step"]
        typer.echo(f"interventions: {', '.join(res['interventions'])}")
        typer.echo(_side_by_side(res["baseline"], res["intervened"]))
        typer.echo(f"first step: top token {fs['baseline_top']!r} ({fs['baseline_top_logit']:.3f}) -> "
                   f"{fs['intervened_top']!r} ({fs['intervened_top_logit']:.3f}); logit change of the baseline top "
                   f"{fs['baseline_top_logit_change']:+.3f}, max |change| {fs['max_abs_logit_change']:.3f}")
        for sel in res["selection"]:
            typer.echo(f"{sel['intervention']}: edited {sel['selected_rows']} of {sel['eligible_rows']} eligible "
                       f"(layer, head, query) rows ({sel['selected_fraction']:.1%}); most: {', '.join(sel['top_heads'])}")

    @app.command()
    def calibrate(
        model: str = typer.Option("smollm2", "--model", "-m", help="alias, folder, .gguf or cached hub id"),
        task: str = typer.Option("sentiment", "--task", help="sentiment (pang_lee polarity), capitals (analogy set, capital-world), currencies (analogy set, currency) or topic (mini_newsgroup: alt.atheism vs sci.space)"),
        dev_size: int = typer.Option(48, "--dev-size", help="dev examples (head search)"),
        test_size: int = typer.Option(100, "--test-size", help="held-out test examples"),
        candidates: int = typer.Option(4, "--candidates", help="heads tried one at a time (most sink mass first)"),
        layers: Optional[str] = typer.Option(None, "--layers", help="candidate layers, e.g. 2-28 or 12,16,20 (default 2..L-2)"),
        beta: float = typer.Option(0.4, "--beta"),
        threshold: float = typer.Option(0.1, "--threshold"),
        batch_size: int = typer.Option(16, "--batch-size"),
        seed: int = typer.Option(0, "--seed", help="split seed"),
        threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = leave as is; 1 is fastest on a busy 2-core box)"),
        out: Path = typer.Option(Path("act_calibration.json"), "--out", "-o", help="calibration file to write"),
        as_json: bool = typer.Option(False, "--json", help="print the record as JSON"),
        device: str = typer.Option(DEFAULT_DEVICE, "--device", help=DEVICE_HELP),
        dtype: str = typer.Option("float32", "--dtype", help="float32 (as the CPU study) or bfloat16"),
    ):
        """ACT head search on a dev split; saves heads + dev/test accuracy for `--calibration`."""
        import torch

        from interventions.calibrate import search
        from interventions.spec import _ints
        from interventions.tasks import TASKS, load_task
        from probe.devices import resolve_device
        from probe.models import load
        from probe.models.facts import model_facts

        if task not in TASKS:
            raise ProbeError(f"unknown task {task!r}", f"choose from {', '.join(TASKS)}")
        for flag, value in (("--dev-size", dev_size), ("--test-size", test_size), ("--candidates", candidates),
                            ("--batch-size", batch_size)):
            if value < 1:
                raise ProbeError(f"{flag} {value}: must be at least 1", f"pass {flag} 1 or more")
        if out.exists() and out.is_dir():
            raise ProbeError(f"--out {out} is a folder", "give a file path for the calibration JSON")
        device = resolve_device(device)
        facts = model_facts(model)
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in dtypes:
            raise ProbeError(f"--dtype {dtype!r}", "use float32 or bfloat16")
        lay = None
        if layers:
            try:
                lay = _ints(layers.replace(",", "+"))
            except ValueError as err:
                raise ProbeError(f"--layers {layers!r}", "write e.g. 2-28 or 12,16,20") from err
            for l in lay:
                facts.check_layer(l)
        if threads:
            torch.set_num_threads(threads)
        handle = load(model, device=device, dtype=dtypes[dtype])
        full = load_task(task, handle.tokenizer)
        dev, test = full.split(dev_size, test_size, seed)
        log = (lambda s: None) if as_json else typer.echo
        rec = search(handle, dev, test, beta, threshold, candidates, lay, batch_size, log=log)
        rec["split_seed"] = seed
        rec["device"], rec["dtype"] = str(handle.device), dtype
        rec["command"] = (f"probe calibrate --model {model} --task {task} --dev-size {dev_size} --test-size {test_size} "
                          f"--candidates {candidates} --beta {beta} --threshold {threshold}"
                          + (f" --layers {layers}" if layers else "") + f" --seed {seed} --device {device} --dtype {dtype}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec, indent=2))
        if as_json:
            typer.echo(json.dumps(rec))
        else:
            for name in ("baseline", "act"):
                m = rec["test"][f"{name}_metrics"]
                fracs = ", ".join(f"{k[10:]} {v:.2f}" for k, v in m.items() if k.startswith("frac_pred_"))
                typer.echo(f"test {name}: accuracy {m['accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f}, "
                           f"AUC {m['auc']:.3f}, log-loss {m['log_loss']:.3f}, "
                           + (f"predicted {fracs}" if fracs else f"most-predicted label share {m['max_frac_pred']:.2f}"))
            typer.echo(f"wrote {out}: heads {['L%dH%d' % tuple(h) for h in rec['heads']]}")
