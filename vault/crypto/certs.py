"""X.509 certificates in PEM files, checked before another library is handed them.

    >>> count_certificates(b"not a certificate")                      # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: no PEM certificate

May import: ``cryptography`` and the standard library.
"""

from __future__ import annotations

__all__ = ["count_certificates"]


def count_certificates(pem: bytes) -> int:
    """How many certificates the PEM text ``pem`` holds; ValueError if none, or if one of
    them cannot be parsed."""
    from cryptography import x509

    certificates = x509.load_pem_x509_certificates(pem)  # ValueError when there are none
    return len(certificates)
