"""OpenSSH SSHSIG signatures (``ssh-keygen -Y sign``/``-Y verify``) with Ed25519 keys.

    >>> key = SigningKey.generate()
    >>> armored = sign(key, b"exhibit 7", "evault")
    >>> armored.splitlines()[0]
    '-----BEGIN SSH SIGNATURE-----'
    >>> verify(armored, b"exhibit 7", "evault", trusted=[key.public]) == key.public
    True

The format is OpenSSH's PROTOCOL.sshsig. The blob inside the armor is::

    byte[6] "SSHSIG" | uint32 1 | string publickey | string namespace
    | string reserved | string hash_algorithm | string signature

and the key signs ``"SSHSIG" | string namespace | string reserved | string hash_algorithm
| string H(message)``, so a signature made for one namespace never verifies in another.
We sign with sha512, as ``ssh-keygen`` does, and accept sha256 and sha512 when verifying.

The reserved field must be empty. PROTOCOL.sshsig says verifiers "should ignore" a
non-empty one, but OpenSSH leaves it out of the signed data, so its bytes would be
unauthenticated and could be changed without breaking the signature. No signer fills it in,
so we refuse it.

Allowed-signers files (ssh-keygen(1), "ALLOWED SIGNERS") are read by
:func:`parse_allowed_signers` and written by :func:`format_allowed_signers`. Use
:func:`trusted_keys` to turn them into the ``trusted`` argument of :func:`verify`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO

from vault.crypto.keys import SSH_ED25519, SigningKey, SshReader, VerifyKey, ssh_string
from vault.errors import UsageError, VerificationError

__all__ = [
    "AllowedSigner",
    "SshSignature",
    "format_allowed_signers",
    "parse",
    "parse_allowed_signers",
    "sign",
    "trusted_keys",
    "verify",
]

MAGIC_PREAMBLE = b"SSHSIG"
SIG_VERSION = 1
HASH_ALGORITHMS = ("sha256", "sha512")
SIGN_HASH_ALGORITHM = "sha512"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
ARMOR_WIDTH = 70  # what sshbuf_dtob64() writes, although the spec suggests 76
MAX_ARMOR = 64 * 1024
READ_SIZE = 1024 * 1024

_ED25519_SIGNATURE_LEN = 64


# -- signatures --------------------------------------------------------------------------


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG blob. ``signature`` holds the raw 64-byte Ed25519 signature.

    Construction checks every field, so an ``SshSignature`` is always well formed; whether
    it verifies is :func:`verify`'s question.
    """

    public_key: VerifyKey
    namespace: str
    hash_algorithm: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_namespace(self.namespace, VerificationError)
        if self.hash_algorithm not in HASH_ALGORITHMS:
            raise VerificationError(
                f"ssh signature: hash algorithm {self.hash_algorithm!r} is not supported "
                f"(expected {' or '.join(HASH_ALGORITHMS)})"
            )
        if len(self.signature) != _ED25519_SIGNATURE_LEN:
            raise VerificationError(
                f"ssh signature: ed25519 signature is {len(self.signature)} bytes, expected 64"
            )

    @property
    def blob(self) -> bytes:
        """The binary SSHSIG blob (what the armor base64-encodes)."""
        return (
            MAGIC_PREAMBLE
            + struct.pack(">I", SIG_VERSION)
            + ssh_string(self.public_key.ssh_blob)
            + ssh_string(self.namespace.encode("utf-8"))
            + ssh_string(b"")  # reserved
            + ssh_string(self.hash_algorithm.encode("ascii"))
            + ssh_string(ssh_string(SSH_ED25519) + ssh_string(self.signature))
        )

    def armor(self) -> str:
        """The armored text, byte for byte as ``ssh-keygen -Y sign`` writes it."""
        b64 = base64.b64encode(self.blob).decode("ascii")
        lines = [b64[i : i + ARMOR_WIDTH] for i in range(0, len(b64), ARMOR_WIDTH)]
        return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def sign(key: SigningKey, message: bytes | BinaryIO, namespace: str) -> str:
    """Sign ``message`` under ``namespace``; return the armored SSHSIG text (sha512).

    ``message`` is bytes or a binary file object, which is hashed in 1 MiB reads from its
    current position to its end.
    """
    _check_namespace(namespace, UsageError)
    digest = _hash_message(message, SIGN_HASH_ALGORITHM)
    raw = key.sign(_signed_data(namespace, SIGN_HASH_ALGORITHM, digest))
    return SshSignature(key.public, namespace, SIGN_HASH_ALGORITHM, raw).armor()


