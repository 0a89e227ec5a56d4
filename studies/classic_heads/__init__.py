"""studies/classic_heads: run its scripts from the repository root, e.g. ``python -m studies.classic_heads.<script>``."""
