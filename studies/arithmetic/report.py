"""Plot patching effects and the ablation from the CSVs run.py wrote (plotly HTML; no kaleido needed).

PYTHONPATH=. python studies/arithmetic/report.py  ->  studies/arithmetic/{effects.html, ablation.html}
"""
from pathlib import Path

import pandas as pd
import plotly.express as px

HERE = Path(__file__).parent


def main() -> None:
    heads = pd.read_csv(HERE / "heads.csv")
    grid = heads.pivot(index="layer", columns="head", values="arithmetic_effect")
    px.imshow(grid, color_continuous_scale="RdBu_r", color_continuous_midpoint=0, origin="lower", aspect="auto",
              title="SmolLM2-135M: normalized patching effect per head (operand counterfactual)").write_html(
        HERE / "effects.html", include_plotlyjs="cdn")
    abl = pd.read_csv(HERE / "ablation.csv")
    agg = abl.groupby(["kind", "k"]).accuracy.agg(["mean", "min", "max", "size"]).reset_index()
    px.bar(agg[agg.kind != "none"], x="k", y="mean", color="kind", barmode="group",
           title=f"accuracy with k heads mean-ablated (unablated {abl[abl.kind == 'none'].accuracy.iloc[0]:.3f})").write_html(
        HERE / "ablation.html", include_plotlyjs="cdn")
    print(agg.to_string(index=False))


if __name__ == "__main__":
    main()
