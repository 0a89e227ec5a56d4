"""studies/phenomena: run its scripts from the repository root, e.g. ``python -m studies.phenomena.<script>``."""
