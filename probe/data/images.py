"""Offline image data: Fashion-MNIST from Debian's `dataset-fashion-mnist`, scikit-image sample photos.

Nothing here downloads. Fashion-MNIST is read from the IDX files that the Debian package installs
(`/usr/share/datasets/fashion-mnist/`) or from a cache folder (`$PROBE_FASHION_MNIST_DIR`, or
`~/.cache/probe/fashion-mnist/`, laid out either flat or as an unpacked `dpkg -x` tree).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DEB_SUBDIR = Path("usr/share/datasets/fashion-mnist")
_INSTALL_HINT = (
    "Fashion-MNIST not found. Install it with `apt-get install -y dataset-fashion-mnist` "
    "(puts the IDX files under /usr/share/datasets/fashion-mnist/), or without root: "
    "`apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb ~/.cache/probe/fashion-mnist`, "
    "or point $PROBE_FASHION_MNIST_DIR at a folder holding the *-idx?-ubyte.gz files."
)


def _candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("PROBE_FASHION_MNIST_DIR")
    if env:
        dirs += [Path(env), Path(env) / _DEB_SUBDIR]
    dirs.append(Path("/") / _DEB_SUBDIR)
    cache = Path(os.environ.get("PROBE_CACHE_DIR", Path.home() / ".cache" / "probe")) / "fashion-mnist"
    dirs += [cache, cache / _DEB_SUBDIR]
    return dirs


def find_fashion_mnist() -> Path:
    """Return the folder holding the four Fashion-MNIST IDX files; raise FileNotFoundError naming the fix."""
    needed = [f for pair in _FILES.values() for f in pair]
    for d in _candidate_dirs():
        if all((d / f).is_file() for f in needed):
            return d
    searched = ", ".join(str(d) for d in _candidate_dirs())
    raise FileNotFoundError(f"{_INSTALL_HINT} Searched: {searched}")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split.

    Args:
        split: "train" (60,000 images) or "test" (10,000 images; the t10k file).
    Returns:
        images: uint8 [N, 28, 28] (white item on black), labels: int64 [N] in 0..9
        (names in FASHION_MNIST_CLASSES).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = find_fashion_mnist()
    img_file, lab_file = _FILES[split]
    images = _read_idx(root / img_file)  # [N, 28, 28] uint8
    labels = _read_idx(root / lab_file).astype(np.int64)  # [N]
    return images, labels


def fashion_subset(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random subset without replacement.

    Returns images uint8 [n, 28, 28], labels int64 [n], and the indices int64 [n] into the split.
    """
    images, labels = load_fashion_mnist(split)
    idx = np.random.default_rng(seed).choice(len(labels), size=n, replace=False)  # [n]
    return images[idx], labels[idx], idx


def skimage_photo(name: str = "astronaut") -> np.ndarray:
    """A scikit-image sample photo as uint8 [H, W, 3] (grayscale photos are stacked to 3 channels)."""
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("scikit-image is needed for sample photos: `pip install scikit-image`") from e
    img = np.asarray(getattr(skdata, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)  # [H, W, 3]
    return img[..., :3]
