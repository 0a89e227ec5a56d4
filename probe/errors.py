"""The one error type a person sees: a message plus the fix, printed as one line by the CLI."""
from __future__ import annotations


class ProbeError(Exception):
    """A problem the user can act on. ``str(err)`` is 'what went wrong — how to fix it'."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)
