"""Real offline text: Jane Austen's novels from Debian's r-cran-janeaustenr, read without R.

The .deb is fetched with ``apt-get download`` (no install, no R), unpacked with ``dpkg -x``,
and its lazy-load R data is parsed with ``rdata``; each novel is cached as plain text under
the probe cache (``~/.cache/probe/texts/austen``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
import gzip
import zlib
from pathlib import Path

from ..errors import ProbeError
from ..models.cache import cache_root

AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
_DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
_FIX = "apt-get download r-cran-janeaustenr needs Debian's apt (or copy the .deb into ~/.cache/probe/texts/) and pip install rdata"


def _austen_dir() -> Path:
    return cache_root() / "texts" / "austen"


def _unpacked_data(work: Path) -> Path:
    """Fetch and unpack the .deb into ``work``; return its R data folder."""
    debs = list((cache_root() / "texts").glob("r-cran-janeaustenr_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            raise ProbeError("Jane Austen texts are not cached and apt-get is missing", _FIX)
        run = subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=work, capture_output=True, text=True)
        debs = list(work.glob("r-cran-janeaustenr_*.deb"))
        if run.returncode or not debs:
            raise ProbeError(f"apt-get download r-cran-janeaustenr failed: {run.stderr.strip()[-200:]}", _FIX)
    subprocess.run(["dpkg", "-x", str(debs[0]), str(work / "x")], check=True)
    return work / "x" / _DATA_DIR


def _extract_all() -> None:
    try:
        import rdata
    except ImportError as err:
        raise ProbeError("reading the Austen R data needs the rdata package", "pip install rdata") from err
    out = _austen_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _unpacked_data(Path(tmp))
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(data.joinpath("Rdata.rdx").read_bytes())))
        blob = data.joinpath("Rdata.rdb").read_bytes()
        for name, (offset, length) in index["variables"].items():
            lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(blob[offset + 4: offset + length])))
            tmp_file = out / f".{name}.tmp"
            tmp_file.write_text("\n".join(str(x) for x in lines))
            tmp_file.replace(out / f"{name}.txt")


def austen(book: str = "prideprejudice") -> str:
    """The full text of one Austen novel (lines joined by newlines; paragraphs by blank lines)."""
    if book not in AUSTEN_BOOKS:
        raise ProbeError(f"unknown Austen book '{book}'", f"choose from {', '.join(AUSTEN_BOOKS)}")
    path = _austen_dir() / f"{book}.txt"
    if not path.exists():
        _extract_all()
    return path.read_text()


def paragraphs(text: str, min_chars: int = 200) -> list[str]:
    """Blank-line separated paragraphs, re-flowed onto one line, at least ``min_chars`` long."""
    paras = [" ".join(p.split()) for p in text.split("\n\n")]
    return [p for p in paras if len(p) >= min_chars]


def chunks_of_tokens(text: str, tokenizer, n_chunks: int, n_tokens: int) -> list[str]:
    """``n_chunks`` consecutive passages of about ``n_tokens`` tokens each, cut at paragraph ends
    where possible (then trimmed to ``n_tokens`` tokens exactly)."""
    if n_chunks < 1 or n_tokens < 1:
        raise ProbeError(f"{n_chunks} passages of {n_tokens} tokens asked for", "ask for at least 1 passage of 1 token or more")
    out: list[str] = []
    buf: list[str] = []
    count = 0
    for para in paragraphs(text, min_chars=40):
        buf.append(para)
        count += len(tokenizer(para, add_special_tokens=False)["input_ids"]) + 1
        if count >= n_tokens:
            ids = tokenizer(" ".join(buf), add_special_tokens=False)["input_ids"][:n_tokens]
            out.append(tokenizer.decode(ids))
            buf, count = [], 0
            if len(out) == n_chunks:
                return out
    raise ProbeError(f"the text holds only {len(out)} passages of {n_tokens} tokens, {n_chunks} asked for",
                     "ask for fewer or shorter prompts (--n-prompts, --prompt-tokens)")
