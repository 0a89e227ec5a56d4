"""studies/arithmetic: run its scripts from the repository root, e.g. ``python -m studies.arithmetic.<script>``."""
