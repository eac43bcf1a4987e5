"""Sending file bytes behind a small head with ``sendfile``, the way nginx serves files: the
kernel hands the page cache to the socket, with no copy into and out of user space.

Used by the HTTP protocol (an answer's head, then its body) and the WebSocket protocol (a
binary frame's header, then its payload; server frames are not masked, so a payload is the
file's bytes as they are). Both write to the connection's socket directly, which is safe only
when nothing is queued in the transport ahead of them and the connection is plain TCP (TLS
must see every byte), and only from code that does not yield between head and body, so that
no other write can come between them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

# Below this a copy costs less than the system call sendfile needs beside the head's.
SENDFILE_MIN = 16 * 1024
# The ASGI scope extension through which the WebSocket protocol offers ``send_file`` to the
# application: ``await scope["extensions"][SENDFILE_EXTENSION](fd, offset, count)`` sends
# those bytes of ``fd`` as one binary message; with ``first=False`` and/or ``last=False`` as a
# fragment of one (a first fragment opens a binary message, a later one continues it, the last
# ends it), so that one message of any size leaves as several frames. It raises
# ``ConnectionError`` when the connection is gone, and another ``OSError`` when the file could
# not be read before anything was sent; after part of a message is sent, a failure closes the
# connection.
SENDFILE_EXTENSION = "livefile.websocket.sendfile"
# The ASGI scope extension through which the WebSocket protocol lets the application end the TCP
# connection at once, without a close handshake: ``scope["extensions"][ABORT_EXTENSION]()``.
# For a peer that reads nothing, whose close frame would wait behind a full send queue.
ABORT_EXTENSION = "livefile.websocket.abort"
# Present in the scope when the WebSocket protocol hands the application each fragment of a
# fragmented binary message as it arrives, instead of gathering the message whole: such a
# piece is a ``websocket.receive`` event with ``bytes`` and ``FRAGMENT_KEY`` (``"more"``, or
# ``"last"`` for the piece that ends the message).
FRAGMENTS_EXTENSION = "livefile.websocket.fragments"
FRAGMENT_KEY = "livefile.fragment"
# The same for an HTTP response (``livefile serve``): a followed download whose resource ended
# FAILED is cut off without its last chunk, so that the client reports a broken transfer, and
# uvicorn sees a lost connection rather than an application that forgot to end its response.
HTTP_ABORT_EXTENSION = "livefile.http.abort"


class DirectSocket:
    """A connection's socket for direct writes: a duplicate descriptor, owned and closed by
    this object so that it can never close the transport's, sharing its non-blocking file."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._socket: socket.socket | None = None
        self._unusable = False

    def ready(self) -> socket.socket | None:
        """The socket, when bytes may be written to it now: plain TCP, nothing queued in the
        transport, which is still open; None otherwise."""
        transport = self._transport
        if self._unusable or transport.is_closing() or transport.get_write_buffer_size():
            return None
        if self._socket is None:
            transport_socket = transport.get_extra_info("socket")
            if transport_socket is None or transport.get_extra_info("sslcontext") is not None:
                self._unusable = True
                return None
            try:
                duplicate = os.dup(transport_socket.fileno())
            except OSError:  # out of descriptors: copying still works
                return None
            self._socket = socket.socket(
                transport_socket.family, transport_socket.type, fileno=duplicate
            )
        return self._socket

    def close(self) -> None:
        self._unusable = True
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def send_file(
    transport: asyncio.Transport,
    direct: DirectSocket,
    head: bytes,
    fd: int,
    offset: int,
    count: int,
) -> None:
    """Send ``head`` and then ``count`` bytes of ``fd`` from ``offset``, all of them or a
    closed connection. What the socket does not take at once goes to the transport (whose flow
    control then applies), so the order holds. Raises ``OSError`` when the file cannot give the
    bytes and nothing is sent yet; once the head is out, a short file closes the connection."""
    sock = direct.ready() if count >= SENDFILE_MIN else None
    if sock is None:
        body = os.pread(fd, count, offset)
        if len(body) < count:
            raise OSError(f"the file ends before byte {offset + count}")
        transport.write(head + body)
        return
    try:
        sent = sock.send(head, socket.MSG_MORE)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.close()  # the connection is gone; the protocol learns it from the loop
        return
    if sent < len(head):
        transport.write(head[sent:])
    else:
        try:
            while count:
                sent = os.sendfile(sock.fileno(), fd, offset, count)
                if sent == 0:
                    break  # the file ends early
                offset += sent
                count -= sent
        except BlockingIOError:
            pass  # the client's window is full: the transport sends the rest as it reads
        except OSError:
            transport.close()
            return
    if count:
        try:
            rest = os.pread(fd, count, offset)
        except OSError:
            rest = b""
        transport.write(rest)
        if len(rest) < count:
            transport.close()  # the head promised bytes the file does not have


def binary_frame_header(length: int, first: bool = True, last: bool = True) -> bytes:
    """The header of an unmasked, uncompressed binary WebSocket frame (RFC 6455 5.2): a whole
    message by default; the first, a middle or the last fragment of one otherwise."""
    head = (0x80 if last else 0) | (0x02 if first else 0x00)
    if length < 126:
        return struct.pack("!BB", head, length)
    if length < 1 << 16:
        return struct.pack("!BBH", head, 126, length)
    return struct.pack("!BBQ", head, 127, length)
