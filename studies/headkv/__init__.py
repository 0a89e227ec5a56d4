"""studies/headkv: run its scripts from the repository root, e.g. ``python -m studies.headkv.<script>``."""
