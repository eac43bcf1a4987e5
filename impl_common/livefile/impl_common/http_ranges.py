"""HTTP byte ranges (RFC 9110 section 14) and the header values livefile derives, without I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

MAX_RANGES = 100
_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$", re.ASCII)
# Positions with more digits are beyond any resource; int() of thousands of digits would even
# raise (Python's conversion limit), so they are all read as this one number.
_MAX_DIGITS = 19
_BEYOND_ANY_SIZE = 10**_MAX_DIGITS


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, stop)``."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


class Unsatisfiable(Exception):
    """No range of the header overlaps the available bytes (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for within ``size`` bytes.

    None means "serve the whole representation": no header, a header that is not a valid
    ``bytes=`` range set (RFC 9110 lets a server ignore it), or several ranges (livefile answers
    those with the whole file rather than multipart/byteranges). Raises ``Unsatisfiable``.
    """
    if header is None:
        return None
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        return None
    specs = ranges.split(",")
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.match(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size)
    start = _position(first)
    stop = size if not last else _position(last) + 1
    if last and stop <= start:
        return None  # "bytes=5-2" is invalid syntax: ignore the header
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(stop, size))


def range_start(header: str | None) -> int | None:
    """Where a single ``bytes=N-…`` range starts, whatever the size: following a growing
    resource starts there even beyond what is readable yet. None for anything else."""
    if header is None:
        return None
    unit, _, ranges = header.partition("=")
    match = _RANGE_SPEC.match(ranges) if unit.strip().lower() == "bytes" else None
    if match is None or not match[1]:
        return None
    return _position(match[1])


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND_ANY_SIZE


# Letters NFKD does not decompose into an ASCII base letter, spelled as people type them
# without the key (German, Scandinavian, French, Polish, Croatian, Icelandic).
_SPELLED = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "\u0131": "i"}
)  # fmt: skip
# Bidirectional controls and C1 control characters: refused in new names (``api.model``);
# left out of headers for names stored before that rule.
_INVISIBLE = dict.fromkeys(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0x80, 0xA0)]
)


def ascii_filename(filename: str) -> str:
    """``filename`` in printable ASCII for the plain ``filename=`` parameter: accents dropped
    (``été`` → ``ete``), a few letters spelled out (``ß`` → ``ss``), spaces kept, and
    whatever has no ASCII form, quotes, backslashes, ``%`` and ``/`` as ``_``."""
    decomposed = unicodedata.normalize("NFKD", filename.translate(_INVISIBLE).translate(_SPELLED))
    kept = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue  # the accent of a decomposed letter
        kept.append(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%/' else "_")
    return "".join(kept) or "download"


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """``attachment`` (or ``inline``) with an ASCII fallback and the exact name in RFC 5987
    form (RFC 6266).

    Browsers and wget use ``filename*``; curl's ``-J`` reads only ``filename`` (its manual:
    "it does not yet support the filename* field"), so the fallback is as close to the name
    as ASCII allows. Quotes, backslashes, control and non-ASCII characters never reach the
    quoted fallback, so no name can end the header or inject another one.
    """
    encoded = quote(filename.translate(_INVISIBLE), safe="")
    return f"{kind}; filename=\"{ascii_filename(filename)}\"; filename*=UTF-8''{encoded}"


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def not_modified_since(header: str | None, modified: float) -> bool:
    """Whether ``If-Modified-Since: header`` says the client's copy is still current."""
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    return int(modified) <= since


def etag_matches(header: str | None, etag: str, weak: bool = True) -> bool:
    """Whether an ``If-None-Match`` (weak comparison) or ``If-Range`` (strong) list names
    ``etag``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False
