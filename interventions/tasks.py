"""Labelled tasks for the ACT head search, from gensim's offline test data (assets.md §3.2).

- "sentiment": ``pang_lee_polarity.cor``, 200 movie-review sentences (100 pos / 100 neg); prompt
  "Sentence: {x}\\nSentiment:", labels " negative" / " positive" (ACT's zero-shot template; the
  label token carries its leading space, as SmolLM2's BPE expects).
- "capitals": ``questions-words.txt`` section capital-world, unique (country, capital) pairs; prompt
  "The capital of {country} is", candidates: every capital whose first token is unique.
- "currencies": ``questions-words.txt`` section currency, unique (country, currency) pairs; prompt
  "The currency of {country} is the", candidates: every currency whose first token is unique (the
  same code as capitals). Only 30 pairs exist and 6 currencies share a first token with another
  (krona/krone/kuna/kwanza -> " k", rial/riel -> " r" on SmolLM2), so 24 questions over 22 candidates.
- "topic": ``mini_newsgroup``, 200 Usenet posts, 100 alt.atheism / 100 sci.space (20 Newsgroups via
  scikit-learn). The file is a zlib-compressed *pickle* of a scikit-learn ``Bunch`` (Python 2,
  protocol 0). It is unpickled once, by ``_RestrictedUnpickler`` (the Bunch class, whatever module the
  pickle names, becomes a plain dict subclass; otherwise only dict/list-like builtins, copyreg's
  ``_reconstructor`` and numpy array reconstruction; anything else is refused with a ProbeError, so
  scikit-learn is not needed and no code in the file can run), and written to ``mini_newsgroup.jsonl``
  beside the cached file ({"text": raw post, "label": newsgroup, "file": ...}); later loads read only
  the JSON lines. Cleaning (``clean_post``): the headers are dropped except the Subject (its "Re:"
  removed) — "Newsgroups:", "Path:", "Xref:" ... name the label; quoted lines (">", "|"), attribution
  lines ("In article ... writes:"), the signature (from a "--" line), e-mail addresses and the two
  group names are removed, and so are header lines of forwarded mail; whitespace is collapsed. Each post is "Subject. body", cut at a word
  boundary to at most ``TOPIC_TOKENS`` (60) tokens of the model's tokenizer. Prompt
  "Post: {text}\nTopic:", labels " religion" / " space" (alt.atheism / sci.space; one token each on
  SmolLM2, and the words a zero-shot reader would use: "atheism" would name the group itself).

Scoring as the paper: argmax over the candidates' (first-token) next-token logits at the last position.
The files are read from an installed gensim, else from the gensim wheel (``pip download --no-deps``),
and cached under the probe cache (``texts/gensim``).
"""
from __future__ import annotations

import io
import json
import pickle
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError
from probe.models.cache import cache_root

TASKS = ("sentiment", "capitals", "currencies", "topic")
TOPIC_TOKENS = 60
TOPIC_LABELS = {"alt.atheism": " religion", "sci.space": " space"}
_GENSIM = "gensim==4.4.0"


@dataclass
class Task:
    """Prompts with gold label indices into ``labels`` (the candidate continuations)."""

    name: str
    prompts: list[str]
    gold: list[int]
    labels: list[str]

    def split(self, dev: int, test: int, seed: int = 0) -> tuple["Task", "Task"]:
        """Shuffled, disjoint dev / test subsets."""
        order = list(range(len(self.prompts)))
        random.Random(seed).shuffle(order)
        if dev + test > len(order):
            raise ProbeError(f"task {self.name} has {len(order)} examples, asked for dev {dev} + test {test}",
                             "lower --dev-size / --test-size")
        pick = lambda idx: Task(self.name, [self.prompts[i] for i in idx], [self.gold[i] for i in idx], self.labels)  # noqa: E731
        return pick(order[:dev]), pick(order[dev:dev + test])


