"""Perplexity per 1024-token bucket for each cache config (plotly HTML) from a perplexity.py JSON.

    python -m studies.streaming.figure studies/streaming/results_16k_h200.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import plotly.graph_objects as go


def figure(path: Path) -> Path:
    res = json.loads(path.read_text())
    fig = go.Figure()
    for name, run in res["runs"].items():
        xs = [1024 * (i + 1) for i in range(len(run["ppl_by_1024"]))]
        fig.add_trace(go.Scatter(x=xs, y=run["ppl_by_1024"], mode="lines+markers", name=name))
    fig.add_vline(x=res["context"], line_dash="dash", annotation_text=f"model context {res['context']}")
    fig.update_layout(title=f"SmolLM2-135M, {', '.join(res['books'])}: perplexity per 1024 tokens",
                      xaxis_title="token position (end of bucket)", yaxis_title="perplexity", yaxis_type="log",
                      legend_title="cache (sinks+window)")
    out = path.with_suffix(".html")
    fig.write_html(out, include_plotlyjs="cdn")
    return out


if __name__ == "__main__":
    print(figure(Path(sys.argv[1])))
