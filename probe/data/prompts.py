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
        import datasets

        try:
            if path.is_dir():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[next(iter(ds))]
            else:
                kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
                if kind is None:
                    raise ProbeError(f"unsupported prompt file type {path.suffix}",
                                     "use .txt (blank-line separated), .jsonl, .json, .parquet, .csv or a saved dataset folder")
                ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        except ProbeError:
            raise
        except Exception as err:
            raise ProbeError(f"cannot read prompts from {path} ({type(err).__name__}: {str(err)[:120]})",
                             "check the file's format") from err
        if field not in ds.column_names:
            raise ProbeError(f"{path} has no '{field}' field (fields: {ds.column_names})", f"add a '{field}' field")
        prompts = [str(x).strip() for x in ds[field]]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ProbeError(f"prompt file {path} holds no prompts", "put at least one non-empty prompt in it")
    return prompts