def verify(
    armored: str | bytes,
    message: bytes | BinaryIO,
    namespace: str,
    trusted: Iterable[VerifyKey] | None = None,
) -> VerifyKey:
    """Check an armored SSHSIG signature over ``message``; return the signer's public key.

    Raises :class:`VerificationError` when the armor or blob is malformed, the namespace is
    not ``namespace``, the signer is not in ``trusted`` (when given) or the signature does
    not verify. A file-object ``message`` is read only once the cheaper checks have passed.
    """
    _check_namespace(namespace, UsageError)
    sig = parse(armored)
    if sig.namespace != namespace:
        raise VerificationError(
            f"ssh signature: namespace is {sig.namespace!r}, expected {namespace!r}"
        )
    if trusted is not None and sig.public_key not in set(trusted):
        raise VerificationError(
            f"ssh signature: signer {sig.public_key.fingerprint} is not a trusted key; "
            "add it to the allowed signers if it should be"
        )
    digest = _hash_message(message, sig.hash_algorithm)
    signed = _signed_data(sig.namespace, sig.hash_algorithm, digest)
    try:
        sig.public_key.verify(sig.signature, signed)
    except (VerificationError, ValueError):
        raise VerificationError(
            f"ssh signature: signature by {sig.public_key.fingerprint} does not verify "
            "for this message"
        ) from None
    return sig.public_key


def parse(armored: str | bytes) -> SshSignature:
    """Parse an armored SSHSIG signature without verifying it.

    Raises :class:`VerificationError` naming the first rule the input breaks; input over
    64 KiB is refused before it is decoded.
    """
    return _parse_blob(_dearmor(armored))


def _parse_blob(blob: bytes) -> SshSignature:
    if blob[: len(MAGIC_PREAMBLE)] != MAGIC_PREAMBLE:
        raise VerificationError("ssh signature: blob does not start with 'SSHSIG'")
    r = SshReader(blob[len(MAGIC_PREAMBLE) :])
    try:
        version = r.uint32()
        if version != SIG_VERSION:
            raise VerificationError(
                f"ssh signature: version {version} is not supported (expected {SIG_VERSION})"
            )
        key_blob = r.string()
        namespace = r.string()
        reserved = r.string()
        hash_algorithm = r.string()
        sig_blob = r.string()
        if not r.at_end():
            raise VerificationError("ssh signature: trailing bytes after the signature field")
    except ValueError as e:
        raise VerificationError(f"ssh signature: malformed blob ({e})") from None
    try:
        key_type = SshReader(key_blob).string()
    except ValueError as e:
        raise VerificationError(f"ssh signature: malformed public key ({e})") from None
    if key_type != SSH_ED25519:
        raise VerificationError(
            f"ssh signature: key type {key_type.decode('ascii', 'replace')!r} is not supported "
            "(expected 'ssh-ed25519')"
        )
    try:
        public_key = VerifyKey.from_ssh_blob(key_blob)
    except UsageError as e:
        raise VerificationError(f"ssh signature: {e}") from None
    if reserved:
        raise VerificationError("ssh signature: reserved field is not empty")
    try:
        ns = namespace.decode("utf-8")
        alg = hash_algorithm.decode("ascii")
    except UnicodeDecodeError:
        raise VerificationError("ssh signature: namespace or hash algorithm is not text") from None
    try:
        sr = SshReader(sig_blob)
        sig_type = sr.string()
        raw = sr.string()
        if not sr.at_end():
            raise ValueError("trailing bytes")
    except ValueError as e:
        raise VerificationError(f"ssh signature: malformed signature field ({e})") from None
    if sig_type != SSH_ED25519:
        raise VerificationError(
            f"ssh signature: signature type {sig_type.decode('ascii', 'replace')!r} "
            "does not match key type 'ssh-ed25519'"
        )
    return SshSignature(public_key, ns, alg, raw)


