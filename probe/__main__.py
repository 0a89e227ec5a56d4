"""``python -m probe ...`` (and ``torchrun ... -m probe scan --shard-by-rank ...``) is the ``probe`` command."""
from .cli import main

main()
