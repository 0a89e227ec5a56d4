"""Before / after host benchmarks (``bench_host_path``, ``bench_decode_host``): one JSON holds the rows of each
labelled run ("before" on an older tree given by ``--code``, "after" on this one), and a generated block of
kernels/BENCHMARKS.md renders them side by side."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def add_args(ap, code_help: str, block: str, result: str) -> None:
    """--code, --label, --out and --write-block of a labelled benchmark."""
    ap.add_argument("--code", default=None, help=code_help)
    ap.add_argument("--label", default="after")
    ap.add_argument("--out", default=None, help="JSON to write (rows of this label replace earlier ones)")
    ap.add_argument("--write-block", default=None, metavar="PAGE",
                    help=f"only replace the <!-- table:{block} --> block of PAGE with the table from {result}")


def write_block(page: str, block: str, result: str, table) -> None:
    """Render ``result`` with ``table`` (doc -> markdown) into the block ``block`` of ``page``."""
    from studies.tables import write_blocks
    with open(result) as f:
        write_blocks(page, {block: table(json.load(f)) + "\n"})


def save(args, argv, rows: list, load0: float, **meta_extra) -> None:
    """Merge this run's rows (label ``args.label``) into ``args.out`` with the run's meta (command, tree, commit,
    versions, machine, load average), written atomically."""
    import torch
    old = {"rows": []}
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
    code = os.path.abspath(args.code) if args.code else os.getcwd()
    try:
        commit = subprocess.run(["git", "-C", code, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    meta = old.get("meta", {})
    meta[args.label] = {"command": "PYTHONPATH=. python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
                        "code": code, "commit": commit or None, "torch": torch.__version__,
                        "python": platform.python_version(),
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), TRITON_INTERPRET=1",
                        "loadavg_1m_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)], **meta_extra}
    out = {"meta": meta, "rows": [r for r in old["rows"] if r["label"] != args.label] + rows}
    with open(args.out + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
