"""Labelled tasks for the ACT head search, from gensim's offline test data (assets.md §3.2).

- "sentiment": ``pang_lee_polarity.cor``, 200 movie-review sentences (100 pos / 100 neg); prompt
  "Sentence: {x}\\nSentiment:", labels " negative" / " positive" (ACT's zero-shot template; the
  label token carries its leading space, as SmolLM2's BPE expects).
- "capitals": ``questions-words.txt`` section capital-world, unique (country, capital) pairs; prompt
  "The capital of {country} is", candidates: every capital whose first token is unique.

Scoring as the paper: argmax over the candidates' (first-token) next-token logits at the last position.
The files are read from an installed gensim, else from the gensim wheel (``pip download --no-deps``),
and cached under the probe cache (``texts/gensim``).
"""
from __future__ import annotations

import random
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError
from probe.models.cache import cache_root

TASKS = ("sentiment", "capitals")
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


def capitals(tokenizer) -> Task:
    pairs, on = {}, False
    for line in gensim_file("questions-words.txt").read_text().splitlines():
        if line.startswith(":"):
            on = line.strip() == ": capital-world"
            continue
        if on:
            a, b, c, d = line.split()
            pairs[b], pairs[d] = a, c          # lines read "capital country capital country"
    caps = sorted(set(pairs.values()))
    first = {c: tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in caps}
    counts: dict = {}
    for c in caps:
        counts[first[c]] = counts.get(first[c], 0) + 1
    labels = [c for c in caps if counts[first[c]] == 1]
    index = {c: i for i, c in enumerate(labels)}
    items = sorted((country, cap) for country, cap in pairs.items() if cap in index)
    return Task("capitals", [f"The capital of {c} is" for c, _ in items], [index[cap] for _, cap in items],
                [" " + c for c in labels])


def load_task(name: str, tokenizer) -> Task:
    if name == "sentiment":
        return sentiment()
    if name == "capitals":
        return capitals(tokenizer)
    raise ProbeError(f"unknown task {name!r}", f"choose from {', '.join(TASKS)}")
