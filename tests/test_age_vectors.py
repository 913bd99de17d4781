"""The C2SP/CCTV age test vectors (tests/vectors/age): each file declares its outcome.

Every vector decrypts twice, through ``AgeReader.read`` in small pieces and through
``decrypt()``, and both must release exactly the plaintext the vector's ``payload:`` hash
covers before failing with the declared kind of error.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vault.crypto.age import (
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeIdentity,
    AgeNoMatchError,
    AgePayloadError,
    AgeReader,
    AgeUnsupportedError,
    decrypt,
)

TESTDATA = Path(__file__).resolve().parent / "vectors" / "age" / "testdata"

OUTCOMES: dict[str, type[AgeError] | None] = {
    "success": None,
    "header failure": AgeHeaderError,
    "HMAC failure": AgeHMACError,
    "payload failure": AgePayloadError,
    "no match": AgeNoMatchError,
    "armor failure": AgeArmorError,
}

# Vectors that need a passphrase or a post-quantum identity cannot succeed here. The clean
# refusal is AgeUnsupportedError (the file carries a scrypt or mlkem768x25519 stanza nobody
# here can open) except where the file fails a rule this module does enforce first:
REFUSALS: dict[str, type[AgeError]] = {
    # "an scrypt stanza must be the only stanza" is a header rule, checked before any key
    "scrypt_double": AgeHeaderError,
    "scrypt_and_x25519": AgeHeaderError,
    # the X25519 stanza carries a hybrid-sized share: a malformed X25519 stanza
    "hybrid_x25519_arg": AgeHeaderError,
    # a stanza body that is not canonical base64 fails the generic header grammar
    "scrypt_not_canonical_body": AgeHeaderError,
    "hybrid_not_canonical_body": AgeHeaderError,
    # an uppercase type is not scrypt or mlkem768x25519 but an unknown type, which must be
    # ignored, so nothing matches (as the vectors themselves expect)
    "scrypt_uppercase": AgeNoMatchError,
    "hybrid_uppercase": AgeNoMatchError,
}


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None = None
    identities: list[str] = field(default_factory=list)
    passphrase: bool = False
    body: bytes = b""

    @property
    def supported(self) -> bool:
        x25519_only = all(i.startswith("AGE-SECRET-KEY-1") for i in self.identities)
        return x25519_only and not self.passphrase


def load(path: Path) -> Vector:
    head, sep, body = path.read_bytes().partition(b"\n\n")
    assert sep, f"{path.name}: no blank line after the vector header"
    v = Vector(name=path.name, expect="")
    compressed = False
    for line in head.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        if key == "expect":
            v.expect = value
        elif key == "payload":
            v.payload = value
        elif key == "identity":
            v.identities.append(value)
        elif key == "passphrase":
            v.passphrase = True
        elif key == "compressed":
            assert value == "zlib", f"{path.name}: unknown compression {value}"
            compressed = True
    v.body = zlib.decompress(body) if compressed else body
    return v


def read_in_pieces(v: Vector, identities: list[AgeIdentity]) -> tuple[str, AgeError | None]:
    digest = hashlib.sha256()
    try:
        reader = AgeReader(io.BytesIO(v.body), identities)
        while piece := reader.read(10_000):
            digest.update(piece)
    except AgeError as e:
        return digest.hexdigest(), e
    return digest.hexdigest(), None


def decrypt_whole(v: Vector, identities: list[AgeIdentity]) -> tuple[str, AgeError | None]:
    out = io.BytesIO()
    try:
        n = decrypt(io.BytesIO(v.body), out, identities)
    except AgeError as e:
        return hashlib.sha256(out.getvalue()).hexdigest(), e
    assert n == len(out.getvalue())
    return hashlib.sha256(out.getvalue()).hexdigest(), None


VECTORS = sorted(TESTDATA.iterdir())


def test_vectors_are_all_there() -> None:
    assert len(VECTORS) == 143


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_vector(path: Path) -> None:
    v = load(path)
    identities = [AgeIdentity.parse(i) for i in v.identities if i.startswith("AGE-SECRET-KEY-1")]
    refusal = REFUSALS.get(v.name, AgeUnsupportedError)
    expected = OUTCOMES[v.expect] if v.supported else refusal
    for run in (read_in_pieces, decrypt_whole):
        digest, error = run(v, identities)
        if expected is None:
            assert error is None, f"{run.__name__}: {error!r}"
        else:
            assert type(error) is expected, f"{run.__name__}: {error!r}"
        if v.supported and v.expect in ("success", "payload failure"):
            assert digest == v.payload, f"{run.__name__}: released plaintext differs"
