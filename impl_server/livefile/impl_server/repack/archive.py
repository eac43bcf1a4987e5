"""Reading an archive one entry at a time through the system libarchive, from a blocking reader.

libarchive-c supplies the ctypes bindings; the few calls it does not bind (encryption flags, the
UTF-8 path name, the format code) are bound here. It is imported on first use, so that a machine
without the system library can still import the server and gets a clear ``unsupported_format``
error only when it tries to repack.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal

from livefile.impl_server.repack.model import RepackError

BLOCK_SIZE = 1 << 20
"""Bytes asked of the source per read, and bytes of entry data taken per call: large enough that
the per-call Python work is noise next to inflating and deflating."""

_ARCHIVE_EOF = 1
_ARCHIVE_WARN = -20
_FORMAT_BASE_MASK = 0xFF0000
_FORMAT_RAW = 0x90000
_IFMT = 0o170000
_IFREG = 0o100000
_IFDIR = 0o040000
_ENCRYPTION_WORDS = re.compile(r"encrypt|passphrase|password", re.IGNORECASE)
_UNSUPPORTED_WORDS = re.compile(r"unsupported|not supported|unavailable", re.IGNORECASE)

_ffi: Any = None


def _load() -> Any:
    """libarchive-c's ``ffi`` module with the extra bindings, or ``RepackError``."""
    global _ffi
    if _ffi is not None:
        return _ffi
    try:
        # libarchive-c loads the shared library at import; without it ctypes finds no
        # ``archive_*`` symbols (AttributeError) or cannot load the file (OSError).
        from libarchive import ffi  # type: ignore[import-untyped]
    except (ImportError, OSError, AttributeError, TypeError) as exc:
        raise RepackError(
            "unsupported_format",
            f"archives cannot be read here: libarchive is not installed "
            f"(Debian: libarchive13) ({exc})",
        ) from exc
    voidp = ctypes.c_void_p
    ffi.ffi("entry_is_encrypted", [voidp], ctypes.c_int)
    ffi.ffi("format", [voidp], ctypes.c_int)
    with contextlib.suppress(AttributeError):  # a libarchive older than its UTF-8 accessors
        ffi.ffi("entry_pathname_utf8", [voidp], ctypes.c_char_p)
    _ffi = ffi
    return ffi


def libarchive_module() -> ModuleType:
    """For callers that want to fail early (a start-up check): ``RepackError`` if missing."""
    module: ModuleType = _load()
    return module


EntryKind = Literal["file", "dir", "other"]


@dataclass(frozen=True)
class Header:
    name: str
    """As stored, decoded from UTF-8 (undecodable bytes replaced)."""
    kind: EntryKind
    """``other`` covers symbolic and hard links, devices, FIFOs and sockets."""
    mtime: float | None
    size: int | None
    """As declared, if declared; never trusted for a limit."""
    encrypted: bool


