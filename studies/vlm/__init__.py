"""studies/vlm: run its scripts from the repository root, e.g. ``python -m studies.vlm.<script>``."""
