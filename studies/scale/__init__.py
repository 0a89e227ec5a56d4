"""studies/scale: run its scripts from the repository root, e.g. ``python -m studies.scale.<script>``."""
