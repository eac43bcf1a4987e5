"""Transcoding uploads to UTF-8: charsets, BOMs, and text split across reads."""

from __future__ import annotations

import codecs

import pytest

from livefile.impl_common.transcoding import TranscodingError, Utf8Transcoder

TEXT = "Grüße aus Köln, Ärger über Öl und Spaß, naïve café\nzweite Zeile\n"
TEXT_1252 = TEXT + "\u20ac \u2013 \u201cquoted\u201d\n"  # euro, en dash, curly quotes


def transcode(data: bytes, charset: str, piece: int = 1) -> bytes:
    transcoder = Utf8Transcoder(charset)
    out = b"".join(transcoder.feed(data[i : i + piece]) for i in range(0, len(data), piece))
    return out + transcoder.finish()


@pytest.mark.parametrize(
    ("charset", "encoded"),
    [
        ("ISO-8859-1", TEXT.encode("latin-1")),
        ("windows-1252", TEXT_1252.encode("cp1252")),
        ("UTF-8", TEXT.encode()),
        ("UTF-8", codecs.BOM_UTF8 + TEXT.encode()),
        ("UTF-16", codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")),
        ("UTF-16", codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be")),
        ("UTF-16", TEXT.encode("utf-16-be")),
        ("UTF-16LE", TEXT.encode("utf-16-le")),
        ("UTF-16LE", codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")),
        ("UTF-16BE", codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be")),
    ],
)
@pytest.mark.parametrize("piece", [1, 2, 3, 64, 10_000])
def test_text_becomes_exact_utf8(charset: str, encoded: bytes, piece: int) -> None:
    expected = TEXT_1252 if charset == "windows-1252" else TEXT
    assert transcode(encoded, charset, piece) == expected.encode()


@pytest.mark.parametrize(
    ("charset", "encoded"),
    [
        ("UTF-16LE", codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be")),
        ("UTF-16BE", codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")),
        ("UTF-8", codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")),
        ("latin-1", codecs.BOM_UTF8 + TEXT.encode()),
    ],
)
def test_contradicting_bom_is_an_error(charset: str, encoded: bytes) -> None:
    with pytest.raises(TranscodingError, match="byte-order mark"):
        transcode(encoded, charset, 7)


def test_invalid_utf8_is_an_error() -> None:
    with pytest.raises(TranscodingError, match="not valid UTF-8"):
        transcode(b"ok \xff\xfe bad", "utf-8", 4)


def test_truncated_utf16_is_an_error_at_the_end() -> None:
    with pytest.raises(TranscodingError):
        transcode(TEXT.encode("utf-16-le")[:-1], "utf-16le", 5)


def test_short_text_without_bom() -> None:
    assert transcode(b"a", "latin-1") == b"a"
    assert transcode(b"", "utf-16") == b""


def test_unknown_charset_is_refused() -> None:
    with pytest.raises(TranscodingError, match="Unsupported charset"):
        Utf8Transcoder("ebcdic")
