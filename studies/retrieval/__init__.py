"""studies/retrieval: run its scripts from the repository root, e.g. ``python -m studies.retrieval.<script>``."""
