"""age v1 file encryption (https://age-encryption.org/v1), X25519 recipients only.

    >>> import io
    >>> identity = AgeIdentity.generate()
    >>> sealed = io.BytesIO()
    >>> with AgeWriter(sealed, [identity.recipient]) as w:
    ...     w.write(b"exhibit 7")
    9
    >>> _ = sealed.seek(0)
    >>> AgeReader(sealed, [identity]).read()
    b'exhibit 7'

Files written here are read by the stock ``age`` tool and the other way round. Both ends
stream in 64 KiB chunks with bounded memory: :class:`AgeWriter` and :class:`AgeReader` are
ordinary binary file objects (``tarfile.open(fileobj=..., mode="w|")`` works on them), and
:func:`encrypt` / :func:`decrypt` copy one stream to another; :func:`encrypted_size` says how
long an encrypted file will be before it is written.

Reading is strict, as the spec and the C2SP test vectors demand, and every failure is an
:class:`AgeError` of one kind: the header does not parse (:class:`AgeHeaderError`), no
identity opens a stanza (:class:`AgeNoMatchError`), the file asks for a recipient type this
module does not implement (:class:`AgeUnsupportedError`), the header MAC is wrong
(:class:`AgeHMACError`), the payload is damaged or truncated (:class:`AgePayloadError`), or the
ASCII armor is malformed (:class:`AgeArmorError`). A chunk's plaintext is released only once
that chunk has authenticated, and a damaged file fails exactly where the damage is found, so
a reader gets the intact prefix and then the error; a file is known to be complete only when
a read has returned ``b""``.

Armored input (``-----BEGIN AGE ENCRYPTED FILE-----``) is detected and decoded as it streams;
``AgeWriter(..., armor=True)`` writes it.

The package follows the seams of filippo.io/age, one job a module, each importing only the
modules above it in this list (its docstring says which):

- :mod:`.errors`: the :class:`AgeError` kinds;
- :mod:`.primitives`: HKDF, the file-key and tag sizes, the randomness source;
- :mod:`.byteio`: byte sources and sinks with bounded memory, the look-ahead buffer;
- :mod:`.header`: stanzas, the header's text form, its MAC, strict parsing;
- :mod:`.keys`: X25519 recipients and identities, wrapping and finding the file key;
- :mod:`.armor`: the ASCII armor, encoder and streaming decoder;
- :mod:`.stream`: the STREAM payload and the public file objects and functions.

Import the public names from here; the modules' underscored names are the package's own.
Only this package and the rest of :mod:`vault.crypto` import ``cryptography``.
"""

from __future__ import annotations

from vault.crypto.age.byteio import Fill as Fill
from vault.crypto.age.errors import (
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeNoMatchError,
    AgePayloadError,
    AgeUnsupportedError,
)
from vault.crypto.age.header import MAX_HEADER_SIZE as MAX_HEADER_SIZE
from vault.crypto.age.header import MAX_STANZAS as MAX_STANZAS
from vault.crypto.age.keys import AgeIdentity, AgeRecipient
from vault.crypto.age.primitives import FILE_KEY_SIZE as FILE_KEY_SIZE
from vault.crypto.age.primitives import TAG_SIZE as TAG_SIZE
from vault.crypto.age.primitives import Rng as Rng
from vault.crypto.age.stream import CHUNK_SIZE as CHUNK_SIZE
from vault.crypto.age.stream import ENC_CHUNK_SIZE as ENC_CHUNK_SIZE
from vault.crypto.age.stream import NONCE_SIZE as NONCE_SIZE
from vault.crypto.age.stream import AgeReader, AgeWriter, decrypt, encrypt, encrypted_size

__all__ = [
    "AgeArmorError",
    "AgeError",
    "AgeHMACError",
    "AgeHeaderError",
    "AgeIdentity",
    "AgeNoMatchError",
    "AgePayloadError",
    "AgeReader",
    "AgeRecipient",
    "AgeUnsupportedError",
    "AgeWriter",
    "decrypt",
    "encrypt",
    "encrypted_size",
]
