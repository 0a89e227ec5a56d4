"""CLI plugin: ``probe support MODEL`` — what each capture backend can do for that model (before running)."""
from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def support(model: str = typer.Argument("smollm2", help="alias, folder, .gguf or cached hub id"),
                as_json: bool = typer.Option(False, "--json", help="rows as JSON"),
                device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)"),
                families: bool = typer.Option(False, "--families", help="list the VLM families probe knows (loads nothing)")):
        """Table of what each backend (native, transformer-lens, nnsight) can capture for MODEL."""
        from ..models import load
        from .support import families_text, render, table

        if families:
            typer.echo(families_text())
            return

        handle = load(model, device=device)
        typer.echo(json.dumps(table(handle), indent=2) if as_json else render(handle))
