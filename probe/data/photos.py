"""Real photos as background texture for the multi-object scenes (``probe.data.scenes``).

Two disjoint sets, split by source so that the test photos are never seen in training:
- ``TRAIN_PHOTOS``: photos that scikit-image ships (``skimage/data``);
- ``TEST_PHOTOS``: sample photos of Debian's ``opencv-doc`` (``/usr/share/doc/opencv-doc/examples/data``).
Synthetic images (chessboards, logos, colour charts, binary masks) are left out.

The photos are never named in the scene text: a background is texture behind the Fashion-MNIST items
(``with_backgrounds``), so every noun a caption or question uses keeps held-out test instances (t10k items)
and a photo can be neither a POPE object nor a CHAIR mention.
"""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

TRAIN_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
                "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")
TEST_PHOTOS = ("baboon.jpg", "fruits.jpg", "starry_night.jpg", "butterfly.jpg", "HappyFish.jpg", "smarties.png",
               "board.jpg", "aloeL.jpg", "leuvenA.jpg", "home.jpg", "orange.jpg", "messi5.jpg", "squirrel_cls.jpg",
               "basketball2.png", "stuff.jpg", "building.jpg", "box_in_scene.png", "graf1.png")
OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SHORT_SIDE = 224          # photos are stored grayscale with this short side (crops are taken from that)


def skimage_data_dir() -> Path | None:
    """scikit-image's ``skimage/data`` folder if the package is installed (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if d.is_dir() else None


def photo_dir(split: str) -> Path | None:
    """Where the ``split`` ("train": scikit-image, "test": opencv-doc) photos are installed, or None."""
    d = skimage_data_dir() if split == "train" else OPENCV_DOC_DATA
    return d if d is not None and d.is_dir() else None


def load_photos(split: str, folder: str | Path | None = None, short_side: int = SHORT_SIDE) -> dict[str, np.ndarray]:
    """{name: grayscale uint8 [H, W]} of the ``split``'s photos, resized (bilinear) to ``short_side``.

    ``folder``: where the files are (default: the installed package, ``photo_dir``).
    Raises FileNotFoundError naming the package to install when a photo is missing.
    """
    from PIL import Image

    names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
    folder = Path(folder) if folder is not None else photo_dir(split)
    package = "scikit-image (pip)" if split == "train" else "opencv-doc (apt)"
    if folder is None:
        raise FileNotFoundError(f"{split} photos need {package}")
    out = {}
    for n in names:
        p = folder / n
        if not p.is_file():
            raise FileNotFoundError(f"{p} missing: the {split} photos need {package}")
        im = Image.open(p).convert("L")
        s = short_side / min(im.size)
        im = im.resize((max(short_side, round(im.size[0] * s)), max(short_side, round(im.size[1] * s))),
                       Image.BILINEAR)
        out[n] = np.asarray(im, dtype=np.uint8)
    return out


def background(photo: np.ndarray, size: int, rng: np.random.Generator, contrast: tuple[float, float]) -> np.ndarray:
    """A random square crop of ``photo`` (side 50-100 % of its short side), resized to ``size``, randomly
    mirrored, its intensity scaled by a factor drawn from ``contrast``: uint8 [size, size]."""
    from PIL import Image

    h, w = photo.shape
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out * rng.uniform(*contrast), 0, 255).astype(np.uint8)


def with_backgrounds(scenes: Sequence, photos: dict[str, np.ndarray], p: float, seed: int,
                     contrast: tuple[float, float] = (0.3, 0.7)) -> list:
    """Copies of ``scenes`` where each scene, with probability ``p``, gets a photo crop as background.

    The items stay as they are (a pixel of an item, i.e. > 0 on the black canvas, is kept); the empty canvas
    shows the photo. Objects, text and questions do not change, so the same POPE questions apply.
    ``scene.background`` records the photo's name (None without one). Reproducible from ``seed``.
    """
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    out = []
    for s in scenes:
        if rng.random() >= p:
            out.append(s)
            continue
        name = names[int(rng.integers(len(names)))]
        bg = background(photos[name], s.image.shape[0], rng, contrast)          # [S, S]
        out.append(replace(s, image=np.where(s.image > 0, s.image, bg), background=name))
    return out
