"""Every bad input and usage error through the real console script: one line, exit code 2, and no
model loaded before the checks that need none. The table in tests/README.md lists these cases."""
from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import time

import pytest
import torch

from cli_cases import CASES, CUDA_CASES, make_inputs
from clirun import run_probe

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def one_line_error(result, code: int = 2) -> str:
    """The stderr of a refused command: 'error: ...' (+ a 'usage:' line for usage errors), no traceback."""
    err = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and err and err[0].startswith("error: "), result.stderr[-2000:]
    assert len(err) == 1 or (len(err) == 2 and err[1].startswith("usage: ")), result.stderr
    return err[0]


if NO_CUDA:
    CASES = CASES + CUDA_CASES


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, message, files):
    argv = [a.replace("{d}", str(files)) for a in argv]
    result = run_probe(*argv, timeout=120)
    line = one_line_error(result)
    assert message.replace("{d}", str(files)) in line
    assert "loading" not in result.stderr                                         # no model was loaded
    assert not any((files / f"o{i}").exists() for i in range(1, 8))


def test_help_and_dash_h(files):
    for argv in (["--help"], ["-h"], ["scan", "-h"], ["generate", "-h"], ["report", "--help"], []):
        result = run_probe(*argv, timeout=120)
        assert result.returncode == 0 and "Usage: probe" in result.stdout, (argv, result.stderr)
    scan_help = run_probe("scan", "-h").stdout
    from probe.detect.registry import SPECS

    for name in SPECS:                                                                     # --detect help = registry
        assert name in scan_help
    assert "--chat-template <bool>" not in scan_help and "--chat-template " in scan_help  # flags shown as flags
    for command in ("scan", "generate", "calibrate", "support"):                             # one --device everywhere
        assert "--device <str>  auto (cuda when available, else cpu), cpu, cuda or cuda:N" in " ".join(
            run_probe(command, "-h").stdout.split()).replace("--device <str> auto", "--device <str>  auto")


def test_missing_optional_dependency_names_the_extra(tmp_path):
    """studio-vlm without onnx (the 'vision' extra): one line naming the extra, before any load."""
    shadow = tmp_path / "no_onnx"
    (shadow / "onnx").mkdir(parents=True)
    (shadow / "onnx" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'onnx'\", name='onnx')\n")
    result = run_probe("scan", "--model", "studio-vlm", "--detect", "vhd", "--out", tmp_path / "r",
                       extra_path=str(shadow), timeout=120)
    line = one_line_error(result)
    assert "optional 'vision' dependencies (missing: onnx)" in line and "pip install 'probe-workbench[vision]'" in line


def test_every_detector_declares_exactly_its_options():
    """The registry's option lists (checked by the CLI before loading) equal each module's defaults."""
    from probe.detect.registry import SPECS

    extras = {"sinks": {"backend", "remote"}, "vision": {"images", "image_names", "sink_dims", "sink_dim_texts"},
              "vhd": {"images", "image_names", "sink_dims", "sink_dim_texts"},
              "visual-sinks": {"images", "image_names", "sink_dims", "sink_dim_texts"}}
    defaults_name = {"induction": "INDUCTION_DEFAULTS"}
    for name, spec in SPECS.items():
        module_name, func = spec.target.split(":")
        module = importlib.import_module(module_name)
        declared = set(getattr(module, defaults_name.get(name, "DEFAULTS")))
        assert set(spec.options) == declared | extras.get(name, set()), name
        assert callable(getattr(module, func)), name


def test_unknown_option_passed_in_python_is_refused_too(tiny_llama):
    import probe

    with pytest.raises(probe.ProbeError, match="unknown option 'bogus' for detector 'sinks'"):
        probe.scan(tiny_llama, ["some text here"], options={"sinks": {"bogus": 1}})