def gensim_file(name: str) -> Path:
    """Path of ``gensim/test/test_data/<name>`` (installed gensim, cached copy, or the wheel)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name
        if p.exists():
            return p
    folder = cache_root() / "texts" / "gensim"
    target = folder / name
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("gensim-*.whl"))
    if not wheels:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", _GENSIM, "-d", str(folder)],
                             capture_output=True, text=True)
        wheels = sorted(folder.glob("gensim-*.whl"))
        if run.returncode or not wheels:
            raise ProbeError(f"could not fetch the gensim wheel: {run.stderr.strip()[-200:]}",
                             f"pip install {_GENSIM} (or copy its wheel into {folder})")
    with zipfile.ZipFile(wheels[-1]) as z:
        target.write_bytes(z.read(f"gensim/test/test_data/{name}"))
    return target


def sentiment() -> Task:
    prompts, gold = [], []
    for line in gensim_file("pang_lee_polarity.cor").read_text(encoding="utf-8", errors="replace").splitlines():
        label, _, text = line.strip().partition(" ")
        if label in ("__label__neg", "__label__pos") and text:
            prompts.append(f"Sentence: {text.strip()}\nSentiment:")
            gold.append(int(label == "__label__pos"))
    return Task("sentiment", prompts, gold, [" negative", " positive"])


def _analogy_pairs(section: str, key: int) -> dict[str, str]:
    """{subject: answer} from one ``questions-words.txt`` section. Lines hold two (a, b) pairs;
    ``key`` is the column of the subject inside a pair (capital-world: "capital country" -> 1,
    currency: "country currency" -> 0)."""
    pairs, on = {}, False
    for line in gensim_file("questions-words.txt").read_text().splitlines():
        if line.startswith(":"):
            on = line.strip() == f": {section}"
            continue
        if on:
            w = line.split()
            for a, b in ((w[0], w[1]), (w[2], w[3])):
                subject, answer = (a, b) if key == 0 else (b, a)
                pairs[subject] = answer
    if not pairs:
        raise ProbeError(f"no section ': {section}' in questions-words.txt", "delete the cached copy under the probe cache (texts/gensim) to refetch it")
    return pairs


def cloze(name: str, pairs: dict[str, str], template: str, tokenizer) -> Task:
    """Cloze task over (subject -> answer) pairs: candidates are the distinct answers whose first token
    (with its leading space) no other answer shares; questions whose answer was dropped are left out."""
    answers = sorted(set(pairs.values()))
    first = {c: tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in answers}
    counts: dict = {}
    for c in answers:
        counts[first[c]] = counts.get(first[c], 0) + 1
    labels = [c for c in answers if counts[first[c]] == 1]
    index = {c: i for i, c in enumerate(labels)}
    items = sorted((subject, ans) for subject, ans in pairs.items() if ans in index)
    return Task(name, [template.format(s) for s, _ in items], [index[a] for _, a in items], [" " + c for c in labels])


def capitals(tokenizer) -> Task:
    return cloze("capitals", _analogy_pairs("capital-world", key=1), "The capital of {} is", tokenizer)


def currencies(tokenizer) -> Task:
    return cloze("currencies", _analogy_pairs("currency", key=0), "The currency of {} is the", tokenizer)


# ---------------------------------------------------------------------------------------------
# topic: mini_newsgroup (a pickled scikit-learn Bunch) -> JSON lines -> prompts

class _Bunch(dict):
    """Stand-in for scikit-learn's ``Bunch`` (a dict with attribute access)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err


_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "object", "str", "bytes", "bytearray",
                  "int", "float", "complex", "bool"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a scikit-learn ``Bunch`` of lists / numpy arrays and nothing else.

    ``find_class`` maps any ``*.Bunch`` of a ``sklearn`` module to ``_Bunch``; allows plain builtins
    (``__builtin__`` / ``builtins``), ``copy_reg._reconstructor`` and ``numpy`` ndarray / dtype /
    ``multiarray._reconstruct`` / ``multiarray.scalar``; every other global raises ProbeError before
    it is looked up, so nothing named in the file can be called.
    """

    def find_class(self, module: str, name: str):
        import copyreg

        import numpy

        if name == "Bunch" and module.split(".")[0] == "sklearn":
            return _Bunch
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(numpy, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            core = getattr(numpy, "_core", None) or numpy.core
            return getattr(core.multiarray, name)
        raise ProbeError(f"refusing to unpickle {module}.{name}",
                         "the pickle names a class outside the allowed set (a scikit-learn Bunch of lists and numpy arrays)")


def restricted_loads(data: bytes):
    """``pickle.loads`` through ``_RestrictedUnpickler`` (latin-1 for Python 2 numpy pickles)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ProbeError:
        raise
    except Exception as err:   # truncated / corrupt stream
        raise ProbeError(f"could not unpickle: {type(err).__name__}: {err}", "delete the cached file to refetch it") from err


