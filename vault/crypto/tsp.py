"""RFC 3161 time-stamp tokens: the request for a message, and the check of the answer.

    >>> query = TimestampQuery.for_message(b"a signed note\\n")     # doctest: +SKIP
    >>> answer = post(url, query.der)                                  # (the service's job)
    >>> token = check_answer(answer, b"a signed note\\n", roots, nonce=query.nonce)
    >>> token.attested_at, token.tsa                                   # doctest: +SKIP

One job: the ASN.1 of RFC 3161 through ``rfc3161-client`` (the verifier sigstore-python
uses, built on ``cryptography``), never by hand. A token is kept as the whole DER
``TimeStampResp`` that the TSA sent (``openssl ts -verify -in token.tsr`` reads that form).
:func:`check_answer` accepts a token only if its status is granted (grantedWithMods is
refused, as sigstore-python does), its signature chains to one of ``roots`` at the time
the token states, its signing certificate has the critical
extended key usage timeStamping, its message imprint is the SHA-256, SHA-384 or SHA-512 of
``message``, and, when given, its nonce and policy are the ones asked for. Anything else is
a :class:`~vault.errors.VerificationError` that says which rule failed.

The library is imported on first use: a command that never meets a token does not pay for
it.

May import: ``rfc3161_client``, ``cryptography``, the standard library and ``vault.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from vault.errors import UsageError, VerificationError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from rfc3161_client import TimeStampResponse

UNTRUSTED = "its signature does not chain to a trusted TSA certificate at its time"
"""The reason a token from a TSA the reader does not trust is refused."""

MAX_TOKEN = 64 * 1024
"""A token larger than this is refused unread (a TSA's answer is a few kB)."""


@dataclass(frozen=True, slots=True)
class TimestampQuery:
    """A DER ``TimeStampReq`` for the SHA-256 of a message, with a fresh random nonce, asking
    the TSA to include its certificate."""

    der: bytes
    nonce: int

    @classmethod
    def for_message(cls, message: bytes) -> TimestampQuery:
        """The request for ``message`` (the bytes whose existence the token will prove)."""
        import rfc3161_client

        if not message:
            raise UsageError("timestamp: the message to timestamp is empty")
        request = (rfc3161_client.TimestampRequestBuilder()
                   .data(message)
                   .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
                   .nonce(nonce=True)
                   .cert_request(cert_request=True)
                   .build())
        assert request.nonce is not None  # asked for above
        return cls(request.as_bytes(), int(request.nonce))


@dataclass(frozen=True, slots=True)
class Token:
    """A checked time-stamp token: when the TSA attests the message existed, and who it is.

    ``tsa`` is the signing certificate's subject (RFC 4514), ``serial`` the token's serial
    number, ``policy`` its policy OID in dotted form, ``der`` the whole ``TimeStampResp``.
    """

    attested_at: datetime
    tsa: str
    serial: int
    policy: str
    der: bytes


@dataclass(frozen=True, slots=True)
class TrustRoots:
    """The TSA certificates a token may chain to (``+`` joins two sets)."""

    certificates: tuple[Certificate, ...] = ()

    def __add__(self, other: TrustRoots) -> TrustRoots:
        return TrustRoots(self.certificates + other.certificates)

    def __bool__(self) -> bool:
        return bool(self.certificates)


def load_roots(pem: bytes, source: str) -> TrustRoots:
    """The certificates of a PEM file, for :func:`check_answer`'s ``roots``."""
    from cryptography import x509

    try:
        roots = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise UsageError(f"{source}: not a PEM certificate file; give the TSA's CA "
                         "certificate(s) in PEM form") from None
    return TrustRoots(tuple(roots))


def _decode(der: bytes) -> TimeStampResponse:
    import rfc3161_client

    if len(der) > MAX_TOKEN:
        raise VerificationError(f"larger than {MAX_TOKEN} bytes")
    try:
        return rfc3161_client.decode_timestamp_response(der)
    except ValueError:
        raise VerificationError("not a DER RFC 3161 TimeStampResp") from None


def check_answer(
    der: bytes,
    message: bytes,
    roots: TrustRoots,
    *,
    nonce: int | None = None,
    policy: str | None = None,
) -> Token:
    """Check a TSA's answer for ``message`` (see the module's rules); the token, or a
    VerificationError naming the rule it breaks."""
    import rfc3161_client
    from cryptography import x509

    response = _decode(der)
    if response.status != rfc3161_client.PKIStatus.GRANTED:
        raise VerificationError(f"the TSA refused the request (PKI status {response.status})")
    if not roots:
        raise VerificationError("no TSA certificate to trust it against")
    builder = rfc3161_client.VerifierBuilder(roots=list(roots.certificates))
    if nonce is not None:
        builder = builder.nonce(nonce)
    if policy is not None:
        builder = builder.policy_id(x509.ObjectIdentifier(policy))
    try:
        builder.build().verify_message(response, message)
    except rfc3161_client.VerificationError as e:
        raise VerificationError(_reason(str(e))) from None
    except ValueError as e:  # a malformed field found while checking
        raise VerificationError(f"malformed token ({e})") from None
    info = response.tst_info
    certificates = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    [signer] = response.signed_data.signer_infos
    leaf = next(c for c in certificates
                if c.issuer == signer.issuer and c.serial_number == signer.serial_number)
    return Token(attested_at=_utc(info.gen_time),
                 tsa=leaf.subject.rfc4514_string(), serial=int(info.serial_number),
                 policy=info.policy.dotted_string, der=der)


def _reason(message: str) -> str:
    """The library's message as a rule a reader can act on."""
    if message == "Mismatch between messages":
        return "it was made for other data (message imprint differs)"
    if message.startswith("Error while verifying certificates"):
        return UNTRUSTED
    if message == "Nonce mismatch":
        return "its nonce is not the one asked for (a replayed answer)"
    if message == "Policy ID mismatch":
        return "its policy is not the one configured"
    if "EKU" in message:
        return f"its certificate is not a TSA's ({message.rstrip('.')})"
    return message.rstrip(".")


def attested_time(der: bytes) -> datetime:
    """The time a token states, read without checking it (to sort or show a kept token)."""
    return _utc(_decode(der).tst_info.gen_time)


def _utc(when: datetime) -> datetime:
    """A token's GeneralizedTime (UTC by RFC 3161) as an aware UTC datetime."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
