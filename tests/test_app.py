"""The Streamlit dashboard, driven headless by ``streamlit.testing.v1.AppTest``.

Reports are real scans of a tiny random-init Llama (SmolLM2's tokenizer) saved as a local model
folder, so the app's live views load that same folder through ``probe.load``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import live, reports  # noqa: E402
from probe.report import read_report, score_columns  # noqa: E402

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
TIMEOUT = 180
PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that the experience of "
    "three and twenty years had been insufficient to make his wife understand his character.",
    "Elizabeth, feeling really anxious, was determined to go to her, though the carriage was not to be had.",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_llama):
    """The conftest's tiny Llama saved as a local Hugging Face folder (what the app's live views load)."""
    path = tmp_path_factory.mktemp("tiny_app") / "model"
    tiny_llama.model.save_pretrained(path)
    tiny_llama.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_folder):
    """A reports root with two real scans of the tiny folder model (different prompt sets)."""
    import probe
    from probe.scanner import scan

    handle = probe.load(str(tiny_folder), device="cpu")
    root = tmp_path_factory.mktemp("reports")
    scan(handle, PROMPTS, out=root / "tiny_a")
    scan(handle, PROMPTS[:2] + [PROMPTS[2] * 2], out=root / "tiny_b")
    return root


def snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def start(monkeypatch, report=None, root_dir=None, model=None) -> AppTest:
    """Run the app once with the given settings (environment variables the script reads)."""
    for key, value in (("PROBE_APP_REPORT", report), ("PROBE_APP_REPORTS_ROOT", root_dir), ("PROBE_APP_MODEL", model)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(value))
    monkeypatch.setattr("sys.argv", ["main.py"])
    return AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def chart_keys(at: AppTest) -> list[str]:
    """The user keys of the plotly charts on the page (Streamlit puts them at the end of the element id)."""
    out = []
    for chart in at.get("plotly_chart"):
        ident = chart.proto.id
        out.append(ident.split("-", 2)[-1] if ident.startswith("$$ID") else ident)
    return out


def test_report_page_has_heatmaps_for_every_score_and_head_details(monkeypatch, root):
    at = start(monkeypatch, report=root / "tiny_a", root_dir=root)
    no_exception(at)
    assert not at.error, texts(at.error)
    rep = read_report(root / "tiny_a")
    keys = chart_keys(at)
    for col in score_columns(rep.heads):
        assert f"heatmap_{col}"[:30] in [k[:30] for k in keys], (col, keys)
    labels = [t.label for t in at.tabs]
    assert labels[0] == "Heads" and {"Tokens", "Attention", "Live A/B", "Compare"} <= set(labels)
    assert at.sidebar.selectbox(key="report_choice").value == str(root / "tiny_a")

    at.sidebar.selectbox(key="sel_layer").set_value(2)
    at.sidebar.selectbox(key="sel_head").set_value(4)
    at.run()
    no_exception(at)
    assert "Head L2H4" in texts(at.subheader)
    scores = at.dataframe[0].value
    row = rep.heads[(rep.heads["layer"] == 2) & (rep.heads["head"] == 4)].iloc[0]
    got = dict(zip(scores["score"], scores["value"]))
    assert set(got) == set(score_columns(rep.heads))
    for col, value in got.items():
        assert value == pytest.approx(float(row[col]), rel=1e-6, abs=1e-9)


def test_head_tokens_match_the_tokens_table(root):
    rep = read_report(root / "tiny_a")
    tokens = rep.table("tokens")
    assert len(tokens), "the tiny scan should find some hidden-sink rows"
    layer, head = tokens.groupby(["layer", "head"]).size().idxmax()
    top = reports.head_tokens(rep, int(layer), int(head))
    mine = tokens[(tokens["layer"] == layer) & (tokens["head"] == head)]
    assert top["rows"].sum() <= len(mine) and top["rows"].iloc[0] == mine["token"].value_counts().iloc[0]


def test_missing_report_shows_an_error(monkeypatch, tmp_path):
    at = start(monkeypatch, report=tmp_path / "nope", root_dir=tmp_path)
    no_exception(at)
    assert any("no report at" in t for t in texts(at.error)), texts(at.error)
    assert [t.label for t in at.tabs] == ["Tokens", "Attention", "Live A/B", "Compare"]


@pytest.mark.parametrize("damage", ["truncated_parquet", "bad_json", "old_schema", "no_manifest"])
def test_corrupt_or_old_report_shows_an_error_and_is_not_written(monkeypatch, root, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(root / "tiny_a", bad)
    if damage == "truncated_parquet":
        data = (bad / "heads.parquet").read_bytes()
        (bad / "heads.parquet").write_bytes(data[: len(data) // 3])
        expect = "corrupt report"
    elif damage == "bad_json":
        (bad / "manifest.json").write_text("{not json")
        expect = "not valid JSON"
    elif damage == "old_schema":
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["schema_version"] = 0
        (bad / "manifest.json").write_text(json.dumps(manifest))
        expect = "schema version 0"
    else:
        (bad / "manifest.json").unlink()
        expect = "is not a probe report"
    before = snapshot(bad)
    at = start(monkeypatch, report=bad, root_dir=tmp_path)
    no_exception(at)
    assert any(expect in t for t in texts(at.error)), texts(at.error)
    assert snapshot(bad) == before


def test_empty_prompt_and_unknown_model_are_messages(monkeypatch, root, tiny_folder):
    at = start(monkeypatch, report=root / "tiny_a", root_dir=root, model=tiny_folder)
    at.text_area(key="ab_prompt").set_value("   ")
    at.button(key="ab_run").click().run()
    no_exception(at)
    assert any("prompt is empty" in t for t in texts(at.error)), texts(at.error)

    at.text_area(key="tokens_prompt").set_value("")
    at.button(key="tokens_run").click().run()
    assert sum("prompt is empty" in t for t in texts(at.error)) >= 1

    at.sidebar.text_input(key="model_name").set_value("no-such-model-xyz")
    at.text_area(key="tokens_prompt").set_value("Hello there.")
    at.button(key="tokens_run").click().run()
    no_exception(at)
    assert any("unknown model 'no-such-model-xyz'" in t for t in texts(at.error)), texts(at.error)

    at.sidebar.text_input(key="model_name").set_value("studio-vlm").run()  # named for what it is, not loaded
    assert any("assembled VLM (DINOv2" in t for t in texts(at.sidebar.caption)), texts(at.sidebar.caption)

    at.sidebar.text_input(key="model_name").set_value(str(tiny_folder))
    at.text_area(key="ab_prompt").set_value("The capital of France is")
    at.text_area(key="ab_extra").set_value("mask:L99H0")
    at.button(key="ab_run").click().run()
    no_exception(at)
    assert any("L99H0" in t for t in texts(at.error)), texts(at.error)


def test_live_ab_shows_baseline_and_intervened(monkeypatch, root, tiny_folder):
    import probe

    at = start(monkeypatch, report=root / "tiny_a", root_dir=root)
    assert at.sidebar.text_input(key="model_name").value == str(tiny_folder)  # the report's own model
    at.checkbox(key="ab_act").uncheck()
    at.text_input(key="ab_masks").set_value("L1H0 L2H3")
    at.selectbox(key="ab_mode").set_value("zero")
    at.slider(key="ab_tokens").set_value(6)
    at.button(key="ab_run").click().run()
    no_exception(at)
    assert not at.error, texts(at.error)
    import html as htmllib
    import re

    from interventions import intervene, parse_spec

    page = htmllib.unescape(re.sub(r"<[^>]+>", "", " | ".join(str(h.proto.body) for h in at.get("html"))))
    handle = probe.load(str(tiny_folder), device="cpu")
    enc = handle.encode("The capital of France is")

    def greedy():
        with torch.no_grad():
            out = handle.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=handle.tokenizer.eos_token_id)
        return handle.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    baseline = greedy()
    with intervene(handle, parse_spec("mask:L1H0,L2H3:mode=zero")):
        edited = greedy()
    assert f"{baseline} | {edited}" in page, (baseline, edited, page)
    assert any("mask:L1H0,L2H3:mode=zero" in t for t in texts(at.markdown))
    assert any(t.startswith("Identical generations") or "diverge at new token" in t for t in texts(at.caption))


def test_tokens_view_and_attention_viewer(monkeypatch, root, tiny_folder):
    import probe

    at = start(monkeypatch, report=root / "tiny_a", root_dir=root)
    at.text_area(key="tokens_prompt").set_value(PROMPTS[1])
    at.button(key="tokens_run").click().run()
    no_exception(at)
    assert not at.error, texts(at.error)
    handle = probe.load(str(tiny_folder), device="cpu")
    n_tokens = handle.encode(PROMPTS[1])["input_ids"].shape[1]
    token_html = [str(h.proto.body) for h in at.get("html") if "received" in str(h.proto.body)]
    assert token_html and token_html[0].count("<span title=") == n_tokens
    assert "tokens_profile" in " ".join(chart_keys(at))
    for scope in ("layer", "head"):
        at.radio(key="tokens_scope").set_value(scope).run()
        no_exception(at)

    at.text_area(key="attn_prompt").set_value("The capital of France is Paris.")
    at.button(key="attn_run").click().run()
    no_exception(at)
    keys = " ".join(chart_keys(at))
    assert "attn_map" in keys and "attn_profile" in keys

    at.text_area(key="attn_prompt").set_value(" ".join(PROMPTS * 4))  # > FULL_MAP_LIMIT tokens
    at.button(key="attn_run").click().run()
    no_exception(at)
    keys = " ".join(chart_keys(at))
    assert "attn_map" not in keys and "attn_profile" in keys
    assert any("too long for a full map" in t for t in texts(at.info))


def test_token_attention_matches_a_direct_capture(tiny_folder):
    import probe

    handle = probe.load(str(tiny_folder), device="cpu")
    ta = live.token_attention(handle, PROMPTS[0])
    with torch.no_grad(), probe.capture(handle, stats=("received",)) as rec:
        handle.model(**handle.encode(PROMPTS[0]), use_cache=False)
    assert ta.received.shape == (handle.n_layers, handle.n_heads, len(ta.tokens))
    torch.testing.assert_close(torch.from_numpy(ta.received[1, 2]), rec.layer(1).received_mean[0, 2])
    assert ta.scores("average").shape == (len(ta.tokens),)
    ha = live.head_attention(handle, PROMPTS[0], 1, 2)
    assert ha.full and ha.probs.shape == (len(ta.tokens), len(ta.tokens))
    torch.testing.assert_close(torch.from_numpy(ha.probs.sum(-1)), torch.ones(len(ta.tokens)), atol=1e-4, rtol=0)


def test_compare_two_reports(monkeypatch, root):
    at = start(monkeypatch, report=root / "tiny_a", root_dir=root)
    no_exception(at)
    keys = " ".join(chart_keys(at))
    assert "cmp_A" in keys and "cmp_B" in keys and "cmp_diff" in keys
    assert at.selectbox(key="cmp_b").value == str(root / "tiny_b")


def test_build_specs_and_tables_logic(root):
    assert live.build_specs(act=True, act_beta=0.3, masks="l18h6, L20H6", mask_mode="mean", scales="L3H2",
                            scale_alpha=1.5, extra="sinkwindow:sinks=4,window=64\n") == [
        "act:beta=0.3", "mask:L18H6,L20H6:mode=mean", "scale:L3H2:alpha=1.5", "sinkwindow:sinks=4,window=64"]
    assert live.build_specs() == []
    rep = read_report(root / "tiny_a")
    assert reports.extra_tables(rep) == {}
    assert reports.list_reports(root) == [root / "tiny_a", root / "tiny_b"]
    assert reports.loadable_model(rep.manifest) == rep.manifest["model"]["source"]


def test_probe_app_command_line(root, tmp_path, capsys):
    from app.commands import streamlit_command
    from probe.cli import main

    cmd = streamlit_command(8600, root / "tiny_a", root)
    line = " ".join(cmd)
    assert "--server.address 127.0.0.1" in line and "--server.headless true" in line
    assert "--browser.gatherUsageStats false" in line and cmd[cmd.index("--report") + 1] == str(root / "tiny_a")
    with pytest.raises(SystemExit) as exc:
        main(["app", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "no report directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def arith_report(tmp_path_factory, tiny_folder):
    """A real sinks + arithmetic scan of the tiny model, plus a real head-ablation curve (top-K vs random-K
    mean-ablated heads, ``probe.causal.arithmetic.ablation``) stored as an extra table."""
    import probe
    from probe.causal.arithmetic import ablation
    from probe.data.arithmetic import make_prompts
    from probe.report import Report, write_report
    from probe.scanner import scan

    handle = probe.load(str(tiny_folder), device="cpu")
    rep = scan(handle, PROMPTS[:1], detect=["sinks", "arithmetic"],
               options={"arithmetic": {"n": 4, "operators": ["+"], "shots": 1}})
    items = make_prompts(["+"], 4, shots=1, counterfactual="operands", seed=0)
    curve = ablation(handle, items, rep.heads, ks=(2, 4), draws=2)
    out = tmp_path_factory.mktemp("arith_root") / "tiny_arith"
    write_report(Report({**rep.tables, "masking": curve}, rep.manifest), out)
    return out


def test_tables_show_what_the_report_has(monkeypatch, arith_report, root):
    at = start(monkeypatch, report=arith_report, root_dir=arith_report.parent)
    no_exception(at)
    assert not at.error, texts(at.error)
    assert "Tables" in [t.label for t in at.tabs]
    heads = texts(at.subheader)
    assert "Top heads by arithmetic_effect" in heads and "masking.parquet" in heads and "arithmetic_mlp.parquet" in heads
    assert "Top heads by retrieval_score" not in heads
    keys = " ".join(chart_keys(at))
    assert "curve_masking" in keys and "curve_arithmetic_mlp" in keys
    rep = read_report(arith_report)
    top = next(d.value for d in at.dataframe if "arithmetic_effect" in d.value.columns and "layer" in d.value.columns)
    best = rep.heads.nlargest(1, "arithmetic_effect").iloc[0]
    assert (int(top["layer"].iloc[0]), int(top["head"].iloc[0])) == (int(best["layer"]), int(best["head"]))

    at = start(monkeypatch, report=root / "tiny_a", root_dir=root)  # sinks only: no arithmetic / curve sections
    heads = texts(at.subheader)
    assert not any("arithmetic" in h or "masking" in h for h in heads), heads
