"""`probe scan` / `probe report`: report files, refusals, atomic writes, and one-line errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from probe.cli import main
from probe.report import read_report


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "p.txt"
    path.write_text("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                    "must be in want of a wife.\n\nMr. Bennet was so odd a mixture of quick parts, sarcastic humour, "
                    "reserve, and caprice, that the experience of three and twenty years had been insufficient.\n")
    return path


def test_scan_writes_report_that_round_trips(tmp_path, prompt_file, smollm2, capsys):
    out = tmp_path / "rep"
    code, stdout, _ = run_cli(["scan", "--model", "smollm2", "--prompts", str(prompt_file), "--out", str(out)], capsys)
    assert code == 0 and "key0_mass" in stdout
    assert {p.name for p in out.iterdir()} == {"heads.parquet", "tokens.parquet", "massive.parquet", "manifest.json", "report.html"}
    heads = pd.read_parquet(out / "heads.parquet")
    assert len(heads) == 30 * 9
    assert {"layer", "head", "kv_head", "key0_mass", "sink_rate", "hidden_sink_mass", "entropy"} <= set(heads.columns)
    assert (heads.kv_head == heads["head"] // 3).all()
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert list(tokens.columns[:6]) == ["prompt_id", "position", "token", "layer", "head", "received_mass"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["file_sha256"] == smollm2.file_hash and manifest["prompts"]["count"] == 2
    timings = manifest["timings"]
    assert manifest["versions"]["torch"] == torch.__version__
    assert set(timings) == {"load_s", "sinks_s", "total_s"} and timings["total_s"] >= timings["sinks_s"] > 0
    assert "plotly" in (out / "report.html").read_text()[:2_000_000].lower()
    rep = read_report(out)
    pd.testing.assert_frame_equal(rep.heads, heads)

    code, _, err = run_cli(["scan", "--model", "smollm2", "--prompts", str(prompt_file), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and "hidden-sink tokens" in stdout


def test_bad_inputs_give_one_line_errors(tmp_path, prompt_file, tiny_dir, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    long = tmp_path / "long.txt"
    long.write_text("word " * 200)
    bert = tmp_path / "bert"
    from transformers import BertConfig, BertLMHeadModel

    BertLMHeadModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               is_decoder=True)).save_pretrained(bert)
    tiny_llama_tokenizer_dir = tiny_dir
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_llama_tokenizer_dir).save_pretrained(bert)
    cases = [
        (["scan", "--model", "no-such-model", "--out", str(tmp_path / "a")], "unknown model"),
        (["scan", "--model", str(bert), "--prompts", str(prompt_file), "--out", str(tmp_path / "b")], "unsupported architecture"),
        (["scan", "--model", str(tiny_dir), "--prompts", str(empty), "--out", str(tmp_path / "c")], "holds no prompts"),
        (["scan", "--model", str(tiny_dir), "--prompts", str(long), "--out", str(tmp_path / "d")], "longer than the model's context"),
        (["scan", "--detect", "bogus", "--out", str(tmp_path / "e")], "unknown detector"),
        (["scan", "--detect", "sinks,bogus", "--out", str(tmp_path / "e")], "unknown detector 'bogus'"),
        (["report", str(tmp_path / "nothing")], "no report"),
    ]
    capsys.readouterr()
    for argv, message in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2, argv
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not any((tmp_path / d).exists() for d in "abcde")             # no half-written reports


def test_corrupt_and_old_reports_are_refused(tmp_path, prompt_file, tiny_dir, capsys):
    out = tmp_path / "rep"
    assert run_cli(["scan", "--model", str(tiny_dir), "--prompts", str(prompt_file), "--out", str(out)], capsys)[0] == 0
    (out / "heads.parquet").write_bytes(b"not parquet")
    code, _, err = run_cli(["report", str(out)], capsys)
    assert code == 2 and "corrupt report" in err
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["report", str(out)], capsys)
    assert code == 2 and "schema version 0" in err
    assert run_cli(["scan", "--model", str(tiny_dir), "--prompts", str(prompt_file), "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert read_report(out).heads.shape[0] == 3 * 6


def test_interrupted_write_leaves_nothing(tmp_path, tiny_llama, monkeypatch):
    """A scan killed while writing leaves neither a report directory nor temp files behind (resume off:
    with it on, the finished work is kept on purpose, see test_cli_hardening's SIGKILL test)."""
    from probe.scanner import scan

    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def dies_on_second_table(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dies_on_second_table)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_llama, ["A short prompt about the weather today."], out=tmp_path / "rep", resume=False)
    assert list(tmp_path.iterdir()) == []
