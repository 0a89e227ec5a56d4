"""Plot the masking curve and the score profile from the CSVs run.py wrote (plotly HTML; no kaleido needed).

PYTHONPATH=. python studies/retrieval/report.py  ->  studies/retrieval/{curve.html, scores.html}
"""
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

HERE = Path(__file__).parent


def main() -> None:
    curve = pd.read_csv(HERE / "curve.csv")
    agg = curve.groupby(["kind", "k"]).recall.agg(["mean", "min", "max", "size"]).reset_index()
    base = agg[agg.kind == "none"]
    fig = go.Figure()
    for kind, color in (("top", "crimson"), ("random", "steelblue")):
        part = pd.concat([base.assign(kind=kind), agg[agg.kind == kind]]).sort_values("k")
        fig.add_trace(go.Scatter(x=part.k, y=part["mean"], mode="lines+markers", name=f"{kind}-K masked",
                                 line=dict(color=color),
                                 error_y=dict(type="data", symmetric=False, array=part["max"] - part["mean"],
                                              arrayminus=part["mean"] - part["min"])))
    fig.update_layout(title="SmolLM2-135M-Instruct: NIAH recall with K heads masked (uniform attention, decode steps)",
                      xaxis_title="K masked heads", yaxis_title="mean ROUGE-1 recall", yaxis_range=[0, 1.05])
    fig.write_html(HERE / "curve.html", include_plotlyjs="cdn")
    heads = pd.read_csv(HERE / "heads.csv")
    grid = heads.pivot(index="layer", columns="head", values="retrieval_score")
    go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Viridis")).update_layout(
        title="retrieval score per head", xaxis_title="head", yaxis_title="layer").write_html(HERE / "scores.html",
                                                                                            include_plotlyjs="cdn")
    print(agg.to_string(index=False))


if __name__ == "__main__":
    main()
