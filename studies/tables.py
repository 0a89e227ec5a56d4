"""README tables generated from result files (every number in a study README comes from a file a script wrote).

A README marks each generated table with a pair of HTML comments::

    <!-- table:ablation -->
    | ... generated markdown ... |
    <!-- /table:ablation -->

Each study's ``report.py`` defines ``tables(folder) -> {name: markdown}`` computed only from the files in
its folder, and ``main()`` rewrites the marked blocks (``write_blocks``). ``tests/test_study_tables.py``
recomputes every study's tables and fails when a committed README differs from its committed files.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

_BLOCK = re.compile(r"<!-- table:(?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->", re.S)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table: header [C], rows [R][C] of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(x, digits: int = 3) -> str:
    """A float cell: fixed digits, '–' for missing/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def ci(est, low, high, digits: int = 3) -> str:
    """'0.712 [0.650, 0.768]'."""
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "–"
    return f"{est:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def pval(p) -> str:
    """p-values: 3 significant digits, '<0.001' below."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3g}"


def read_blocks(readme: Path) -> dict[str, str]:
    """{name: body} of every generated block in ``readme``."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(Path(readme).read_text())}


def write_blocks(readme: Path, blocks: Mapping[str, str]) -> list[str]:
    """Replace the body of each named block in ``readme``; returns the names written. A block the
    README does not mark is an error (so a table cannot silently go missing)."""
    text = Path(readme).read_text()
    present = set(read_blocks(readme))
    missing = sorted(set(blocks) - present)
    if missing:
        raise KeyError(f"{readme}: no <!-- table:NAME --> block for {missing}")
    for name, body in blocks.items():
        pat = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
        text = pat.sub(lambda m: m.group(1) + body + m.group(2), text)
    Path(readme).write_text(text)
    return sorted(blocks)


def main_for(folder: Path, tables: Callable[[Path], Mapping[str, str]]) -> None:
    """CLI body of a study's report.py: regenerate its README blocks from its result files."""
    written = write_blocks(folder / "README.md", tables(folder))
    print(f"{folder / 'README.md'}: regenerated {', '.join(written)}")
