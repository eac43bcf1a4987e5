"""A real ``livefile serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

READY_LINE = "Uvicorn running on"
START_TIMEOUT = 60.0  # a loaded machine imports slowly, and --workers N imports N times


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LivefileProcess:
    """``livefile serve`` in a child process; its output is kept for assertions and failures."""

    def __init__(
        self,
        data_dir: Path | None,
        *extra_args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.extra_args: Sequence[str] = extra_args
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        self._new_output = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LivefileProcess:
        command = [sys.executable, "-m", "livefile.impl_common.cli", "serve", *self.extra_args]
        if "LIVEFILE_PORT" not in self.env:
            command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._ready.clear()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or not self._answers_health_checks():
            self.kill()
            raise RuntimeError("livefile serve did not start:\n" + "".join(self.output))
        return self

    def _answers_health_checks(self) -> bool:
        """With several workers the parent announces the address before a worker listens on
        it: probe /healthz (a refused connection fails at once) until one answers."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.process is not None and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=5):
                    return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return False

    def _read_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_output:
                self.output.append(line)
                self._new_output.notify_all()
            if READY_LINE in line:
                self._ready.set()
        self._ready.set()  # the process ended: wake a waiting start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, timeout: float = 30.0, times: int = 1) -> bool:
        """Block until the server has printed ``text`` (``times`` times: True) or ``timeout``
        passed (False)."""
        with self._new_output:
            return self._new_output.wait_for(lambda: self.log().count(text) >= times, timeout)
