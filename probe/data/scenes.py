"""Multi-object scenes from Fashion-MNIST items, with text a VLM can be trained and tested on.

A scene is a 112x112 grayscale canvas cut into a 2x2 grid of 56x56 cells; 1-3 cells hold a
Fashion-MNIST item (28x28, upscaled 2x, jittered by up to 4 px), the rest stay black. Classes in
a scene are distinct. Scenes follow four "outfit" themes so that classes co-occur unevenly (what
POPE's adversarial negatives rely on): with probability ``theme_p`` each object is drawn from the
scene's theme, otherwise uniformly from the classes left. ``probe.data.photos.with_backgrounds`` can put a
real photo crop behind the items (texture only: photos are never named, so the text does not change).

Text (all answers begin with a space, as continuations):
  caption   "Describe the image."                 -> " A sneaker at the top left and a bag at the bottom right."
  exists    "Is there a {noun} in the image? Answer:" -> " Yes" / " No"
  where     "What is at the {position}? Answer:"  -> " A sneaker" / " Nothing"

POPE-style questions (Li et al. 2023): for each scene one "yes" question about a present object
and one "no" question about an absent class chosen at random, by popularity (most frequent
training classes first) or adversarially (the absent class that co-occurs most often with the
scene's objects in the training scenes). CHAIR-style scoring (Rohrbach et al. 2018) reads the
class nouns a generated caption mentions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .images import FASHION_MNIST_CLASSES

CANVAS = 112
CELL = 56
POSITIONS = ("top left", "top right", "bottom left", "bottom right")   # cell index = row * 2 + col
NOUNS = ("T-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle boot")
THEMES = {          # class indices (FASHION_MNIST_CLASSES order); weights below
    "casual": (0, 1, 7),      # T-shirt, trousers, sneaker
    "summer": (3, 5, 8),      # dress, sandal, bag
    "winter": (4, 2, 9),      # coat, pullover, ankle boot
    "office": (6, 1, 8),      # shirt, trousers, bag
}
THEME_WEIGHTS = (0.35, 0.25, 0.25, 0.15)
CAPTION_PROMPT = "Describe the image."
EXISTS_PROMPT = "Is there a {noun} in the image? Answer:"
WHERE_PROMPT = "What is at the {position}? Answer:"
# Words a caption may use for each class (lower case); longest first so "ankle boot" wins over "boot".
MENTIONS = {
    0: ("t-shirts", "t-shirt", "tshirt"), 1: ("pair of trousers", "trousers", "pants"), 2: ("pullovers", "pullover", "sweater"),
    3: ("dresses", "dress"), 4: ("coats", "coat"), 5: ("sandals", "sandal"), 6: ("shirts", "shirt"),
    7: ("sneakers", "sneaker"), 8: ("bags", "bag"), 9: ("ankle boots", "ankle boot", "boots", "boot"),
}


@dataclass
class Scene:
    """One canvas: ``objects[k] = (class index, cell index)``, sorted by cell."""

    image: np.ndarray                       # uint8 [112, 112]
    objects: list[tuple[int, int]]
    theme: str
    sources: list[int] = field(default_factory=list)   # Fashion-MNIST row of each object
    background: str | None = None                       # photo behind the items (probe.data.photos), if any

    @property
    def classes(self) -> set[int]:
        return {c for c, _ in self.objects}


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def caption(scene: Scene) -> str:
    """" A sneaker at the top left and a bag at the bottom right." (objects in cell order)."""
    parts = [f"{article(NOUNS[c])} at the {POSITIONS[p]}" for c, p in scene.objects]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return " " + text[0].upper() + text[1:] + "."


def where_answer(scene: Scene, cell: int) -> str:
    found = [c for c, p in scene.objects if p == cell]
    return " " + (article(NOUNS[found[0]]).capitalize() if found else "Nothing")


def compose(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator, theme_p: float = 0.8,
            n_objects: Sequence[int] = (1, 2, 3), by_class: dict | None = None) -> Scene:
    """One scene from a pool of Fashion-MNIST items (uint8 [N, 28, 28]) and labels [N].

    ``by_class``: {class: row indices of ``labels`` == class}, precomputed (the same scene, faster)."""
    theme = list(THEMES)[rng.choice(len(THEMES), p=THEME_WEIGHTS)]
    k = int(rng.choice(n_objects))
    classes: list[int] = []
    for _ in range(k):
        pool = [c for c in THEMES[theme] if c not in classes] if rng.random() < theme_p else []
        if not pool:
            pool = [c for c in range(10) if c not in classes]
        classes.append(int(rng.choice(pool)))
    cells = sorted(rng.choice(4, size=k, replace=False).tolist())
    rng.shuffle(classes)
    image = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    objects, sources = [], []
    for c, cell in zip(classes, cells):
        rows = by_class[c] if by_class is not None else np.flatnonzero(labels == c)
        src = int(rows[rng.integers(len(rows))])
        big = items[src].repeat(2, 0).repeat(2, 1)                           # [56, 56]
        dy, dx = rng.integers(-4, 5, size=2)
        r0, c0 = (cell // 2) * CELL, (cell % 2) * CELL
        shifted = np.roll(np.roll(big, int(dy), 0), int(dx), 1)
        image[r0:r0 + CELL, c0:c0 + CELL] = np.maximum(image[r0:r0 + CELL, c0:c0 + CELL], shifted)
        objects.append((c, cell))
        sources.append(src)
    order = np.argsort([p for _, p in objects])
    return Scene(image, [objects[i] for i in order], theme, [sources[i] for i in order])


def make_scenes(items: np.ndarray, labels: np.ndarray, n: int, seed: int, theme_p: float = 0.8) -> list[Scene]:
    """n scenes, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in range(10)}
    return [compose(items, labels, rng, theme_p, by_class=by_class) for _ in range(n)]


