"""Tables for studies/classic_heads/README.md from tl_agreement.json (written by compare_transformer_lens.py).

    python -m studies.classic_heads.report

Rewrites the README's ``<!-- table:classic_* -->`` blocks (``studies/tables.py``); ``tables(folder)`` is what
tests/test_study_tables.py recomputes. The top-level README row stays in studies/summary.py.
"""
from __future__ import annotations

import json
from pathlib import Path


from studies.tables import main_for, markdown_table  # noqa: E402


def tables(folder: Path) -> dict[str, str]:
    d = json.loads((Path(folder) / "tl_agreement.json").read_text())
    yn = {False: "no", True: "yes"}
    agree = markdown_table(
        ["detector", "exclude_bos, exclude_current_token", "max over heads of abs(probe − TL)", "median", "TL's top score"],
        [[a["detector"], f"{yn[a['exclude_bos']]}, {yn[a['exclude_current_token']]}", f"{a['max_abs_diff']:.2e}",
          f"{a['median_abs_diff']:.2e}", f"{a['tl_max_score']:.3f}"] for a in d["agreement"]])
    top = markdown_table(
        ["score", "top 5 heads"],
        [[name, ", ".join(f"{h} {s:.3f}" for h, s in heads)] for name, heads in d["top_heads"].items()])
    top += f"\nInputs: {d['scan_inputs']}. The three detectors together took {d['scan_seconds']:.0f} s on the shared 2-core CPU.\n"
    return {"classic_agreement": agree, "classic_top": top}


def main() -> None:
    main_for(Path(__file__).parent, tables)


if __name__ == "__main__":
    main()
