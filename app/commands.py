"""``probe app [DIR] [--port N] [--reports-root R]``: start the dashboard on 127.0.0.1, headless."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from probe.errors import ProbeError
from probe.report.schema import MANIFEST


SCRIPT = Path(__file__).with_name("main.py")


def streamlit_command(port: int, report: Optional[Path] = None, reports_root: Path = Path("reports"),
                      model: Optional[str] = None) -> list[str]:
    """The ``streamlit run`` command line: loopback only, headless, no usage statistics."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(SCRIPT), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal",
           "--", "--reports-root", str(reports_root)]
    if report is not None:
        cmd += ["--report", str(report)]
    if model:
        cmd += ["--model", model]
    return cmd


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: ignore TIME_WAIT leftovers
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def register(app: typer.Typer) -> None:
    """Add the ``app`` command to the probe CLI."""

    @app.command("app")
    def run_app(
        report: Optional[Path] = typer.Argument(None, metavar="DIR", help="a report directory to open, or a folder of reports to list"),
        port: int = typer.Option(8501, "--port", help="port on 127.0.0.1"),
        reports_root: Path = typer.Option(Path("reports"), "--reports-root", help="folder whose report directories the page lists"),
        model: Optional[str] = typer.Option(None, "--model", help="model for the live views (default: the report's, else smollm2)"),
    ):
        """Start the dashboard (Streamlit) on 127.0.0.1 only, headless, and print its URL."""
        if report is not None and not report.is_dir():
            raise ProbeError(f"no report directory at {report}", "run `probe scan --out DIR` first, or omit DIR")
        if report is not None and not (report / MANIFEST).exists():
            report, reports_root = None, report  # not a report itself: a folder of reports to list
        if not _port_free(port):
            raise ProbeError(f"port {port} on 127.0.0.1 is in use", "pass --port N with a free port")
        cmd = streamlit_command(port, report.resolve() if report else None, reports_root.resolve(), model)
        typer.echo(f"probe app: http://127.0.0.1:{port}  (Ctrl-C stops it)")
        raise typer.Exit(_run(cmd))


def _run(cmd: list[str]) -> int:
    """Run the server until it exits; Ctrl-C or SIGTERM to ``probe app`` stops the server too."""
    import signal

    proc = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=20)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
