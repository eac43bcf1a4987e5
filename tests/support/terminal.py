"""Running a command with its standard error on a pseudo-terminal, as a user at a terminal
sees it (progress bars are drawn only there)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence


def run_with_terminal_stderr(
    command: Sequence[str], timeout: float = 60.0
) -> tuple[int, bytes, bytes]:
    """Run ``command`` with stderr on a pty; returns (exit status, stdout, what the terminal
    showed on stderr)."""
    controller, terminal = os.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the last holder of the terminal side closed it
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL,
            timeout=timeout, check=False,
        )  # fmt: skip
    finally:
        os.close(terminal)
        reader.join(10)
        os.close(controller)
    return process.returncode, process.stdout, bytes(shown)
