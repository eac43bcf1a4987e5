"""Text transcoding to UTF-8 for uploads that declare another charset, without I/O.

Stored text is always UTF-8 (what line access and browsers expect). A leading byte-order mark
is checked against the declared charset: one that agrees is dropped, one that contradicts it is
an error, never silently reinterpreted (step-streaming decodes little-endian UTF-16 wrongly).
"""

from __future__ import annotations

import codecs

BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ALIASES = {
    "utf8": "utf-8", "utf-8": "utf-8", "utf-8-sig": "utf-8",
    "latin-1": "latin-1", "latin1": "latin-1", "iso-8859-1": "latin-1", "iso8859-1": "latin-1",
    "windows-1252": "cp1252", "cp1252": "cp1252",
    "utf-16": "utf-16", "utf16": "utf-16",
    "utf-16-le": "utf-16-le", "utf-16le": "utf-16-le",
    "utf-16-be": "utf-16-be", "utf-16be": "utf-16-be",
}  # fmt: skip


class TranscodingError(ValueError):
    """The text is not valid in its declared charset, or its BOM contradicts the charset."""


def normalize_charset(charset: str) -> str:
    try:
        return _ALIASES[charset.strip().lower().replace("_", "-")]
    except KeyError:
        raise TranscodingError(
            f"Unsupported charset {charset!r}: use UTF-8, Latin-1, Windows-1252 or UTF-16"
        ) from None


class Utf8Transcoder:
    """Feed bytes in the declared charset, get UTF-8 bytes; ``finish`` checks the end."""

    def __init__(self, charset: str) -> None:
        self.charset = normalize_charset(charset)
        self._head = b""  # bytes held back until the BOM question is settled
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes) -> bytes:
        if self._decoder is None:
            self._head += data
            if len(self._head) < 3 and not self._bom_decided():
                return b""
            data, self._head = self._strip_bom(self._head), b""
        return self._decode(data, final=False)

    def finish(self) -> bytes:
        tail = b""
        if self._decoder is None:
            tail = self._strip_bom(self._head)
        return self._decode(tail, final=True)

    def _bom_decided(self) -> bool:
        # A BOM is at most 3 bytes; fewer bytes decide only if they cannot start one.
        return not any(bom.startswith(self._head) for bom, _ in BOMS)

    def _strip_bom(self, head: bytes) -> bytes:
        codec = self.charset
        for bom, bom_codec in BOMS:
            if head.startswith(bom):
                if codec == "utf-16" and bom_codec.startswith("utf-16"):
                    codec = bom_codec
                elif codec != bom_codec:
                    raise TranscodingError(
                        f"The text starts with a {bom_codec.upper()} byte-order mark but was"
                        f" declared {self.charset.upper()}"
                    )
                head = head[len(bom) :]
                break
        if codec == "utf-16":
            codec = "utf-16-be"  # no BOM: RFC 2781 says big-endian
        self._decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        return head

    def _decode(self, data: bytes, final: bool) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decode(data, final).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise TranscodingError(f"The text is not valid {self.charset.upper()}: {exc}") from None
