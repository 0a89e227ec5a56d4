"""ACT head-search tasks on real offline data (gensim test files): topic (mini_newsgroup, via a
restricted unpickler), currencies and capitals (questions-words.txt); `probe calibrate --device`."""
from __future__ import annotations

import json
import os
import pickle
from collections import Counter

import pytest
import torch

from probe.errors import ProbeError


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


def _load(fn, *args):
    """The task from gensim's test data (gensim is in the `test` extra): a missing asset fails, never skips."""
    return fn(*args)


def _first(tok, word: str) -> int:
    return tok(word, add_special_tokens=False)["input_ids"][0]


def test_topic_task(tok):
    from interventions.tasks import TOPIC_TOKENS, newsgroup_jsonl, topic

    task = _load(topic, tok)
    assert len(task.prompts) == len(task.gold) == 200
    assert Counter(task.gold) == {0: 100, 1: 100}                 # alt.atheism / sci.space
    assert task.labels == [" religion", " space"]
    assert len({_first(tok, w) for w in task.labels}) == 2
    template = len(tok("Post: \nTopic:", add_special_tokens=False)["input_ids"])
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in task.prompts]
    assert max(lengths) <= TOPIC_TOKENS + template + 2 and min(lengths) > template
    for p in task.prompts:
        assert p.startswith("Post: ") and p.endswith("\nTopic:")
        # the headers that name the label, quoted lines and e-mail addresses are gone
        assert "Newsgroups" not in p and "alt.atheism" not in p and "sci.space" not in p
        assert "@" not in p and "\n>" not in p
    rows = [json.loads(line) for line in newsgroup_jsonl().read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 200 and {r["label"] for r in rows} == {"alt.atheism", "sci.space"}
    assert all(r["file"].split("/")[0] == r["label"] for r in rows)


def test_clean_post():
    from interventions.tasks import clean_post

    post = ("Newsgroups: sci.space\nFrom: someone@nasa.gov (Some One)\nSubject: Re: Re: Shuttle costs\n"
            "Lines: 9\n\nIn article <1@x.edu> other@x.edu writes:\n> quoted text\n>> more quoted\n"
            "How much does a launch cost?\nAsk  sci.space.\n-- \nSome One   |  sig line\n")
    assert clean_post(post) == "Shuttle costs. How much does a launch cost? Ask ."


def test_currencies_task(tok):
    from interventions.tasks import currencies

    task = _load(currencies, tok)
    assert len(task.prompts) >= 20                                 # 30 pairs, minus shared first tokens
    firsts = [_first(tok, w) for w in task.labels]
    assert len(set(firsts)) == len(firsts)
    assert all(0 <= g < len(task.labels) for g in task.gold)
    qa = {p: task.labels[g] for p, g in zip(task.prompts, task.gold)}
    assert qa["The currency of Japan is the"] == " yen"
    assert qa["The currency of USA is the"] == qa["The currency of Canada is the"] == " dollar"
    assert all(p.startswith("The currency of ") and p.endswith(" is the") for p in task.prompts)


def test_capitals_task_unchanged(tok):
    from interventions.tasks import capitals

    task = _load(capitals, tok)
    assert len(task.prompts) == 104 and len(task.labels) == 104
    qa = {p: task.labels[g] for p, g in zip(task.prompts, task.gold)}
    assert qa["The capital of Japan is"] == " Tokyo"
    assert len({_first(tok, w) for w in task.labels}) == len(task.labels)


def test_restricted_unpickler_refuses_code(tmp_path):
    from interventions.tasks import restricted_loads

    marker = tmp_path / "ran"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()                  # protocol 0: os.system(...)
    with pytest.raises(ProbeError, match="refusing to unpickle os.system"):
        restricted_loads(evil)
    with pytest.raises(ProbeError, match="refusing to unpickle"):
        restricted_loads(pickle.dumps(os.system))                             # protocol 5 global
    with pytest.raises(ProbeError, match="refusing to unpickle"):
        restricted_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")
    assert not marker.exists()
    with pytest.raises(ProbeError, match="could not unpickle"):
        restricted_loads(b"(lp0\nI1\n")                                       # truncated


def test_restricted_unpickler_reads_a_bunch():
    from interventions.tasks import restricted_loads

    # Python 2 style, as in mini_newsgroup: copy_reg._reconstructor(Bunch, dict, {...items...})
    data = (b"ccopy_reg\n_reconstructor\n(csklearn.utils._bunch\nBunch\nc__builtin__\ndict\n"
            b"(dS'data'\n(lp0\nVhello\nasS'target_names'\n(lp1\nS'a'\nastR.")
    bunch = restricted_loads(data)
    assert isinstance(bunch, dict) and bunch == {"data": ["hello"], "target_names": ["a"]}
    assert bunch.data == ["hello"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_calibrate_cuda_without_gpu_is_one_line(capsys, tmp_path):
    from probe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--task", "topic", "--device", "cuda", "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "no CUDA device" in err and "--device cpu" in err
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--device", "gpu", "--out", str(tmp_path / "c.json")])
    assert exc.value.code == 2 and "cpu, cuda or cuda:N" in capsys.readouterr().err


def test_calibrate_cli_on_tiny_model(tiny_llama, tmp_path, capsys):
    """The whole command on a random 3-layer Llama (plumbing: device/dtype options, currencies task)."""
    from probe.cli import main

    folder = tmp_path / "tiny"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    out = tmp_path / "cal.json"
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--model", str(folder), "--task", "currencies", "--dev-size", "8", "--test-size", "8",
              "--candidates", "2", "--layers", "1", "--device", "cpu", "--out", str(out)])
        raise SystemExit(0)
    assert exc.value.code == 0, capsys.readouterr().err
    rec = json.loads(out.read_text())
    assert rec["task"] == "currencies" and rec["device"] == "cpu" and rec["dtype"] == "float32"
    assert rec["dev"]["n"] == 8 and rec["test"]["n"] == 8 and "--device cpu" in rec["command"]
    assert rec["preregistered"]["candidates"] == 2 and rec["preregistered"]["layers"] == [1]
    m = rec["test"]["baseline_metrics"]
    assert m["n"] == 8 and m["accuracy"] == pytest.approx(rec["test"]["baseline"])
    printed = capsys.readouterr().out
    assert "test baseline: accuracy" in printed and "log-loss" in printed and "most-predicted label share" in printed
    # a two-label task: AUC and the fraction predicted per label are reported
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--model", str(folder), "--task", "sentiment", "--dev-size", "6", "--test-size", "10",
              "--candidates", "1", "--layers", "1", "--out", str(out)])
        raise SystemExit(0)
    assert exc.value.code == 0, capsys.readouterr().err
    m = json.loads(out.read_text())["test"]["act_metrics"]
    assert 0.0 <= m["auc"] <= 1.0 and m["frac_pred_negative"] + m["frac_pred_positive"] == pytest.approx(1.0)
    assert m["n_negative_as_negative"] + m["n_negative_as_positive"] + m["n_positive_as_negative"] \
        + m["n_positive_as_positive"] == 10
    assert "predicted negative" in capsys.readouterr().out