class ArchiveReader:
    """One pass over an archive. ``read`` is the blocking source (``b""`` at the end); ``seek``
    is given only for formats that need it (7z from a complete file). ``before_read`` runs just
    before each call to ``read``, where the source may block."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        formats: Sequence[str],
        filters: Sequence[str] = (),
        seek: Callable[[int, int], int] | None = None,
        before_read: Callable[[], None] | None = None,
    ) -> None:
        self._ffi = _load()
        self._read = read
        self._seek = seek
        self._before_read = before_read
        self.consumed = 0
        self._callback_error: BaseException | None = None
        self._in_buffer = ctypes.create_string_buffer(BLOCK_SIZE)
        self._in_address = ctypes.addressof(self._in_buffer)
        self._out_buffer = ctypes.create_string_buffer(BLOCK_SIZE)
        self._out_view = memoryview(self._out_buffer).cast("B")
        # The callbacks must outlive the archive: ctypes frees a thunk with its Python object.
        self._read_cb = self._ffi.READ_CALLBACK(self._on_read)
        self._seek_cb = self._ffi.SEEK_CALLBACK(self._on_seek)
        self._archive = self._ffi.read_new()
        self._entry = self._ffi.entry_new()
        try:
            for name in filters:
                self._ffi.get_read_filter_function(name)(self._archive)
            for name in formats:
                self._ffi.get_read_format_function(name)(self._archive)
            if seek is not None:
                self._ffi.read_set_seek_callback(self._archive, self._seek_cb)
            self._call(
                self._ffi.read_open,
                self._archive, None, self._ffi.NO_OPEN_CB, self._read_cb, self._ffi.NO_CLOSE_CB,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._archive is not None:
            self._ffi.read_free(self._archive)
            self._archive = None
        if self._entry is not None:
            self._ffi.entry_free(self._entry)
            self._entry = None

    # Called by libarchive, from inside its own calls. An exception cannot cross back through C,
    # so it is kept and raised again once libarchive returns its error.
    def _on_read(self, _archive: Any, _context: Any, pointer: Any) -> int:
        try:
            if self._before_read is not None:
                self._before_read()
            data = self._read(BLOCK_SIZE)
            size = len(data)
            if size > BLOCK_SIZE:
                raise ValueError(f"the source gave {size} bytes where {BLOCK_SIZE} were asked")
            ctypes.memmove(self._in_address, data, size)
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_void_p))[0] = self._in_address
            self.consumed += size
            return size
        except BaseException as exc:
            self._callback_error = exc
            return -1

    def _on_seek(self, _archive: Any, _context: Any, offset: int, whence: int) -> int:
        assert self._seek is not None
        try:
            return self._seek(offset, whence)
        except BaseException as exc:
            self._callback_error = exc
            return -1

    def _call(self, function: Any, *args: Any) -> int:
        try:
            result: int = function(*args)
        except self._ffi.ArchiveError as exc:
            self._raise(str(exc.msg) if exc.msg else self._error_string())
        if result < _ARCHIVE_WARN or (result < 0 and function is self._ffi.read_data):
            self._raise(self._error_string())
        return result

    def _error_string(self) -> str:
        message = self._ffi.error_string(self._archive)
        return message.decode("utf-8", "replace") if message else "unknown libarchive error"

    def _raise(self, message: str) -> Any:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        # Not archive_read_has_encrypted_entries: after a failed open it read freed memory
        # (a segfault, found by fuzzing). Encrypted entries are flagged per entry; the rest say so.
        if _ENCRYPTION_WORDS.search(message):
            raise RepackError("encrypted_archive", f"the archive is encrypted ({message})")
        if _UNSUPPORTED_WORDS.search(message):  # e.g. a solid RAR 4, a zip method it lacks
            raise RepackError("unsupported_format", message)
        raise RepackError("invalid_archive", message)

    def is_raw(self) -> bool:
        """Whether libarchive read the (decompressed) input as one plain stream, not a tar."""
        code: int = self._ffi.format(self._archive)
        return code & _FORMAT_BASE_MASK == _FORMAT_RAW

    def next_header(self) -> Header | None:
        ffi = self._ffi
        entry = self._entry
        if self._call(ffi.read_next_header2, self._archive, entry) == _ARCHIVE_EOF:
            return None
        filetype = ffi.entry_filetype(entry) & _IFMT
        kind: EntryKind
        if ffi.entry_hardlink(entry) is not None:
            kind = "other"
        elif filetype == _IFREG:
            kind = "file"
        elif filetype == _IFDIR:
            kind = "dir"
        else:
            kind = "other"
        mtime: float | None = None
        if ffi.entry_mtime_is_set(entry):
            mtime = ffi.entry_mtime(entry) + ffi.entry_mtime_nsec(entry) / 1e9
        size = ffi.entry_size(entry) if ffi.entry_size_is_set(entry) else None
        return Header(self._pathname(), kind, mtime, size, bool(ffi.entry_is_encrypted(entry)))

    def _pathname(self) -> str:
        raw: bytes | None = None
        if hasattr(self._ffi, "entry_pathname_utf8"):
            raw = self._ffi.entry_pathname_utf8(self._entry)
        if raw is None:
            raw = self._ffi.entry_pathname(self._entry)
        return "" if raw is None else raw.decode("utf-8", "replace")

    def read_block(self) -> memoryview:
        """The next piece of the current entry's data (valid until the next call); empty at its
        end."""
        size = self._call(self._ffi.read_data, self._archive, self._out_buffer, BLOCK_SIZE)
        return self._out_view[:size]
