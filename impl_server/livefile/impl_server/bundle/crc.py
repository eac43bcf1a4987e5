"""CRC-32C of a concatenation from the CRC-32Cs of its parts (zlib's ``crc32_combine`` for the
Castagnoli polynomial): a bundle's checksum from its headers' and its members' checksums,
without reading a member again."""

from __future__ import annotations

_POLY = 0x82F63B78  # Castagnoli, reflected


def _multiply(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial (reflected bit order)."""
    mask = 1 << 31
    product = 0
    while True:
        if a & mask:
            product ^= b
            if not a & (mask - 1):
                return product
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    """``x^(2^k)`` modulo the polynomial, for k = 0..31."""
    table = []
    power = 1 << 30  # x^1
    for _ in range(32):
        table.append(power)
        power = _multiply(power, power)
    return table


_X_POWERS = _powers()


def _x_to_8n(n: int) -> int:
    """``x^(8n)`` modulo the polynomial: what shifting a CRC past n zero bytes multiplies by."""
    power = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            power = _multiply(_X_POWERS[k & 31], power)
        n >>= 1
        k += 1
    return power


def crc32c_combine(first: int, second: int, second_length: int) -> int:
    """The CRC-32C of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``."""
    return _multiply(_x_to_8n(second_length), first) ^ second