@pytest.mark.slow
def test_prefix_cache_matches_the_full_forward(smollm2):
    """The search's speed-up: ACT on a head of layer l recomputes only layers l..L-1 from the cached
    residual stream; its label logits must equal the full forward's (and starting later must not)."""
    from interventions import ACT
    from interventions.calibrate import PrefixCache, label_logits
    from interventions.tasks import Task, sentiment

    full = sentiment()
    task = Task(full.name, full.prompts[:6], full.gold[:6], full.labels)
    cache = PrefixCache(smollm2, task, batch_size=3)
    plain = label_logits(smollm2, task, (), batch_size=3)                          # [6, 2]
    assert torch.equal(cache.baseline, plain.argmax(-1))
    torch.testing.assert_close(cache.logits_from(0, ()), plain, rtol=0, atol=1e-4)
    act = (ACT(0.4, 0.1, heads=[(10, 2), (11, 4)]),)
    with_act = label_logits(smollm2, task, act, batch_size=3)
    assert (with_act - plain).abs().max() > 1e-2                                   # ACT moves the logits
    torch.testing.assert_close(cache.logits_from(10, act), with_act, rtol=0, atol=1e-4)
    skipped = cache.logits_from(11, act)                                           # layer 10's edit left out
    assert (skipped - with_act).abs().max() > 1e-3
