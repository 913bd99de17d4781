"""Bech32 (BIP 173) as age uses it: no 90-character limit, one case per string.

    >>> s = encode("age", bytes(32))
    >>> s[:5]
    'age1q'
    >>> decode(s) == ("age", bytes(32))
    True
    >>> decode(s.upper())[0]
    'AGE'

The checksum is always computed over the lowercase form; the human-readable part (HRP) is
returned in the case it was written, so callers can insist on ``age`` for recipients and
``AGE-SECRET-KEY-`` for identities, as age does. Errors are :class:`Bech32Error` (a
``ValueError``) whose message names the rule broken, never the input, which may be a secret.
"""

from __future__ import annotations

__all__ = ["Bech32Error", "decode", "encode"]

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


class Bech32Error(ValueError):
    """A string is not valid Bech32; the message names the rule, never the string."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    h = hrp.lower().encode("ascii")
    return [c >> 5 for c in h] + [0] + [c & 31 for c in h]


def _convert_bits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value >> frombits:
            raise Bech32Error("bech32 value out of range")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits:
        raise Bech32Error("bech32 data has excess padding")
    elif (acc << (tobits - bits)) & maxv:
        raise Bech32Error("bech32 data has non-zero padding")
    return out


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise Bech32Error("bech32 human-readable part is empty")
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise Bech32Error("bech32 human-readable part has a character outside ascii 33-126")


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp``; an uppercase HRP gives an all-uppercase string."""
    _check_hrp(hrp)
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise Bech32Error("bech32 human-readable part is mixed case")
    values = _convert_bits(data, 8, 5, pad=True)
    mod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(mod >> (5 * (5 - i))) & 31 for i in range(_CHECKSUM_LEN)]
    out = hrp.lower() + "1" + "".join(CHARSET[v] for v in values + checksum)
    return out if hrp.lower() == hrp else out.upper()


def decode(s: str) -> tuple[str, bytes]:
    """Decode ``s`` into its HRP (case as written) and data bytes, validating the checksum."""
    if s.lower() != s and s.upper() != s:
        raise Bech32Error("bech32 string is mixed case")
    pos = s.rfind("1")
    if pos < 1 or pos + 1 + _CHECKSUM_LEN > len(s):
        raise Bech32Error("bech32 separator '1' is missing or misplaced")
    hrp = s[:pos]
    _check_hrp(hrp)
    try:
        values = [_CHARSET_REV[c] for c in s[pos + 1 :].lower()]
    except KeyError:
        raise Bech32Error("bech32 data part has a character outside the alphabet") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("bad bech32 checksum")
    return hrp, bytes(_convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False))
