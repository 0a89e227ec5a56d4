"""Reproducible studies; run each script as a module from the repository root: ``python -m studies.<study>.<script>``."""
