"""Helpers for the lifecycle tests: HTTP with a method and a token, a resource's event stream
read in a thread, and the files a resource has in a data directory."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def call(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    """Status and JSON body (None when empty) of one request."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if body else None


def resource_files(data_dir: Path, resource_id: str) -> list[Path]:
    """The files of ``resource_id`` below the data directory (bytes, line index, record)."""
    return sorted(p for p in (data_dir / "resources").rglob(f"{resource_id}*") if p.is_file())


class EventStream:
    """``GET /resources/{id}/events`` read in a thread: ``statuses`` as they come, ``opened``
    once the first event arrived, ``ended`` once the server ended the stream."""

    def __init__(self, url: str) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data: "):
                        self.statuses.append(json.loads(line[6:]))
                        self.opened.set()
        finally:
            self.opened.set()
            self.ended.set()


class Follower:
    """``GET /resources/{id}/content?follow=true`` read in a thread; ``cut`` says whether the
    answer was dropped before its end (a FAILED resource)."""

    def __init__(self, url: str) -> None:
        self.received = bytearray()
        self.started = threading.Event()
        self.ended = threading.Event()
        self.cut = False
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                self.started.set()
                while piece := response.read1(65536):
                    self.received += piece
        except (http.client.IncompleteRead, ConnectionError, urllib.error.URLError):
            self.cut = True
        finally:
            self.started.set()
            self.ended.set()
