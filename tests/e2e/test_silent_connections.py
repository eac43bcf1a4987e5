"""Connections that never send a request, or send its head a byte at a time (slowloris), must
not exhaust the server (issue 14, item 8): each has ``--request-head-timeout`` to send a complete
request head, at most ``--max-pending-connections`` may wait for one (the oldest beyond are
closed), and ``--max-connections-per-client`` caps one address.

What is limited is counted on the server process itself with psutil (its descriptors and its
TCP sockets), not read from its log. The server's descriptor limit is lowered below the number
of connections the attack opens, so that without these limits the attack alone would fill its
descriptor table, as the ~20,600 connections of the report did at the container's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import upload

SILENT = 5000
SLOWLORIS = 500
HEAD_TIMEOUT = 3.0
SERVER_NOFILE = 4096  # below SILENT + SLOWLORIS: the attack alone would fill the table
SETTLE_MARGIN = 15  # descriptors over the baseline still counted as "back to the baseline"
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SMALL = b"a small resource, downloaded while the server is under attack\n" * 16


@pytest.fixture
def client_nofile() -> Iterator[None]:
    """This process opens thousands of sockets: its soft limit goes up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SILENT + SLOWLORIS + 500
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit of open files ({hard}) is below {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def server_sockets(process: psutil.Process, port: int) -> int:
    """The server's TCP connections on its port (its listening socket not counted)."""
    return sum(
        1
        for connection in process.net_connections(kind="tcp")
        if connection.laddr and connection.laddr.port == port and connection.status != "LISTEN"
    )


def fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def whole_response(sock: socket.socket) -> bytes:
    """One response with a ``content-length`` body, however the server split it into writes
    (its head and body may come in two segments)."""
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    head, _, body = response.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing ``sock`` (b"" for nothing); None while it is open."""
    sock.setblocking(False)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except BlockingIOError:
        return None
    except ConnectionResetError:
        pass  # closed while our trickled bytes were unread: closed all the same
    return received


class Attack:
    """Opens SILENT silent and SLOWLORIS slowloris connections from a thread, the slowloris
    ones sending one more header line every half second and never the empty line."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.silent: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self.failed = 0  # connects that did not complete (refused, timed out)
        self.opened = threading.Event()
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._open, daemon=True),
            threading.Thread(target=self._trickle, daemon=True),
        ]

    def start(self) -> Attack:
        for thread in self._threads:
            thread.start()
        return self

    def _open(self) -> None:
        every = SILENT // SLOWLORIS + 1  # slowloris ones spread among the silent ones
        for index in range(SILENT + SLOWLORIS):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                if index % every == 0 and len(self.slow) < SLOWLORIS:
                    sock.sendall(PARTIAL_HEAD)
                    self.slow.append(sock)
                else:
                    self.silent.append(sock)
            except OSError:
                self.failed += 1
        self.opened.set()

    def _trickle(self) -> None:
        while not self.stop.wait(0.5):
            for sock in list(self.slow):
                with contextlib.suppress(OSError):  # closed by the server: nothing to do
                    sock.send(b"X-Slow: 1\r\n")

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
        for sock in self.silent + self.slow:
            sock.close()


def test_silent_and_slowloris_connections_leave_healthz_and_downloads_served(
    start_server: ServerFactory, client_nofile: None
) -> None:
    server = start_server("--request-head-timeout", str(HEAD_TIMEOUT))
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    process.rlimit(psutil.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))
    resource_id = asyncio.run(upload(server.ws_url, SMALL))
    content_url = f"{server.http_url}/resources/{resource_id}/content"
    assert fetch(content_url) == (200, SMALL)
    assert fetch(f"{server.http_url}/healthz")[0] == 200
    baseline_fds, baseline_sockets = process.num_fds(), server_sockets(process, server.port)

    peak = [baseline_fds]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], process.num_fds())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    attack = Attack(server.port).start()
    served = failed = 0
    failures: list[str] = []
    try:
        # Health checks and downloads while the connections are opened and until the last of
        # them has had its head timeout.
        last_opened: float | None = None
        while last_opened is None or time.monotonic() < last_opened + HEAD_TIMEOUT + 1:
            if last_opened is None and attack.opened.is_set():
                last_opened = time.monotonic()
            for url, expected in ((f"{server.http_url}/healthz", None), (content_url, SMALL)):
                try:
                    status, body = fetch(url)
                    assert status == 200
                    assert expected is None or body == expected
                    served += 1
                except (OSError, AssertionError) as exc:
                    failed += 1
                    failures.append(f"{url}: {exc!r}")
            time.sleep(0.1)
        # Back to the baseline: every attacking connection closed by the server.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            fds, sockets = process.num_fds(), server_sockets(process, server.port)
            if fds <= baseline_fds + SETTLE_MARGIN:
                break
            time.sleep(0.2)
        slow_answers = [closed_by_server(sock) for sock in attack.slow]
        closed = [closed_by_server(sock) for sock in attack.silent] + slow_answers
    finally:
        sampling.set()
        sampler.join(5)
        attack.close()

    answered_408 = sum(1 for answer in slow_answers if answer and b" 408 " in answer)
    print(
        f"\nopened {len(attack.silent)} silent + {len(attack.slow)} slowloris"
        f" ({attack.failed} connects failed); served {served} health checks and downloads,"
        f" {failed} failed; server descriptors: baseline {baseline_fds}, peak {peak[0]}"
        f" (limit {SERVER_NOFILE}), after {fds}; server sockets: baseline {baseline_sockets},"
        f" after {sockets}; closed by the server: {sum(c is not None for c in closed)}"
        f" of {len(closed)}; slowloris answered 408: {answered_408}"
    )
    assert len(attack.silent) + len(attack.slow) + attack.failed == SILENT + SLOWLORIS
    assert len(attack.silent) + len(attack.slow) >= 0.9 * (SILENT + SLOWLORIS)
    assert failed == 0, failures[:5]
    assert served >= 20
    assert peak[0] < SERVER_NOFILE - 100  # never near exhaustion
    assert fds <= baseline_fds + SETTLE_MARGIN
    assert sockets <= baseline_sockets + SETTLE_MARGIN
    assert all(answer is not None for answer in closed)  # every one closed by the server
    log = server.log()
    assert "Too many open files" not in log
    assert "Traceback" not in log