def _as_text(x) -> str:
    return x.decode("utf-8", errors="replace") if isinstance(x, (bytes, bytearray)) else str(x)


def newsgroup_jsonl() -> Path:
    """``mini_newsgroup.jsonl`` beside the cached ``mini_newsgroup`` (converted once from the pickle)."""
    import zlib

    out = cache_root() / "texts" / "gensim" / "mini_newsgroup.jsonl"
    if out.exists():
        return out
    src = gensim_file("mini_newsgroup")
    try:
        raw = zlib.decompress(src.read_bytes())
    except zlib.error as err:
        raise ProbeError(f"{src} is not zlib-compressed ({err})", "delete it to refetch it from the gensim wheel") from err
    bunch = restricted_loads(raw)
    if not isinstance(bunch, dict) or not {"data", "target", "target_names"} <= set(bunch):
        raise ProbeError(f"{src}: expected a Bunch with data / target / target_names", "delete it to refetch it")
    names = [_as_text(n) for n in bunch["target_names"]]
    files = bunch.get("filenames")
    rows = []
    for i, (text, target) in enumerate(zip(bunch["data"], bunch["target"])):
        f = _as_text(files[i]).split("test_data/mini/")[-1] if files is not None else str(i)
        rows.append(json.dumps({"text": _as_text(text), "label": names[int(target)], "file": f}, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


_ATTRIBUTION = re.compile(r"^(in article|in <)|\b(writes|wrote|says)\s*:\s*$", re.I)
_EMAIL = re.compile(r"\S*@\S+")
_HEADER = re.compile(r"^(from|to|cc|newsgroups|subject|message-id|organi[sz]ation|date|path|lines|references|sender|"
                     r"reply-to|distribution|keywords|summary|xref|nntp-posting-host|article-i\.d\.|followup-to|"
                     r"in-reply-to|expires|approved|x-[a-z-]+)\s*:", re.I)
_GROUPS = re.compile(r"\b(alt\.atheism|sci\.space)\b", re.I)


def clean_post(post: str) -> str:
    """Usenet post -> "Subject. body" on one line (see the module doc)."""
    head, _, body = post.partition("\n\n")
    subject = ""
    for line in head.splitlines():
        if line.lower().startswith("subject:"):
            subject = re.sub(r"^([>\s]|re:)+", "", line[8:].strip(), flags=re.I)
    keep = []
    for line in body.splitlines():
        s = line.strip()
        if s in ("--", "-- "):
            break                                   # signature
        if s.startswith((">", "|", ":")) or _ATTRIBUTION.search(s) or _HEADER.match(s):
            continue
        keep.append(s)
    text = " ".join(keep)
    text = _GROUPS.sub("", _EMAIL.sub("", text))
    subject = _GROUPS.sub("", _EMAIL.sub("", subject)).strip()
    if subject and subject[-1] not in ".?!":
        subject += "."
    return re.sub(r"\s+", " ", f"{subject} {text}").strip()


def truncate_tokens(text: str, tokenizer, n: int) -> str:
    """At most ``n`` tokens of ``text``, cut at a word boundary when it is cut."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= n:
        return text
    cut = tokenizer.decode(ids[:n])
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip()      # drop a possibly split last word


def topic(tokenizer, max_tokens: int = TOPIC_TOKENS) -> Task:
    labels = list(TOPIC_LABELS)
    prompts, gold = [], []
    for line in newsgroup_jsonl().read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["label"] not in TOPIC_LABELS:
            raise ProbeError(f"mini_newsgroup.jsonl: unexpected label {row['label']!r}", "delete it to rebuild it")
        text = truncate_tokens(clean_post(row["text"]), tokenizer, max_tokens)
        prompts.append(f"Post: {text}\nTopic:")
        gold.append(labels.index(row["label"]))
    return Task("topic", prompts, gold, [TOPIC_LABELS[n] for n in labels])


def load_task(name: str, tokenizer) -> Task:
    if name == "sentiment":
        return sentiment()
    if name == "capitals":
        return capitals(tokenizer)
    if name == "currencies":
        return currencies(tokenizer)
    if name == "topic":
        return topic(tokenizer)
    raise ProbeError(f"unknown task {name!r}", f"choose from {', '.join(TASKS)}")
