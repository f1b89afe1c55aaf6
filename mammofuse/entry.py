"""The ``mammofuse`` console script: Ctrl-C and SIGTERM are taken from its first moment, while the command line loads.

Loading the command line (Typer, Rich and the package's modules) takes a few tenths of a second; a Ctrl-C then would
otherwise end it with a traceback. Only the standard library is imported before the handlers are installed.
"""

from __future__ import annotations

import sys

from mammofuse.interrupts import handle_stop_signals, interrupted_status


def main() -> None:
    """Install the stop-signal handlers, load the command line and run it; stopped while loading: one line and 130 (143)."""
    handle_stop_signals()
    try:
        from mammofuse.cli import main as command_line
    except KeyboardInterrupt as exc:
        sys.stderr.write("error: interrupted\n")
        sys.exit(interrupted_status(exc) or 130)
    command_line()
