"""studies/vlm_attention: run its scripts from the repository root, e.g. ``python -m studies.vlm_attention.<script>``."""
