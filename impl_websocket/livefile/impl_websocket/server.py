"""Running the server under uvicorn: one process or several workers, each closing its
WebSockets with 1001 on shutdown. Imported only by ``livefile serve``, so that the client
commands start without loading uvicorn, FastAPI or redis."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import signal
import socket
import sys
import weakref
from collections.abc import Callable
from typing import Any

import uvicorn
from pydantic import SecretStr
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import multiprocess
from websockets.http11 import Request
from websockets.protocol import State

from livefile.api import close_codes
from livefile.impl_common.frame_splitter import (
    FrameSplitter,
    at_frame_boundary,
    websockets_accepts,
    websockets_allows_fragments,
)
from livefile.impl_websocket.admission import Admission, AdmissionLimits
from livefile.impl_websocket.app import create_app
from livefile.impl_websocket.counters import CONTENT_ROUTE, COUNTERS
from livefile.impl_websocket.http_fast_content import answer_now
from livefile.impl_websocket.logging_config import log_config
from livefile.impl_websocket.settings import Settings
from livefile.impl_websocket.tracing import TracingUnavailableError, check_tracing
from livefile.impl_websocket.zero_copy import (
    ABORT_EXTENSION,
    FRAGMENT_KEY,
    FRAGMENTS_EXTENSION,
    HTTP_ABORT_EXTENSION,
    SENDFILE_EXTENSION,
    DirectSocket,
    binary_frame_header,
    send_file,
)

try:  # websockets' C unmasking; its pure-Python fallback otherwise, as websockets does
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the wheels ship the extension
    from websockets.utils import apply_mask

APP_FACTORY = "livefile.impl_websocket.app:create_app_from_environment"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
NOFILE_CEILING = 1 << 20  # Linux's default nr_open, for an unlimited hard limit


def plain_response(status: int, text: str) -> bytes:
    """A whole response that ends its connection, sent without an application."""
    body = text.encode()
    head = [STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n"]
    head += [b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]
    return b"".join([*head, body])


HEAD_TIMEOUT_RESPONSE = plain_response(408, "The request head did not arrive in time.\n")
PER_CLIENT_RESPONSE = plain_response(503, "Too many connections from this address.\n")
# One Admission per server (per worker process): its books cover every connection it accepts.
_ADMISSIONS: weakref.WeakKeyDictionary[ServerState, Admission] = weakref.WeakKeyDictionary()


class LivefileConfig(uvicorn.Config):
    """uvicorn's configuration with livefile's admission limits, which the protocols read
    (a worker process receives the configuration pickled, limits included)."""

    admission_limits = AdmissionLimits(head_timeout=10.0, max_waiting=1000, max_per_client=None)


def admission_of(protocol: HttpToolsProtocol) -> Admission:
    admission = _ADMISSIONS.get(protocol.server_state)
    if admission is None:
        limits = getattr(protocol.config, "admission_limits", LivefileConfig.admission_limits)
        admission = _ADMISSIONS[protocol.server_state] = Admission(limits, protocol.loop)
    return admission


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, with five additions:

    - it sends the refusal websockets prepares for a handshake it cannot parse (e.g. 414 for a
      request line over 8 KiB): uvicorn leaves it unsent, so the client waited for its timeout
      and the connection stayed open;
    - large binary messages (upload data) are taken out of the incoming bytes by a
      ``FrameSplitter`` with one copy and one unmasking, rather than websockets' three copies;
      so are the fragments of a fragmented binary message (a step-streaming client's whole
      upload), each handed to the application as it arrives (``FRAGMENTS_EXTENSION``) rather
      than gathered whole;
    - it offers the application ``send_file`` (``SENDFILE_EXTENSION`` in the scope): a binary
      message (or a fragment of one) straight from a file, its payload sent with
      ``sendfile``. Download replies are most of what a server sends to followers; this
      spares the read into user space, the frame's copy and the copy into the socket (about
      0.7 -> 0.2 s of CPU per GiB);
    - the messages that arrived before a frame websockets refuses reach the application
      before the close (uvicorn dropped them);
    - when it ends, it frees the per-client connection slot the HTTP protocol it took the
      connection over from was holding (``on_lost``).
    """

    _direct: DirectSocket | None = None
    _splitter: FrameSplitter | None = None
    # Given by the HTTP protocol it takes over from: frees the connection's per-client slot.
    on_lost: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._splitter is not None:
            self._splitter.feed(data)
        else:
            self._parse(data)

    def _parse(self, data: bytes) -> bool:
        """Hand ``data`` to websockets; False once its parser has failed. The frames it parsed
        before one it refused are delivered first: uvicorn's ``data_received`` dropped them,
        so a message that came in the same read as one over the size limit was lost."""
        self.conn.receive_data(data)
        self.handle_events()
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()
        if self.conn.handshake_exc is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
        return self.conn.parser_exc is None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[SENDFILE_EXTENSION] = self.send_file
            extensions[ABORT_EXTENSION] = self.transport.abort
            # The splitter must see every byte from a frame boundary on. Nothing after the
            # request is buffered (a client waits for the 101 before it sends frames), so the
            # next byte begins a frame; otherwise websockets keeps parsing everything alone.
            if at_frame_boundary(self.conn.parser):
                self._splitter = FrameSplitter(
                    lambda length: websockets_accepts(self.conn, length),
                    self._parse,
                    self._deliver,
                    apply_mask,
                    (
                        lambda: websockets_allows_fragments(self.conn),
                        self._deliver_fragment,
                        self._fail,
                    ),
                )
                extensions[FRAGMENTS_EXTENSION] = {}

    def _deliver(self, message: bytes) -> None:
        # What uvicorn does with a whole binary frame from websockets (``handle_bytes``).
        self.curr_msg_data_type = "bytes"
        self.frames = [message]
        self.send_receive_event_to_app()

    def _deliver_fragment(self, data: bytes, last: bool) -> None:
        # As uvicorn delivers a message (``send_receive_event_to_app``), marked as a fragment.
        if self.close_sent:
            return
        fragment = "last" if last else "more"
        event: Any = {"type": "websocket.receive", "bytes": data, FRAGMENT_KEY: fragment}
        self.queue.put_nowait(event)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _fail(self, reason: str) -> None:
        """The client broke the framing: close with 1002 and ``reason``, as websockets does
        when its parser fails."""
        self.conn.fail(close_codes.PROTOCOL_ERROR, reason)
        self.handle_parser_exception()

    async def send_file(
        self, fd: int, offset: int, count: int, first: bool = True, last: bool = True
    ) -> None:
        """Send bytes ``[offset, offset + count)`` of ``fd`` as one binary message, or as a
        fragment of one (``first``: it opens the message; ``last``: it ends it)."""
        await self.writable.wait()
        if (
            self.disconnected
            or self.close_sent
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            raise ConnectionResetError("the WebSocket is closed")
        if self.conn.extensions:  # a frame's payload would not be the file's bytes as they are
            data = os.pread(fd, count, offset)
            if first:
                self.conn.send_binary(data, fin=last)
            else:
                self.conn.send_continuation(data, fin=last)
            self.transport.write(b"".join(self.conn.data_to_send()))
            return
        if self._direct is None:
            self._direct = DirectSocket(self.transport)
        # No await from here on: nothing else can write between the header and the payload.
        head = binary_frame_header(count, first, last)
        send_file(self.transport, self._direct, head, fd, offset, count)
        if self.transport.is_closing():  # the peer went away, or the file ended early
            raise ConnectionResetError("the WebSocket was closed while sending")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._direct is not None:
            self._direct.close()
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None
        super().connection_lost(exc)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering small requests for finished files itself.

    A request that ``answer_now`` can answer from cached headers (a range of at most 256 KiB,
    or a small whole file, of a COMPLETED resource the ASGI fast path has already seen) is
    answered synchronously, without an ASGI task: random range reads spent most of their time
    in the task, the middleware chain and the two writes of a response. A body of at least
    ``SENDFILE_MIN`` bytes on a plain TCP connection goes out with ``sendfile`` behind its head
    (sent with ``MSG_MORE``, so both leave in the same segments), like nginx: the kernel sends
    the page cache, with no copy into and out of user space. Everything else, and anything
    while the client is not reading its answers, takes the usual ASGI path.

    It also keeps the admission books (``admission.py``): a connection waits for a request
    head from its accept and from the end of each response it keeps alive, and is closed when
    the head is late, when it is the oldest of too many waiting, or at once when its address
    holds too many connections already. (uvicorn's own keep-alive timeout, 5 s, closes a
    kept-alive connection that stays idle; it is not armed before the first request, and the
    first byte of a new request disarms it.)
    """

    _direct: DirectSocket | None = None
    _admission: Admission | None = None
    _counted = False  # holds a per-client slot (released on loss, or by the WebSocket protocol)
    _head_bytes = False  # bytes arrived since the connection started waiting for a head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        admission = self._admission = admission_of(self)
        if not admission.admit(self._address()):
            transport.write(PER_CLIENT_RESPONSE)
            transport.close()
            return
        self._counted = True
        admission.wait(self)

    def data_received(self, data: bytes) -> None:
        self._head_bytes = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        if self._admission is not None:
            self._admission.done_waiting(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when the connection stays open with no
        # request to run next: from now on it waits for a new head.
        if self.timeout_keep_alive_task is not None and self._admission is not None:
            self._head_bytes = False
            self._admission.wait(self)

    def close_waiting(self, timed_out: bool) -> None:
        if self.transport.is_closing():
            return
        if timed_out and self._head_bytes:
            self.transport.write(HEAD_TIMEOUT_RESPONSE)
        self.transport.close()

    def _address(self) -> str | None:
        return self.client[0] if self.client else None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope: Any = cycle.scope
        immediate = None if self.flow.write_paused else answer_now(self._state(), scope)
        if immediate is None:
            scope.setdefault("extensions", {})[HTTP_ABORT_EXTENSION] = self.transport.abort
            super()._start_asgi_task(cycle, app)
            return
        answer = immediate.answer
        content = [STATUS_LINE[answer.status]]
        for name, value in [*self.server_state.default_headers, *answer.headers]:
            content.extend([name, b": ", value, b"\r\n"])
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        head = b"".join(content)
        length = 0 if answer.head_only else answer.stop - answer.start
        if length == 0:
            self.transport.write(head)
        else:
            if self._direct is None:
                self._direct = DirectSocket(self.transport)
            try:
                send_file(self.transport, self._direct, head, immediate.fd, answer.start, length)
            except OSError:  # nothing sent: the full route reports the unreadable file
                super()._start_asgi_task(cycle, app)
                return
        # The ASGI middleware that counts responses never sees these.
        COUNTERS.http_responses[(scope["method"], CONTENT_ROUTE, answer.status)] += 1
        COUNTERS.sent_bytes["http"] += length
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(cycle.scope),
                cycle.scope["method"],
                get_path_with_query_string(cycle.scope),
                cycle.scope["http_version"],
                answer.status,
            )
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over and this one hears no more of it:
        # a duplicate descriptor left open would keep the connection from ever closing.
        if self._direct is not None:
            self._direct.close()
        super().handle_websocket_upgrade()
        successor = self.transport.get_protocol()
        if self._counted and self._admission and isinstance(successor, WebSocketProtocol):
            self._counted = False  # the WebSocket protocol hears of the loss now
            successor.on_lost = functools.partial(self._admission.leave, self._address())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._admission is not None:
            self._admission.done_waiting(self)
            if self._counted:
                self._counted = False
                self._admission.leave(self._address())
        super().connection_lost(exc)

    def _state(self) -> Any:
        """The livefile app's state, under uvicorn's middleware (proxy headers)."""
        state = getattr(self, "_livefile_state", None)
        if state is None:
            app: Any = self.app
            while not hasattr(app, "state"):
                app = app.app
            state = self._livefile_state = app.state
        return state


class LivefileServer(uvicorn.Server):
    """uvicorn's server, closing our WebSockets with 1001 before uvicorn drops connections."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        app: Any = self.config.loaded_app
        while hasattr(app, "app") and not hasattr(app, "state"):
            app = app.app  # unwrap uvicorn's middleware (proxy headers, message logger)
        connections = getattr(getattr(app, "state", None), "connections", None)
        if connections is not None:
            await connections.close_all()
        await super().shutdown(sockets)


class LivefileWorker(multiprocess.Process):
    """A uvicorn worker process running ``LivefileServer``, and ending with its supervisor."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.supervisor_pid = os.getpid()
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        exit_with_parent(self.supervisor_pid)
        super().target(sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = LivefileServer(config=self.config)
        return self._server


def exit_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux), so that a
    supervisor killed with SIGKILL does not leave workers holding the port and serving alone."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    # Several workers each build their app from the environment; one builds it here.
    several = settings.workers > 1
    config = LivefileConfig(
        APP_FACTORY if several else create_app(settings),
        factory=several,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        ws=WebSocketProtocol,
        http=HttpProtocol,
        # Compression costs ~25x throughput on binary data and buys nothing for random bytes.
        ws_per_message_deflate=False,
        ws_max_size=max(settings.max_message_size, settings.max_text_message_size) + 1024,
        loop="uvloop",
        timeout_graceful_shutdown=10,
        # A worker answers the supervisor's health check once its app is imported: a loaded
        # 2-core machine took more than uvicorn's 5 s, and the supervisor then killed and
        # restarted workers in a loop.
        timeout_worker_healthcheck=30,
    )
    config.admission_limits = AdmissionLimits(
        head_timeout=settings.request_head_timeout,
        max_waiting=settings.max_pending_connections,
        max_per_client=settings.max_connections_per_client,
    )
    return config


def run(settings: Settings) -> int:
    if settings.workers > 1 and not settings.redis_url:
        print(
            "livefile serve: --workers greater than 1 needs --redis-url (LIVEFILE_REDIS_URL):"
            " the workers share their catalog and statuses through Redis",
            file=sys.stderr,
        )
        return 2
    if settings.redis_url and (problem := redis_problem(settings.redis_url)):
        print(
            f"livefile serve: Redis at {settings.redis_url} is unreachable: {problem}",
            file=sys.stderr,
        )
        return 1
    try:
        settings.token_authority()
    except (ValueError, OSError) as exc:
        print(f"livefile serve: cannot use the JWT key: {exc}", file=sys.stderr)
        return 2
    try:
        check_tracing()
    except (TracingUnavailableError, ValueError) as exc:
        print(f"livefile serve: cannot trace: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    config = uvicorn_config(settings)
    if settings.workers == 1:
        LivefileServer(config).run()
        return 0
    # The workers are new processes: hand them the settings through the environment.
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            os.environ[f"LIVEFILE_{name.upper()}"] = str(value)
    # uvicorn's supervisor builds a plain uvicorn.Server in each worker; make it build ours,
    # so that every worker closes its WebSockets with 1001 on shutdown too.
    multiprocess.Process = LivefileWorker  # type: ignore[misc]
    multiprocess.Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def raise_open_file_limit() -> None:
    """Take the hard limit of open files as the soft one (workers inherit it). Each connection
    holds a descriptor, a download two more (its file and the zero-copy socket), and the usual
    soft limit of 1,024 would refuse connections long before memory runs out; nginx's
    ``worker_rlimit_nofile`` is the same remedy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # e.g. above the kernel's nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def redis_problem(url: str) -> str | None:
    """Why Redis cannot be used (None when it answers a PING)."""
    import redis  # imported only by a server that uses Redis: about a second of CPU

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc)
    return None