def _dearmor(armored: str | bytes) -> bytes:
    if len(armored) > MAX_ARMOR:
        raise VerificationError(
            f"ssh signature: armor is {len(armored)} bytes, over the {MAX_ARMOR // 1024} KiB limit"
        )
    if isinstance(armored, bytes | bytearray | memoryview):
        try:
            text = bytes(armored).decode("ascii")
        except UnicodeDecodeError:
            raise VerificationError("ssh signature: armor is not ascii text") from None
    else:
        text = armored
    # As sshsig_dearmor(): the header opens the text, the body ends at the first footer.
    if not text.startswith(ARMOR_BEGIN + "\n"):
        raise VerificationError(f"ssh signature: text does not start with '{ARMOR_BEGIN}'")
    body_start = len(ARMOR_BEGIN) + 1
    # Searching from the header's own newline lets an empty body be named as such.
    body_end = text.find("\n" + ARMOR_END, body_start - 1)
    if body_end < 0:
        raise VerificationError(f"ssh signature: missing '{ARMOR_END}' footer")
    if text[body_end + 1 + len(ARMOR_END) :].strip(" \t\r\n"):
        raise VerificationError(f"ssh signature: text after the '{ARMOR_END}' footer")
    body = re.sub(r"[ \t\r\n]", "", text[body_start:body_end])
    try:
        blob = base64.b64decode(body, validate=True)
    except ValueError:
        raise VerificationError("ssh signature: armor body is not valid base64") from None
    if not blob:
        raise VerificationError("ssh signature: armor body is empty")
    return blob


def _check_namespace(namespace: str, error: type[UsageError] | type[VerificationError]) -> None:
    if not namespace:
        raise error("ssh signature: namespace must not be empty")
    if "\0" in namespace:
        raise error("ssh signature: namespace must not contain a nul character")


_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _hash_message(message: bytes | BinaryIO, algorithm: str) -> bytes:
    h = _HASHES[algorithm]()
    if isinstance(message, bytes | bytearray | memoryview):
        h.update(message)
        return h.digest()
    # Evidence can be many GiB: hash it in bounded reads, never whole.
    while True:
        chunk = message.read(READ_SIZE)
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise UsageError("ssh signature: message file returns text; open it in binary mode")
        if not chunk:
            return h.digest()
        h.update(chunk)


def _signed_data(namespace: str, hash_algorithm: str, digest: bytes) -> bytes:
    # The reserved field is signed empty, as OpenSSH signs and checks it.
    return (
        MAGIC_PREAMBLE
        + ssh_string(namespace.encode("utf-8"))
        + ssh_string(b"")
        + ssh_string(hash_algorithm.encode("ascii"))
        + ssh_string(digest)
    )


# -- allowed signers ---------------------------------------------------------------------


@dataclass(frozen=True)
class AllowedSigner:
    """One line of an OpenSSH allowed_signers file.

    ``principals`` and ``namespaces`` are OpenSSH pattern lists (``*``, ``?``, ``!negation``);
    ``namespaces`` is None when the line does not restrict them. ``valid_after`` and
    ``valid_before`` are timezone-aware; a time written without ``Z`` is local time, as
    ssh-keygen reads it.
    """

    principals: tuple[str, ...]
    key: VerifyKey
    namespaces: tuple[str, ...] | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None

    def __post_init__(self) -> None:
        if not self.principals:
            raise UsageError("allowed signer: at least one principal is required")
        for p in self.principals:
            if not p or any(c in p for c in ',"\r\n\0'):
                raise UsageError(
                    f"allowed signer: principal {p!r} must be non-empty, "
                    "without commas, quotes or line breaks"
                )
        if self.namespaces is not None:
            if not self.namespaces:
                raise UsageError("allowed signer: namespaces, when given, must not be empty")
            for n in self.namespaces:
                if not n or any(c in n for c in ',"\\ \t\r\n\0'):
                    raise UsageError(
                        f"allowed signer: namespace {n!r} must be non-empty, "
                        "without commas, quotes, backslashes or whitespace"
                    )
        for name, t in (("valid-after", self.valid_after), ("valid-before", self.valid_before)):
            if t is not None and t.utcoffset() is None:
                raise UsageError(f"allowed signer: {name} must be a timezone-aware datetime")
        if (
            self.valid_after is not None
            and self.valid_before is not None
            and self.valid_before <= self.valid_after
        ):
            raise UsageError("allowed signer: valid-before is not after valid-after")

    def check(
        self, *, namespace: str, principal: str | None = None, now: datetime | None = None
    ) -> None:
        """Raise :class:`VerificationError` unless this entry admits its key for the use.

        The rules are ssh-keygen's: ``principal`` (when given) must match the principals,
        ``namespace`` the namespaces, and ``now`` (default: the current time) must lie
        within valid-after and valid-before.
        """
        who = f"allowed signer {self.key.fingerprint}"
        if principal is not None and not _match_pattern_list(principal, self.principals):
            raise VerificationError(
                f"{who}: principal {principal!r} does not match {','.join(self.principals)!r}"
            )
        if self.namespaces is not None and not _match_pattern_list(namespace, self.namespaces):
            raise VerificationError(
                f"{who}: namespace {namespace!r} is not among {','.join(self.namespaces)!r}"
            )
        when = datetime.now(timezone.utc) if now is None else now
        if self.valid_after is not None and when < self.valid_after:
            raise VerificationError(
                f"{who}: not valid before {_format_time(self.valid_after)} (valid-after)"
            )
        if self.valid_before is not None and when > self.valid_before:
            raise VerificationError(
                f"{who}: expired at {_format_time(self.valid_before)} (valid-before)"
            )


