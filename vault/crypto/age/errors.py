"""The kinds of :class:`AgeError`, one for each stage at which reading an age file fails.

Its one job is the error vocabulary shared by every module of :mod:`vault.crypto.age`.
It may import :mod:`vault.errors` only.
"""

from __future__ import annotations

from vault.errors import DecryptionError


class AgeError(DecryptionError):
    """An age file cannot be decrypted; the subclass says at which stage it failed."""


class AgeHeaderError(AgeError):
    """The header (version line, stanzas, MAC line, payload nonce) is malformed."""


class AgeHMACError(AgeError):
    """A file key was unwrapped but the header MAC does not verify."""


class AgePayloadError(AgeError):
    """The payload is damaged, truncated, reordered or followed by extra data."""


class AgeNoMatchError(AgeError):
    """No identity given opens any recipient stanza of the file."""


class AgeArmorError(AgeError):
    """The ASCII armor around the file is malformed."""


class AgeUnsupportedError(AgeError):
    """The file is for a recipient type this module does not implement (scrypt, PQ, SSH)."""
