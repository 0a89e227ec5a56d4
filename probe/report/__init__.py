"""Head reports: schema, atomic writing, validated reading, rendering (loaded on first use)."""
_LAZY = {"Report": "io", "read_report": "io", "write_report": "io", "check_out_dir": "io",
         "to_html": "render", "summary_text": "render", "heatmap": "render", "score_columns": "render",
         "top_tokens_figure": "render", "HEAD_SCORES": "schema", "SCHEMA_VERSION": "schema"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
