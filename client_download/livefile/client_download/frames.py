"""websockets' client connection, with the large binary messages of download replies taken out
of the incoming bytes by a ``FrameSplitter`` (``impl_common/frame_splitter.py``): joined once
from the chunks as they arrive, where websockets copies each byte into its buffer, out of it,
and once more into the message."""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from livefile.impl_common.frame_splitter import (
    FrameSplitter,
    at_frame_boundary,
    websockets_accepts,
)


class SplittingClientConnection(ClientConnection):
    """A ``ClientConnection`` whose incoming bytes pass through a ``FrameSplitter`` from the
    first frame boundary after the handshake on."""

    _splitter: FrameSplitter | None = None

    def data_received(self, data: bytes) -> None:
        if self._splitter is None:
            if self.protocol.state is not State.OPEN or not at_frame_boundary(self.protocol.parser):
                super().data_received(data)
                return
            self._splitter = FrameSplitter(
                lambda length: websockets_accepts(self.protocol, length),
                self._parse,
                self._deliver,
            )
        self._splitter.feed(data)

    def _parse(self, data: bytes) -> bool:
        """Hand ``data`` to websockets; False once its parser has failed."""
        super().data_received(data)
        return self.protocol.parser_exc is None

    def _deliver(self, message: bytes) -> None:
        # What websockets does with a whole binary frame it parsed (``process_event``).
        self.process_event(Frame(Opcode.BINARY, message))
