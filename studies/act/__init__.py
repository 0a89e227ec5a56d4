"""studies/act: run its scripts from the repository root, e.g. ``python -m studies.act.<script>``."""
