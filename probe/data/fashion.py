"""The Fashion-MNIST task studio-vlm's projector was trained on, and its evaluation.

The projector (``studies/vlm/train_projector.py``) learnt two prompts, both with the image first:
``FASHION_QUESTION`` answered by the class name, ``CAPTION_QUESTION`` answered by
``fashion_caption(label)``. ``classify_fashion`` scores the 10 class names as continuations of the
question (``probe.models.studio_vlm.class_logprobs``) and predicts the best one; the same call with
``with_image=False`` is the text-only baseline.
"""
from __future__ import annotations

import numpy as np

from ..models.studio_vlm import IMAGE_TOKEN, class_logprobs
from .images import FASHION_MNIST_CLASSES

FASHION_QUESTION = "What is this item of clothing? Answer:"
CAPTION_QUESTION = "Describe the image."
# Caption targets used in training for CAPTION_QUESTION, by Fashion-MNIST label (index order of
# probe.data.images.FASHION_MNIST_CLASSES): " A small grayscale photo of {noun phrase}."
FASHION_CAPTION_NOUNS = (
    "a T-shirt",
    "a pair of trousers",
    "a pullover",
    "a dress",
    "a coat",
    "a sandal",
    "a shirt",
    "a sneaker",
    "a bag",
    "an ankle boot",
)


def fashion_caption(label: int) -> str:
    """The training caption for a Fashion-MNIST label, with a leading space (a continuation)."""
    return f" A small grayscale photo of {FASHION_CAPTION_NOUNS[label]}."


def fashion_prompt(with_image: bool = True, image_token: str = IMAGE_TOKEN, template: str = "{image}{question}") -> str:
    """The Fashion-MNIST question, image first (the layout studio-vlm was trained on).

    ``template`` lets real checkpoints use their chat format, e.g. llava-1.5:
    "USER: {image}\\n{question} ASSISTANT:". With ``with_image=False`` the image placeholder is removed.
    """
    return template.format(image=image_token if with_image else "", question=FASHION_QUESTION)


def classify_fashion(model, processor, images=None, with_image: bool = True, n: int | None = None,
                     batch_size: int = 16, template: str = "{image}{question}") -> np.ndarray:
    """Predict Fashion-MNIST labels by the highest summed log-prob over the 10 class names.

    Args:
        images: N images (uint8 [N, 28, 28] array or PIL list).
        with_image: False asks the same question with the image removed (text-only; the answer is then
            the same for every image).
        n: row count for with_image=False when images is None.
        template: prompt template (see ``fashion_prompt``).
    Returns:
        int64 [N] predicted labels (indices into ``FASHION_MNIST_CLASSES``).
    """
    prompt = fashion_prompt(with_image, processor.image_token, template)
    if not with_image:
        n = n if n is not None else (len(images) if images is not None else 1)
        images = None
    scores = class_logprobs(model, processor, prompt, FASHION_MNIST_CLASSES, images=images, n=n, batch_size=batch_size)
    return scores.argmax(1).numpy()
