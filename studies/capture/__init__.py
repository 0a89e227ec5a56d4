"""studies/capture: run its scripts from the repository root, e.g. ``python -m studies.capture.<script>``."""