def statistics(scenes: Sequence[Scene]) -> tuple[np.ndarray, np.ndarray]:
    """(class frequency [10], co-occurrence counts [10, 10], diagonal 0) over scenes."""
    freq = np.zeros(10)
    co = np.zeros((10, 10))
    for s in scenes:
        cls = sorted(s.classes)
        for a in cls:
            freq[a] += 1
            for b in cls:
                if a != b:
                    co[a, b] += 1
    return freq, co


def pope_questions(scenes: Sequence[Scene], freq: np.ndarray, co: np.ndarray, seed: int) -> dict[str, list[dict]]:
    """POPE splits {"random", "popular", "adversarial"}: per scene one yes and one no question.

    The yes question (a present class, seeded) is the same in all three splits; the no question's class
    is absent from the scene and chosen uniformly / by training frequency / by training co-occurrence
    with the scene's classes (ties broken by frequency, then class index). Each question:
    {"scene", "cls", "noun", "answer" ("yes"/"no"), "split"}.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {"random": [], "popular": [], "adversarial": []}
    by_pop = sorted(range(10), key=lambda c: (-freq[c], c))
    for i, s in enumerate(scenes):
        present = sorted(s.classes)
        absent = [c for c in range(10) if c not in s.classes]
        yes = int(rng.choice(present))
        rand_no = int(rng.choice(absent))
        pop_no = next(c for c in by_pop if c in absent)
        adv_no = min(absent, key=lambda c: (-sum(co[p, c] for p in present), -freq[c], c))
        for split, no in (("random", rand_no), ("popular", pop_no), ("adversarial", adv_no)):
            for cls, ans in ((yes, "yes"), (no, "no")):
                out[split].append({"scene": i, "cls": cls, "noun": NOUNS[cls], "answer": ans, "split": split})
    return out


_MENTION_RE = [(c, re.compile(r"\b" + re.escape(w) + r"\b")) for c, words in MENTIONS.items() for w in words]


def mentioned(text: str) -> list[int]:
    """Class indices a caption mentions, in order of first mention (each class once).

    Longer phrases are matched first and their characters removed, so "ankle boot" counts once and
    "T-shirt" is not also a "shirt".
    """
    low = text.lower()
    hits: list[tuple[int, int]] = []
    for c, rx in sorted(_MENTION_RE, key=lambda t: -len(t[1].pattern)):
        for m in rx.finditer(low):
            hits.append((m.start(), c))
        low = rx.sub(lambda m: " " * len(m.group(0)), low)
    seen: list[int] = []
    for _, c in sorted(hits):
        if c not in seen:
            seen.append(c)
    return seen


def chair(captions: Sequence[str], scenes: Sequence[Scene]) -> dict:
    """CHAIR_i (hallucinated mentions / mentions), CHAIR_s (captions with one / captions), recall
    (present objects mentioned / present objects), over paired captions and scenes."""
    mentions = halluc = bad_caps = present = covered = 0
    for text, s in zip(captions, scenes):
        said = mentioned(text)
        wrong = [c for c in said if c not in s.classes]
        mentions += len(said)
        halluc += len(wrong)
        bad_caps += bool(wrong)
        present += len(s.classes)
        covered += len(s.classes & set(said))
    n = len(captions)
    return {"chair_i": halluc / max(1, mentions), "chair_s": bad_caps / max(1, n), "recall": covered / max(1, present),
            "mentions": mentions, "hallucinated": halluc, "captions": n, "captions_with_hallucination": bad_caps}
