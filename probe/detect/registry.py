"""The detector registry: names, what each one reads, and the options it accepts.

Pure data (no torch, no pandas), so the CLI can check ``--detect`` and ``--opt`` and print its
help before anything heavy is imported. ``tests/test_cli_hardening.py`` checks that every
declared option list equals the detector module's ``DEFAULTS`` (plus the extras named here).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProbeError

# Inputs a detector reads when ``--prompts`` is not given.
TEXT = "text"          # the default text prompt set (Austen passages)
OWN = "own"            # builds its own inputs (NIAH grid, arithmetic prompts); prompts are ignored
IMAGE_QUESTIONS = "image-questions"   # questions asked about each default image

# The questions the vision detectors ask about each image by default (the studio VLM's two
# trained prompts; studies/vlm_attention uses the same pair).
IMAGE_QUESTIONS_DEFAULT = ("What is this item of clothing? Answer:", "Describe the image.")


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: where its run function lives, what it reads, which options and backends it takes."""

    name: str
    target: str                      # "module:function", imported only when the detector runs
    summary: str                     # one line for --help
    inputs: str                      # TEXT, OWN or IMAGE_QUESTIONS
    options: tuple[str, ...]         # --opt keys it accepts
    backends: tuple[str, ...] = ("native",)   # capture backends it honours

    def check_options(self, given) -> None:
        """ProbeError for the first option this detector does not declare."""
        for key in given:
            if key not in self.options:
                raise ProbeError(f"unknown option '{key}' for detector '{self.name}'",
                                 f"valid options: {', '.join(self.options)}")


_SINKS = ("eps", "hidden_threshold", "min_queries", "massive_abs", "massive_ratio", "relative_ratio", "batch_size")
_RETRIEVAL = ("lengths", "depths", "needles", "samples", "max_new_tokens", "batch_size", "source", "threshold",
              "recall_gate", "seed")
_ARITHMETIC = ("operators", "n", "shots", "counterfactual", "seed", "batch_size", "only_correct", "top_k")
_CLASSIC = ("exclude_bos", "exclude_current_token", "batch_size")
_INDUCTION = ("length", "count", "seed", "prepend_bos", "exclude_bos", "exclude_current_token", "batch_size")
_VISION = ("tau", "rho", "min_mass", "batch_size", "n_fashion", "fashion_seed", "photos", "pairing", "min_layer",
           "images", "image_names", "sink_dims", "sink_dim_texts")

SPECS: dict[str, DetectorSpec] = {s.name: s for s in (
    DetectorSpec("sinks", "probe.detect.sinks:run", "first-token sinks, hidden sinks, massive activations", TEXT,
                 _SINKS + ("backend", "remote"), ("native", "transformer-lens", "nnsight")),
    DetectorSpec("retrieval", "probe.detect.retrieval:run", "retrieval heads on a needle-in-a-haystack grid", OWN,
                 _RETRIEVAL),
    DetectorSpec("arithmetic", "probe.detect.arithmetic:run", "arithmetic heads by activation patching", OWN,
                 _ARITHMETIC),
    DetectorSpec("vision", "probe.detect.vision:run", "VHD + visual sinks (VLMs)", IMAGE_QUESTIONS, _VISION),
    DetectorSpec("vhd", "probe.detect.vision:run_vhd", "vision-aware heads only (VLMs)", IMAGE_QUESTIONS, _VISION),
    DetectorSpec("visual-sinks", "probe.detect.vision:run_visual_sinks", "visual sink tokens only (VLMs)",
                 IMAGE_QUESTIONS, _VISION),
    DetectorSpec("previous-token", "probe.detect.classic:run_previous_token", "previous-token heads", TEXT, _CLASSIC),
    DetectorSpec("duplicate-token", "probe.detect.classic:run_duplicate_token", "duplicate-token heads", TEXT,
                 _CLASSIC),
    DetectorSpec("induction", "probe.detect.classic:run_induction", "induction heads on repeated random tokens", OWN,
                 _INDUCTION),
)}

# name -> "module:function" (kept for callers that read the old mapping)
DETECTORS: dict[str, str] = {name: s.target for name, s in SPECS.items()}


def spec(name: str) -> DetectorSpec:
    """The registry entry for ``name``; ProbeError listing the valid names otherwise."""
    if name not in SPECS:
        raise ProbeError(f"unknown detector '{name}'", f"choose from {', '.join(SPECS)}")
    return SPECS[name]