def test_a_slow_head_is_answered_408_and_a_watcher_outlives_the_head_timeout(
    start_server: ServerFactory,
) -> None:
    server = start_server("--request-head-timeout", "1")
    resource_id = asyncio.run(upload(server.ws_url, SMALL))

    async def watcher_survives() -> bool:
        from tests.support.wire import next_status, open_ws

        async with open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}") as ws:
            await next_status(ws)
            await asyncio.sleep(2.5)  # well past the head timeout: a WebSocket has no head
            await ws.ping()
            return True

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # A head in time, slowly, is served; the next one on the kept-alive connection, sent
        # a line at a time for longer than the timeout, gets 408 and the connection is closed.
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.5)
        sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert whole_response(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = b""
        # A line every quarter second until the server answers (a line sent after it closed
        # would be answered with a reset, which discards the unread answer).
        for _ in range(12):
            if select.select([sock], [], [], 0.25)[0]:
                break
            sock.sendall(b"X-Slow: 1\r\n")
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.9 < time.monotonic() - started < 3.5
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv(4096) == b""  # nothing sent, nothing answered: closed
        assert 0.9 < time.monotonic() - started < 3
    assert asyncio.run(watcher_survives())


def test_max_connections_per_client_counts_http_and_websocket_connections(
    start_server: ServerFactory,
) -> None:
    cap = 20
    server: LivefileProcess = start_server("--max-connections-per-client", str(cap))
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    resource_id = asyncio.run(upload(server.ws_url, SMALL))
    baseline = server_sockets(process, server.port)

    async def hold_watchers(count: int, ready: asyncio.Event, done: asyncio.Event) -> None:
        from tests.support.wire import next_status, open_ws

        async with contextlib.AsyncExitStack() as stack:
            for _ in range(count):
                ws = await stack.enter_async_context(
                    open_ws(f"{server.ws_url}/ws/streaming/download/{resource_id}")
                )
                await next_status(ws)
            ready.set()
            await done.wait()

    async def refused() -> bytes:
        """A new connection from 127.0.0.1: what it receives before the server closes it."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.to_thread(extra.recv, 4096):
                    answer += chunk
            return answer

    async def scenario() -> None:
        # Half the cap in WebSocket watchers, half in silent sockets, all from 127.0.0.1.
        ready, done = asyncio.Event(), asyncio.Event()
        watchers = asyncio.create_task(hold_watchers(cap // 2, ready, done))
        await ready.wait()
        silent = [
            socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap - cap // 2)
        ]
        try:
            await asyncio.sleep(0.3)
            assert server_sockets(process, server.port) == baseline + cap
            assert (await refused()).startswith(b"HTTP/1.1 503 ")
            # Another address (all of 127/8 is loopback) has its own count.
            with socket.create_connection(
                ("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.2", 0)
            ) as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await asyncio.to_thread(other.recv, 4096)).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in silent:
                sock.close()
            done.set()
            await watchers
        # The WebSocket watchers' slots are freed when they close, like the sockets': a full
        # cap's worth of new connections is admitted again.
        await asyncio.sleep(0.3)
        again = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap)]
        try:
            await asyncio.sleep(0.3)
            assert server_sockets(process, server.port) == baseline + cap
            assert all(closed_by_server(sock) is None for sock in again)
        finally:
            for sock in again:
                sock.close()

    asyncio.run(scenario())