def test_recorder_layer_error_gives_the_valid_range(tiny_llama):
    import probe

    with torch.no_grad(), probe.capture(tiny_llama, stats=("received",)) as rec:
        tiny_llama.model(**tiny_llama.encode("A short prompt"))
    with pytest.raises(probe.ProbeError, match=r"no capture for layer 99 in call 0 — captured layers are 0\.\.2"):
        rec.layer(99)
    with pytest.raises(probe.ProbeError, match=r"no forward call 3: 1 call\(s\) captured"):
        rec.layer(0, call=3)


def test_convenience_imports():
    import probe
    from probe import ACT, VAR, HeadMask, HeadScale, Redistribute, SinkWindow, intervene, parse_spec  # noqa: F401

    assert callable(probe.capture) and callable(probe.scan) and callable(probe.load)
    import probe.capture.seam  # noqa: F401  (binding the subpackage must keep probe.capture callable)

    assert callable(probe.capture)


# ---- real runs on a tiny model folder ---------------------------------------------------------

@pytest.mark.slow
def test_errors_that_need_the_model_and_report_refusals(tiny_dir, files, tmp_path):
    long = tmp_path / "long.txt"
    long.write_text("word " * 200)
    line = one_line_error(run_probe("scan", "--model", tiny_dir, "--prompts", long, "--out", tmp_path / "x"))
    assert "longer than the model's context of 64" in line and not (tmp_path / "x").exists()
    out = tmp_path / "rep"
    ok = run_probe("scan", "--model", tiny_dir, "--prompts", files / "p.txt", "--out", out, "--device", "cpu")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "error" not in ok.stderr and ok.stderr.count("scan sinks:   0%") == 1      # one progress display
    assert "Generating" not in ok.stderr and "Writing" not in ok.stderr and "Loading" not in ok.stderr
    assert "already holds files — pass --overwrite" in one_line_error(
        run_probe("scan", "--model", tiny_dir, "--prompts", files / "p.txt", "--out", out))
    report = run_probe("report", out)
    assert report.returncode == 0 and "sink_rate" in report.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and 0.0 <= manifest["summary"]["sinks"]["sink_rate"] <= 1.0
    (out / "heads.parquet").write_bytes(b"not parquet")
    assert "corrupt report" in one_line_error(run_probe("report", out))
    manifest["schema_version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "schema version 1" in one_line_error(run_probe("report", out))


@pytest.mark.slow
def test_sigkilled_scan_leaves_no_report_and_resumes(tiny_dir, tmp_path):
    """A real SIGKILL mid-scan: no report folder, the finished batches stay; the rerun reuses them
    and writes the same heads as an uninterrupted scan; nothing temporary is left."""
    import pandas as pd

    prompts = tmp_path / "many.txt"
    prompts.write_text("\n\n".join(f"Passage {i}: it is a truth universally acknowledged that a single man "
                                   f"in possession of a good fortune must be in want of a wife." for i in range(48)))
    out = tmp_path / "rep"
    argv = ["scan", "--model", tiny_dir, "--prompts", prompts, "--out", out, "--device", "cpu",
            "--opt", "sinks.batch_size=1"]
    import subprocess

    from clirun import cli_env, probe_command

    proc = subprocess.Popen([*probe_command(), *map(str, argv)], env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    partial = tmp_path / ".rep.partial"
    for _ in range(15000):                                          # poll every 20 ms, give up after ~5 min
        if proc.poll() is not None:
            break
        done = list(partial.glob("*/batches/*.pt"))
        if len(done) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the scan finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()                                         # no half-written report
    kept = len(list(partial.glob("*/batches/*.pt")))
    assert kept >= 3
    (tmp_path / ".rep.tmp999999").mkdir()                           # a dead writer's leftover temp folder
    again = run_probe(*argv)
    assert again.returncode == 0, again.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed"]["batches"] >= kept >= 3
    fresh = run_probe(*[a if a != out else tmp_path / "fresh" for a in argv], "--no-resume")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "heads.parquet"), pd.read_parquet(tmp_path / "fresh" / "heads.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tokens.parquet"), pd.read_parquet(tmp_path / "fresh" / "tokens.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "many.txt", "rep"]   # no partial / temp leftovers
