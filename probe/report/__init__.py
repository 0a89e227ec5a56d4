"""Head reports: schema, atomic writing, validated reading, rendering."""
from .io import Report, check_out_dir, read_report, write_report
from .render import heatmap, score_columns, summary_text, to_html, top_tokens_figure
from .schema import HEAD_SCORES, SCHEMA_VERSION

__all__ = ["Report", "read_report", "write_report", "check_out_dir", "to_html", "summary_text", "heatmap",
           "score_columns", "top_tokens_figure", "HEAD_SCORES", "SCHEMA_VERSION"]
