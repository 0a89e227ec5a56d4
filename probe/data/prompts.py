"""Prompt sets for scans: the default set from real text, or a user's file / saved dataset."""
from __future__ import annotations

from pathlib import Path

from ..errors import ProbeError
from .texts import austen, chunks_of_tokens

DEFAULT_BOOK = "prideprejudice"


def default_prompts(tokenizer, n: int = 32, tokens: int = 512, book: str = DEFAULT_BOOK) -> list[str]:
    """``n`` consecutive passages of ``tokens`` tokens from an Austen novel (Debian's janeaustenr)."""
    return chunks_of_tokens(austen(book), tokenizer, n, tokens)


def load_prompts(path: str | Path, field: str = "text") -> list[str]:
    """Prompts from a file or a saved dataset.

    .txt: prompts separated by blank lines; .jsonl/.json/.parquet/.csv: the ``field`` column
    (loaded with ``datasets``); a directory: a dataset saved with ``save_to_disk``.
    """
    path = Path(path)
    if not path.exists():
        raise ProbeError(f"prompt file {path} does not exist", "check the --prompts path")
    if path.suffix == ".txt":
        prompts = [p.strip() for p in path.read_text().split("\n\n")]
    else:
        kind = None if path.is_dir() else {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if kind is None and not path.is_dir():
            raise ProbeError(f"unsupported prompt file type {path.suffix or '(none)'}",
                             "use .txt (blank-line separated), .jsonl, .json, .parquet, .csv or a saved dataset folder")
        try:
            columns, values = _read_table(path, kind, field)
        except ProbeError:
            raise
        except Exception as err:
            raise ProbeError(f"cannot read prompts from {path} ({type(err).__name__}: {str(err)[:120]})",
                             "check the file's format") from err
        if values is None:
            raise ProbeError(f"{path} has no '{field}' field (fields: {columns})", f"add a '{field}' field")
        prompts = [str(x).strip() for x in values]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ProbeError(f"prompt file {path} holds no prompts", "put at least one non-empty prompt in it")
    return prompts


def _read_table(path: Path, kind, field: str):
    """(column names, values of ``field`` or None): files through pandas (no cache, no progress bar),
    saved dataset folders through ``datasets``."""
    if kind is None:
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        return ds.column_names, (ds[field] if field in ds.column_names else None)
    import pandas as pd

    if kind == "jsonl":
        df = pd.read_json(path, lines=True)
    elif kind == "json":
        try:
            df = pd.read_json(path)
        except ValueError:
            df = pd.read_json(path, lines=True)
    elif kind == "parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path)
    return list(df.columns), (df[field].tolist() if field in df.columns else None)
