"""A loopback TCP proxy that loses connections mid-request, for tests of resumable uploads.

Every connection is forwarded to the target port both ways, and lost (both sides shut down, no
close frame, as a dropped link would) in one of these ways:

- ``cut_after``: the first ``cuts`` connections that have sent that many bytes towards the
  server are cut right there, the rest of their request never forwarded; with
  ``after_first_message``, a connection is cut there only once the server's first WebSocket
  message has reached the client (an upload's client then knows its resume token);
- ``cut_at_reply``: the first ``cuts`` connections whose server sends a WebSocket message
  holding these bytes (server frames are not masked) are cut there, that message never reaching
  the client — a lost answer;
- ``cut_all()``: every connection open now is cut.

``hold()`` makes new connections wait (accepted, not forwarded) until ``release()``: a client
that reconnects meanwhile reaches the server only when the test lets it. Later connections
pass untouched. Runs in threads, so that a blocking client (the sync SDK, tus clients) can be
tested too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

PIECE = 64 * 1024
WAIT = 30.0
HEAD_END = b"\r\n\r\n"


@dataclass
class _Link:
    """One proxied connection: its two sockets, and whether the server's first WebSocket
    message has reached the client."""

    client: socket.socket
    server: socket.socket
    answered: threading.Event = field(default_factory=threading.Event)


class CuttingProxy:
    def __init__(
        self,
        target_port: int,
        cut_after: int | None = None,
        *,
        cuts: int = 1,
        after_first_message: bool = False,
        cut_at_reply: bytes | None = None,
    ) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.after_first_message = after_first_message
        self.cut_at_reply = cut_at_reply
        self.cuts_wanted = cuts
        self.cut = threading.Event()  # set once a connection has been cut
        self.cuts = 0  # connections cut so far
        self.connections = 0  # connections accepted so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Condition()
        self._open = threading.Event()  # new connections are forwarded (not held)
        self._open.set()
        self._sockets: list[socket.socket] = []
        self._links: list[_Link] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """New connections wait, accepted but not forwarded, until ``release``."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def cut_all(self) -> None:
        """Cut every connection open now."""
        with self._lock:
            links = list(self._links)
            self._count_cut()
        for link in links:
            _shut(link.client, link.server)

    def wait_for_connections(self, count: int, timeout: float = WAIT) -> bool:
        """Block until ``count`` connections were accepted (True) or ``timeout`` passed."""
        with self._lock:
            return self._lock.wait_for(lambda: self.connections >= count, timeout)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._listener.close()
        self._open.set()  # held connections go on, to find everything closed
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
                self._sockets.append(client)
                self._lock.notify_all()
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            _shut(client)
            return
        link = _Link(client, server)
        with self._lock:
            self._sockets.append(server)
            self._links.append(link)
        threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
        threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _take_cut(self) -> bool:
        """Whether one more connection is to be cut (then counted as cut)."""
        with self._lock:
            if self.cuts >= self.cuts_wanted:
                return False
            self._count_cut()
            return True

    def _count_cut(self) -> None:
        self.cuts += 1
        self.cut.set()
        self._lock.notify_all()

    def _upstream(self, link: _Link) -> None:
        sent = 0
        try:
            while data := link.client.recv(PIECE):
                if (
                    self.cut_after is not None
                    and sent + len(data) >= self.cut_after
                    and self._take_cut()
                ):
                    link.server.sendall(data[: self.cut_after - sent])
                    if self.after_first_message:
                        link.answered.wait(WAIT)
                    break
                link.server.sendall(data)
                sent += len(data)
        except OSError:
            pass
        _shut(link.client, link.server)

    def _downstream(self, link: _Link) -> None:
        replies = _ServerMessages()
        try:
            while data := link.server.recv(PIECE):
                for unit, is_message in replies.feed(data):
                    marker = self.cut_at_reply
                    if is_message and marker is not None and marker in unit and self._take_cut():
                        _shut(link.client, link.server)  # the answer is lost with the link
                        return
                    link.client.sendall(unit)
                    if is_message:
                        link.answered.set()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            link.client.shutdown(socket.SHUT_WR)


class _ServerMessages:
    """What a server sends, split into whole units: its HTTP response head, then each
    WebSocket frame (unmasked, as a server's are) — or, for a connection that does not
    upgrade, the bytes as they come."""

    def __init__(self) -> None:
        self._buffer = b""
        self._head_done = False
        self._plain = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The units completed by ``data``, each with whether it is a WebSocket frame."""
        if self._plain:
            return [(data, False)]
        self._buffer += data
        units: list[tuple[bytes, bool]] = []
        if not self._head_done:
            end = self._buffer.find(HEAD_END) + len(HEAD_END)
            if end < len(HEAD_END):
                return units
            head, self._buffer = self._buffer[:end], self._buffer[end:]
            self._head_done = True
            if b" 101 " not in head.split(b"\r\n", 1)[0]:  # no upgrade: plain HTTP
                self._plain = True
                units, self._buffer = [(head + self._buffer, False)], b""
                return units
            units.append((head, False))
        while (size := _frame_size(self._buffer)) is not None:
            units.append((self._buffer[:size], True))
            self._buffer = self._buffer[size:]
        return units


def _frame_size(buffer: bytes) -> int | None:
    """The length of the whole unmasked frame at the start of ``buffer``; None if incomplete."""
    if len(buffer) < 2:
        return None
    length, header = buffer[1] & 0x7F, 2
    if length >= 126:
        header += 2 if length == 126 else 8
        if len(buffer) < header:
            return None
        length = int.from_bytes(buffer[2:header])
    return header + length if len(buffer) >= header + length else None


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