def trusted_keys(
    entries: Iterable[AllowedSigner],
    *,
    namespace: str,
    principal: str | None = None,
    now: datetime | None = None,
) -> list[VerifyKey]:
    """The keys of ``entries`` admitted for ``namespace`` (and ``principal``) at ``now``.

    Pass the result as :func:`verify`'s ``trusted`` argument.
    """
    keys: list[VerifyKey] = []
    for entry in entries:
        try:
            entry.check(namespace=namespace, principal=principal, now=now)
        except VerificationError:
            continue
        if entry.key not in keys:
            keys.append(entry.key)
    return keys


def parse_allowed_signers(text: str) -> list[AllowedSigner]:
    """Parse an OpenSSH allowed_signers file (ssh-keygen(1), "ALLOWED SIGNERS").

    Blank lines and ``#`` comments are skipped. Raises :class:`UsageError` naming the line
    for a malformed line, an unknown option, ``cert-authority`` (certificates are not
    supported) or a key that is not ssh-ed25519.
    """
    entries: list[AllowedSigner] = []
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            entry = _parse_allowed_signer_line(line)
        except UsageError as e:
            reason = str(e).removeprefix("allowed signer: ")
            raise UsageError(f"allowed signers line {number}: {reason}") from None
        if entry is not None:
            entries.append(entry)
    return entries


def format_allowed_signers(entries: Iterable[AllowedSigner]) -> str:
    """The allowed_signers text for ``entries``, one line each, that ssh-keygen reads."""
    return "".join(_format_allowed_signer(e) + "\n" for e in entries)


_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ssh-ed25519@openssh.com",
        "ssh-xmss@openssh.com",
    }
)
_OPTIONS = ("namespaces", "valid-after", "valid-before")
_TIME = re.compile(r"(\d{8}|\d{12}|\d{14})(z|utc)?", re.IGNORECASE)


def _is_key_type(token: str) -> bool:
    return token in _KEY_TYPES or token.endswith("-cert-v01@openssh.com")


def _parse_allowed_signer_line(line: str) -> AllowedSigner | None:
    rest = line.strip(" \t\r\n")
    if not rest or rest.startswith("#"):
        return None
    principals, rest = _take_principals(rest)
    # Not just "not rest": str.split() also takes \x0b, \x1c-\x1f and the like for blanks.
    if not rest.split():
        raise UsageError("missing key after the principals")
    options: dict[str, str] = {}
    if not _is_key_type(rest.split(None, 1)[0]):
        options_text, rest = _take_options(rest)
        options = _parse_options(options_text)
        if not rest.split():
            raise UsageError("missing key after the options")
    fields = rest.split()
    if fields[0] != "ssh-ed25519":
        raise UsageError(f"key type {fields[0]} is not supported; use an ssh-ed25519 key")
    if len(fields) < 2:
        raise UsageError("missing base64 key after 'ssh-ed25519'")
    key = VerifyKey.from_openssh(f"{fields[0]} {fields[1]}")
    namespaces = options.get("namespaces")
    after = options.get("valid-after")
    before = options.get("valid-before")
    return AllowedSigner(
        principals=tuple(principals.split(",")),
        key=key,
        namespaces=None if namespaces is None else tuple(namespaces.split(",")),
        valid_after=None if after is None else _parse_time("valid-after", after),
        valid_before=None if before is None else _parse_time("valid-before", before),
    )


