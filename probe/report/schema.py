"""The head-report schema: file names, required columns, version. Every surface reads through this.

A report is a directory:
  heads.parquet     one row per (layer, head): layer, head, kv_head + one column per score
  tokens.parquet    one row per prompt x position x layer x head with a hidden sink
  massive.parquet   one row per (layer, dim) with a massive activation
  <name>.parquet    extra tables from other detectors (e.g. arithmetic.parquet)
  manifest.json     model, prompts, detector settings, versions, timings, summary
  report.html       a self-contained plotly page
"""
from __future__ import annotations

SCHEMA_VERSION = 2   # 2: sink_rate is a fraction (0-1), was a percentage
MANIFEST = "manifest.json"
HEADS = "heads.parquet"
HTML = "report.html"

REQUIRED_COLUMNS = {
    "heads": ["layer", "head", "kv_head"],
    "tokens": ["prompt_id", "position", "token", "layer", "head", "received_mass"],
    "massive": ["layer", "dim", "max_ratio", "first_token_ratio", "top_tokens"],
}

# Score columns a detector may add to heads.parquet, with what they mean (shown by `probe report`
# and the app). A column name means the same thing everywhere.
HEAD_SCORES = {
    "key0_mass": "mean attention the first real token receives from the queries that see it (s_0)",
    "sink_rate": "fraction (0-1) of prompts where s_0 > eps (Gu et al. sink metric per head)",
    "hidden_sink_mass": "mean over prompts of the largest s_j at a later key (ACT hidden sink)",
    "hidden_sink_count": "mean number of later keys with s_j above the ACT threshold",
    "entropy": "mean attention entropy over real queries (nats)",
    "retrieval_score": "Wu et al. copy-paste retrieval score",
    "arithmetic_effect": "normalized logit-difference change when patching the head (Zhang et al.)",
    "vhd": "vision-aware head divergence (He et al.)",
    "previous_token_score": "attention to the previous token (TransformerLens detect_head, 'mul')",
    "duplicate_token_score": "attention to earlier copies of the current token (detect_head, 'mul')",
    "induction_score": "attention to the token after an earlier copy, repeated random tokens (detect_head, 'mul')",
}
