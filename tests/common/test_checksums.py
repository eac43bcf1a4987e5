"""The checksum algorithms against independent references: hashlib and zlib for MD5, SHA-256
and CRC-32, a bitwise CRC-32C (RFC 3720 B.4) for the hardware-computed default."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest

from livefile.api.model import ChecksumAlgorithm
from livefile.impl_common.checksums import new_digest, parse_stored, stored_form

CASTAGNOLI_REFLECTED = 0x82F63B78


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C one bit at a time: slow, and plainly the definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CASTAGNOLI_REFLECTED if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def digest_of(algorithm: ChecksumAlgorithm, pieces: list[bytes]) -> str:
    digest = new_digest(algorithm)
    for piece in pieces:
        digest.update(memoryview(piece))  # the SDK hashes views of its read buffer
    return digest.hexdigest()


def test_crc32c_has_its_published_check_value() -> None:
    assert digest_of(ChecksumAlgorithm.CRC32C, [b"1234", b"56789"]) == "e3069283"


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4096, 65537])
def test_crc32c_in_pieces_matches_the_bitwise_definition(size: int) -> None:
    data = os.urandom(size)
    pieces = [data[i : i + 1000] for i in range(0, size, 1000)] or [b""]
    assert digest_of(ChecksumAlgorithm.CRC32C, pieces) == f"{crc32c_bitwise(data):08x}"


def test_the_other_algorithms_match_hashlib_and_zlib() -> None:
    data = os.urandom(100_000)
    pieces = [data[:33], data[33:]]
    assert digest_of(ChecksumAlgorithm.MD5, pieces) == hashlib.md5(data).hexdigest()
    assert digest_of(ChecksumAlgorithm.SHA256, pieces) == hashlib.sha256(data).hexdigest()
    assert digest_of(ChecksumAlgorithm.CRC32, pieces) == f"{zlib.crc32(data):08x}"


@pytest.mark.parametrize("algorithm", list(ChecksumAlgorithm))
def test_stored_form_names_the_algorithm_except_for_md5(algorithm: ChecksumAlgorithm) -> None:
    stored = stored_form(algorithm, "00ff")
    assert stored == ("00ff" if algorithm is ChecksumAlgorithm.MD5 else f"{algorithm}:00ff")
    assert parse_stored(stored) == (algorithm, "00ff")
