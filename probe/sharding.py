"""The sharded scan strategy: each process (torchrun rank) captures its share of the batches, rank 0 merges.

``probe.scan(handle, prompts, ..., shard=Shard(rank, world))`` (CLI: ``probe scan --shard-by-rank``
under torchrun). How it stays exactly equal to an unsharded scan: detectors batch prompts themselves
and read only captured statistics, and the scan runs them inside a ``probe.capture.replay`` session:

  record (every rank): the detectors run over ALL prompts; batch k's forward is really run only when
      k % world == rank, and its per-call statistics (small per-head tensors) are kept under a hash
      of the batch's token ids; other batches get zero statistics and that detector output is thrown
      away. Each rank writes ``<out>.shards/<plan>/rank{r}-of{w}.pt`` atomically, keeping every
      computed batch in ``rank{r}-of{w}.partial/`` until then (a killed rank resumes per batch).
  merge (rank 0, after a barrier): the detectors run again over all prompts; every forward is
      answered from the shards, so the report (heads.parquet, tokens.parquet, massive.parquet,
      manifest.json) equals the unsharded one. A missing shard is one ProbeError naming it.

A rank whose shard file for this plan (model, prompts, detectors, options, world size) exists skips
its forwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .capture.replay import call_from_dict, call_to_dict
from .errors import ProbeError


@dataclass
class Shard:
    """Scan strategy: this process is ``rank`` of ``world``. ``barrier``: wait for every rank before rank 0
    merges (torch.distributed, gloo; off for in-process tests). After the scan ``computed`` holds the
    number of batch forwards this rank ran (0 when its shard was already on disk)."""

    rank: int
    world: int
    barrier: bool = True
    computed: int = 0

    def __post_init__(self):
        if not (self.world >= 1 and 0 <= self.rank < self.world):
            raise ProbeError(f"shard rank {self.rank} of world {self.world}", "use 0 <= rank < world (torchrun sets both)")

    @classmethod
    def from_env(cls) -> "Shard":
        """The rank and world size torchrun put in RANK / WORLD_SIZE (0 of 1 outside torchrun)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def wait(self) -> None:
        """Barrier across ranks (a CPU gloo group: no tensors travel, shards go through files)."""
        import torch.distributed as dist

        if self.barrier and self.world > 1 and dist.is_available():
            if not dist.is_initialized():
                dist.init_process_group("gloo")
            dist.barrier()


def plan_id(handle, prompts, detect: Sequence[str], options: dict, chat_template: bool, world: int) -> str:
    """Hash of what a shard depends on. Not the device: each rank holds the model on its own GPU."""
    model = {k: v for k, v in handle.describe().items() if k != "device"}
    blob = json.dumps({"model": model, "prompts": prompts, "detect": list(detect),
                       "options": options, "chat": chat_template, "world": world}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ShardFiles:
    """The files of one plan: ``<out>.shards/<plan>/rank{r}-of{w}.pt`` and its per-batch ``.partial/`` folder."""

    def __init__(self, out, plan: str, shard: Shard):
        self.shard = shard
        self.folder = Path(f"{out}.shards") / plan
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mine = self.rank_file(shard.rank)
        self.partial = self.folder / f"rank{shard.rank}-of{shard.world}.partial"

    def rank_file(self, rank: int) -> Path:
        return self.folder / f"rank{rank}-of{self.shard.world}.pt"

    def done(self) -> bool:
        return self.mine.exists()

    def load_partial(self) -> dict:
        """{batch key: CallRecord} a killed run of this rank saved (unreadable files are dropped)."""
        import torch

        self.partial.mkdir(exist_ok=True)
        store = {}
        for f in self.partial.glob("*.pt"):
            try:
                store[f.stem] = call_from_dict(torch.load(f, weights_only=True, map_location="cpu"))
            except Exception:
                f.unlink(missing_ok=True)
        return store

    def keep(self, key: str, call) -> None:
        """Save one computed batch (temporary name, then rename: a SIGKILL leaves whole files or none)."""
        import torch

        tmp = self.partial / f".{key}.tmp{os.getpid()}"
        torch.save(call_to_dict(call), tmp)
        os.replace(tmp, self.partial / f"{key}.pt")

    def finish(self, store: dict) -> None:
        """Write this rank's shard file and drop the per-batch folder."""
        import torch

        tmp = self.mine.with_suffix(f".tmp{os.getpid()}")
        torch.save({k: call_to_dict(c) for k, c in store.items()}, tmp)
        os.replace(tmp, self.mine)
        shutil.rmtree(self.partial, ignore_errors=True)

    def merged(self) -> dict:
        """{batch key: CallRecord} of every rank's shard; ProbeError naming the first missing one."""
        import torch

        store = {}
        for r in range(self.shard.world):
            path = self.rank_file(r)
            if not path.exists():
                raise ProbeError(f"shard {path} is missing", "run every rank (torchrun --nproc_per_node WORLD ...)")
            store.update({k: call_from_dict(v) for k, v in torch.load(path, weights_only=False, map_location="cpu").items()})
        return store