def _take_principals(rest: str) -> tuple[str, str]:
    if rest.startswith('"'):
        close = rest.find('"', 1)
        if close < 0:
            raise UsageError("principals: missing closing quote")
        field, after = rest[1:close], rest[close + 1 :]
        if after and after[0] not in " \t":
            raise UsageError("principals: text right after the closing quote")
    else:
        end = re.match(r'[^ \t"]*', rest)
        assert end is not None  # the pattern matches the empty string
        field, after = end.group(), rest[end.end() :]
        if after.startswith('"'):
            raise UsageError("principals: quote inside the field; quote the whole field")
    return field, after.lstrip(" \t")


def _take_options(rest: str) -> tuple[str, str]:
    # As sshkey_advance_past_options(): options run to the first unquoted blank.
    quoted = False
    i = 0
    while i < len(rest) and (quoted or rest[i] not in " \t"):
        if rest.startswith('\\"', i):
            i += 1
        elif rest[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise UsageError("options: missing closing quote")
    return rest[:i], rest[i:].lstrip(" \t")


def _parse_options(text: str) -> dict[str, str]:
    # As sshsigopt_parse(): comma-separated, keywords case-insensitive, values quoted.
    options: dict[str, str] = {}
    pos = 0
    while True:
        lowered = text[pos:].lower()
        if lowered.startswith("cert-authority"):
            raise UsageError(
                "cert-authority is not supported; list each signer's own ssh-ed25519 key"
            )
        name = next((o for o in _OPTIONS if lowered.startswith(o + "=")), None)
        if name is None:
            raise UsageError(f"unknown option {text[pos:].split(',', 1)[0]!r}")
        if name in options:
            raise UsageError(f"more than one {name} option")
        options[name], pos = _dequote(text, pos + len(name) + 1, name)
        if pos == len(text):
            return options
        if text[pos] != ",":
            raise UsageError(f"unexpected {text[pos:]!r} after the {name} option")
        pos += 1
        if pos == len(text):
            raise UsageError("options end with a comma")


def _dequote(text: str, pos: int, name: str) -> tuple[str, int]:
    # As opt_dequote(): a double-quoted value in which \" stands for a quote.
    if not text.startswith('"', pos):
        raise UsageError(f'{name} value must be in double quotes: {name}="..."')
    out: list[str] = []
    pos += 1
    while pos < len(text) and text[pos] != '"':
        if text.startswith('\\"', pos):
            pos += 1
        out.append(text[pos])
        pos += 1
    if pos == len(text):
        raise UsageError(f"{name} value: missing closing quote")
    return "".join(out), pos + 1


def _parse_time(name: str, value: str) -> datetime:
    # As parse_absolute_time(): YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, then Z for UTC.
    m = _TIME.fullmatch(value)
    if m is None:
        raise UsageError(f"{name} {value!r} is not a YYYYMMDD[HHMM[SS]][Z] time")
    digits = m.group(1).ljust(14, "0")
    try:
        naive = datetime(
            int(digits[0:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            int(digits[12:14]),
        )
    except ValueError as e:
        raise UsageError(f"{name} {value!r} is not a valid time ({e})") from None
    return naive.replace(tzinfo=timezone.utc) if m.group(2) else naive.astimezone()


def _format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y%m%d%H%M%SZ")


def _format_allowed_signer(entry: AllowedSigner) -> str:
    principals = ",".join(entry.principals)
    if principals.startswith("#") or any(c in principals for c in " \t"):
        principals = f'"{principals}"'
    options: list[str] = []
    if entry.namespaces is not None:
        options.append(f'namespaces="{",".join(entry.namespaces)}"')
    if entry.valid_after is not None:
        options.append(f'valid-after="{_format_time(entry.valid_after)}"')
    if entry.valid_before is not None:
        options.append(f'valid-before="{_format_time(entry.valid_before)}"')
    fields = [principals, ",".join(options), entry.key.openssh()]
    return " ".join(f for f in fields if f)


def _match_pattern(text: str, pattern: str) -> bool:
    # OpenSSH match_pattern(): '*' any run, '?' any one character, the rest literal.
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c)
        for c in re.sub(r"\*+", "*", pattern)
    )
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _match_pattern_list(text: str, patterns: Iterable[str]) -> bool:
    # OpenSSH match_pattern_list(): a matching '!pattern' vetoes, else any positive match.
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _match_pattern(text, pattern[1:]):
                return False
        elif _match_pattern(text, pattern):
            matched = True
    return matched
