"""studies/vlm2: run its scripts from the repository root, e.g. ``python -m studies.vlm2.<script>``."""
