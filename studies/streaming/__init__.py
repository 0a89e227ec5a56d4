"""studies/streaming: run its scripts from the repository root, e.g. ``python -m studies.streaming.<script>``."""
