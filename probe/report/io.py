"""Write reports atomically (temp dir + rename) and read them back with validation."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import ProbeError
from .outdir import check_out_dir  # noqa: F401  (re-exported)
from .schema import HEADS, HTML, MANIFEST, REQUIRED_COLUMNS, SCHEMA_VERSION


@dataclass
class Report:
    """A head report in memory: the tables (name -> DataFrame; "heads" always present) + manifest.

    Every table is also an attribute: ``report.heads``, ``report.tokens``, ``report.massive``,
    ``report.arithmetic``, ... (``report.table(name)`` returns None for a table the report lacks).
    In Jupyter a report renders as a summary (model, prompts, detectors, top heads per score, tables).
    """

    tables: dict
    manifest: dict
    path: Optional[Path] = None
    html: Optional[str] = field(default=None, repr=False)

    @property
    def heads(self) -> pd.DataFrame:
        return self.tables["heads"]

    def table(self, name: str) -> Optional[pd.DataFrame]:
        return self.tables.get(name)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables") or {}
        if not name.startswith("_") and name in tables:
            return tables[name]
        raise AttributeError(f"report has no table or attribute {name!r} (tables: {', '.join(sorted(tables))})")

    def __dir__(self):
        return sorted({*super().__dir__(), *(self.__dict__.get("tables") or {})})

    def __repr__(self) -> str:
        model = self.manifest.get("model", {})
        tables = ", ".join(f"{k}[{len(v)}]" for k, v in self.tables.items())
        where = f" at {self.path}" if self.path else ""
        return (f"Report({model.get('source')}, {model.get('n_layers')}x{model.get('n_heads')} heads, "
                f"{self.manifest.get('prompts', {}).get('count')} prompts, detectors "
                f"{','.join(self.manifest.get('detectors', []))}; tables {tables}{where})")

    def _repr_html_(self) -> str:
        from .render import summary_html

        return summary_html(self)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove ``.<out>.tmp<pid>`` / ``.<out>.old<pid>`` folders that a killed writer left (its pid is gone)."""
    removed = []
    for kind in ("tmp", "old"):
        for path in out.parent.glob(f".{out.name}.{kind}*"):
            pid = path.name.rsplit(f".{kind}", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def write_report(report: Report, out: str | Path, overwrite: bool = False) -> Path:
    """Write every table as parquet, the manifest and the HTML into ``out`` atomically.

    Files go to a temporary sibling directory first, which is renamed into place only when
    complete, so a killed scan never leaves half-written report files.
    """
    out = Path(out)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tmp.chmod(0o755)
    try:
        for name, df in report.tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        manifest = {**report.manifest, "schema_version": SCHEMA_VERSION, "tables": sorted(report.tables)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if report.html is not None:
            (tmp / HTML).write_text(report.html)
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_report(path: str | Path) -> Report:
    """Read and validate a report directory; ProbeError says what is wrong and how to fix it."""
    path = Path(path)
    if not path.is_dir():
        raise ProbeError(f"no report at {path}", "run `probe scan --out DIR` first, or point at a report directory")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise ProbeError(f"{path} is not a probe report (no {MANIFEST})", "point at a directory written by `probe scan`")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise ProbeError(f"corrupt report: {mpath} is not valid JSON ({err.msg})", "re-run `probe scan --overwrite`") from err
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProbeError(f"report schema version {version} at {path}, this probe reads version {SCHEMA_VERSION}",
                         "re-run `probe scan --overwrite` with this version of probe")
    tables = {}
    for name in manifest.get("tables", [HEADS.removesuffix(".parquet")]):
        file = path / f"{name}.parquet"
        try:
            df = pd.read_parquet(file)
        except Exception as err:  # pyarrow raises several types for truncated / garbage files
            raise ProbeError(f"corrupt report: cannot read {file} ({type(err).__name__})",
                             "re-run `probe scan --overwrite`") from err
        missing = [c for c in REQUIRED_COLUMNS.get(name, []) if c not in df.columns]
        if missing:
            raise ProbeError(f"corrupt report: {file} lacks columns {missing}", "re-run `probe scan --overwrite`")
        tables[name] = df
    if "heads" not in tables:
        raise ProbeError(f"corrupt report: {path} has no heads table", "re-run `probe scan --overwrite`")
    html = (path / HTML).read_text() if (path / HTML).exists() else None
    return Report(tables, manifest, path, html)
