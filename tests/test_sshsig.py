"""SSHSIG: OpenSSH's own vector, every field tampered, and ssh-keygen both ways."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

import pytest
from conftest import VECTORS, require_tool
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from vault.crypto.keys import SigningKey, VerifyKey, ssh_string
from vault.crypto.sshsig import (
    AllowedSigner,
    SshSignature,
    format_allowed_signers,
    parse,
    parse_allowed_signers,
    sign,
    trusted_keys,
    verify,
)
from vault.errors import UsageError, VerificationError

V = VECTORS / "sshsig"
VECTOR_FINGERPRINT = "SHA256:ZxTZQ/K7JZpz0mHqWqdmYCUcq3MAtnu9TYA66TCBkxM"
MiB = 1024 * 1024


def vector_sig() -> str:
    return (V / "ed25519.sig").read_text()


def vector_data() -> bytes:
    return (V / "signed-data").read_bytes()


def vector_namespace() -> str:
    return (V / "namespace").read_text().strip()


def decode(armored: str) -> bytes:
    return base64.b64decode("".join(armored.splitlines()[1:-1]))


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return (
        "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"]) + "\n"
    )


def field_spans(blob: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of every field of an SSHSIG blob, nested strings included."""
    spans = {"magic": (0, 6), "version": (6, 10)}
    pos = 10
    for name in ("publickey", "namespace", "reserved", "hash_algorithm", "signature"):
        (n,) = struct.unpack_from(">I", blob, pos)
        spans[f"{name}.length"] = (pos, pos + 4)
        spans[name] = (pos + 4, pos + 4 + n)
        pos += 4 + n
    for outer in ("publickey", "signature"):
        start, _ = spans[outer]
        (n,) = struct.unpack_from(">I", blob, start)
        spans[f"{outer}.type"] = (start + 4, start + 4 + n)
        spans[f"{outer}.bytes"] = (start + 8 + n, spans[outer][1])
    assert pos == len(blob)
    return spans


def make_blob(
    *,
    key: SigningKey,
    message: bytes,
    namespace: str = "evault",
    version: int = 1,
    reserved: bytes = b"",
    hash_algorithm: str = "sha512",
    sig_type: bytes = b"ssh-ed25519",
    key_blob: bytes | None = None,
    trailing: bytes = b"",
) -> bytes:
    """An SSHSIG blob with any field chosen, signed the way OpenSSH signs."""
    import hashlib

    digest = hashlib.new(hash_algorithm if hash_algorithm in ("sha256", "sha512") else "sha512")
    digest.update(message)
    signed = (
        b"SSHSIG"
        + ssh_string(namespace.encode())
        + ssh_string(b"")
        + ssh_string(hash_algorithm.encode())
        + ssh_string(digest.digest())
    )
    return (
        b"SSHSIG"
        + struct.pack(">I", version)
        + ssh_string(key.public.ssh_blob if key_blob is None else key_blob)
        + ssh_string(namespace.encode())
        + ssh_string(reserved)
        + ssh_string(hash_algorithm.encode())
        + ssh_string(ssh_string(sig_type) + ssh_string(key.sign(signed)))
        + trailing
    )


class ReadSpy(io.BytesIO):
    """A binary file that records the size asked of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(size)
        return super().read(size)


# -- the OpenSSH vector ------------------------------------------------------------------


def test_vector_verifies_and_returns_the_signer() -> None:
    key = verify(vector_sig(), vector_data(), vector_namespace())
    assert key.fingerprint == VECTOR_FINGERPRINT
    assert key == VerifyKey.from_openssh((V / "ed25519.pub").read_text())


def test_vector_verifies_from_bytes_and_file_object() -> None:
    sig = (V / "ed25519.sig").read_bytes()
    with (V / "signed-data").open("rb") as f:
        assert verify(sig, f, "unittest").fingerprint == VECTOR_FINGERPRINT


def test_vector_parses() -> None:
    sig = parse(vector_sig())
    assert sig.namespace == "unittest"
    assert sig.hash_algorithm == "sha512"
    assert sig.public_key.fingerprint == VECTOR_FINGERPRINT
    assert len(sig.signature) == 64


def test_vector_tampered_data_fails() -> None:
    with pytest.raises(VerificationError):
        verify(vector_sig(), (V / "signed-data.tampered").read_bytes(), "unittest")


def test_vector_wrong_namespace_fails() -> None:
    with pytest.raises(VerificationError, match="namespace"):
        verify(vector_sig(), vector_data(), "evault")


def test_vector_trusted_signer_passes() -> None:
    pub = VerifyKey.from_openssh((V / "ed25519.pub").read_text())
    assert verify(vector_sig(), vector_data(), "unittest", trusted=[pub]) == pub


def test_vector_untrusted_signer_fails_naming_the_fingerprint() -> None:
    with pytest.raises(VerificationError) as e:
        verify(vector_sig(), vector_data(), "unittest", trusted=[SigningKey.generate().public])
    assert VECTOR_FINGERPRINT in str(e.value)
    with pytest.raises(VerificationError):
        verify(vector_sig(), vector_data(), "unittest", trusted=[])


def test_vector_rearmors_byte_identically() -> None:
    assert parse(vector_sig()).armor() == vector_sig()


FIELDS = [
    "magic",
    "version",
    "publickey.length",
    "publickey.type",
    "publickey.bytes",
    "namespace.length",
    "namespace",
    "reserved.length",
    "hash_algorithm.length",
    "hash_algorithm",
    "signature.length",
    "signature.type",
    "signature.bytes",
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("where", ["first", "last"])
def test_flipped_byte_in_each_field_fails(field: str, where: str) -> None:
    blob = bytearray(decode(vector_sig()))
    start, end = field_spans(bytes(blob))[field]
    blob[start if where == "first" else end - 1] ^= 0x01
    with pytest.raises(VerificationError):
        verify(armor(bytes(blob)), vector_data(), "unittest")


def test_every_single_bit_flip_fails() -> None:
    blob = decode(vector_sig())
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[i] ^= bit
            with pytest.raises(VerificationError):
                verify(armor(bytes(tampered)), vector_data(), "unittest")


# -- malformed input ---------------------------------------------------------------------

GOOD = vector_sig()


@pytest.mark.parametrize(
    "armored",
    [
        pytest.param("", id="empty"),
        pytest.param(GOOD.replace("BEGIN SSH SIGNATURE", "BEGIN PGP SIGNATURE"), id="header"),
        pytest.param(" " + GOOD, id="text-before-header"),
        pytest.param(GOOD.replace("\n", "\r\n"), id="crlf-header"),
        pytest.param(GOOD.replace("-----END SSH SIGNATURE-----\n", ""), id="no-footer"),
        pytest.param(GOOD + "more\n", id="text-after-footer"),
        pytest.param(GOOD.replace("U1NIU0lH", "U1NIU0l!"), id="not-base64"),
        pytest.param(GOOD.replace("Dg==", "Dg="), id="bad-padding"),
        pytest.param(
            "-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n", id="empty-body"
        ),
        pytest.param(GOOD.encode() + b"\xff", id="non-ascii-bytes"),
        pytest.param(GOOD.replace("U1NI", "U1NI" + "A" * 70 * 1000, 1), id="over-64-kib"),
    ],
)
def test_malformed_armor_is_refused(armored: str | bytes) -> None:
    with pytest.raises(VerificationError):
        parse(armored)
    with pytest.raises(VerificationError):
        verify(armored, vector_data(), "unittest")


def test_armor_tolerates_other_wrapping_and_trailing_newlines() -> None:
    blob = decode(GOOD)
    b64 = base64.b64encode(blob).decode()
    rewrapped = "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(
        b64[i : i + 76] for i in range(0, len(b64), 76)
    )
    text = rewrapped + "\n-----END SSH SIGNATURE-----\n\n"
    assert verify(text, vector_data(), "unittest").fingerprint == VECTOR_FINGERPRINT


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"version": 2}, id="version-2"),
        pytest.param({"version": 0}, id="version-0"),
        pytest.param({"reserved": b"tag"}, id="reserved-not-empty"),
        pytest.param({"hash_algorithm": "sha1"}, id="hash-sha1"),
        pytest.param({"sig_type": b"ssh-rsa"}, id="signature-type"),
        pytest.param({"trailing": b"\0"}, id="trailing-bytes"),
        pytest.param({"namespace": ""}, id="empty-namespace"),
        pytest.param(
            {"key_blob": ssh_string(b"ssh-rsa") + ssh_string(b"\1\0\1") + ssh_string(b"\1")},
            id="rsa-key",
        ),
        pytest.param(
            {"key_blob": ssh_string(b"ssh-ed25519") + ssh_string(b"\0" * 31)}, id="short-key"
        ),
    ],
)
def test_blob_rule_violations_are_refused(fields: dict[str, object]) -> None:
    key = SigningKey.generate()
    blob = make_blob(key=key, message=b"m", **fields)  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        verify(armor(blob), b"m", str(fields.get("namespace", "evault")) or "evault")


def test_signature_by_another_key_than_the_blob_names_fails() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    blob = make_blob(key=key, message=b"m", key_blob=other.public.ssh_blob)
    with pytest.raises(VerificationError):
        verify(armor(blob), b"m", "evault")


@pytest.mark.parametrize("hash_algorithm", ["sha256", "sha512"])
def test_both_hash_algorithms_verify(hash_algorithm: str) -> None:
    key = SigningKey.generate()
    text = armor(make_blob(key=key, message=b"m", hash_algorithm=hash_algorithm))
    assert parse(text).hash_algorithm == hash_algorithm
    assert verify(text, b"m", "evault") == key.public


def test_signature_value_object_validates() -> None:
    pub = SigningKey.generate().public
    with pytest.raises(VerificationError):
        SshSignature(pub, "evault", "md5", b"\0" * 64)
    with pytest.raises(VerificationError):
        SshSignature(pub, "evault", "sha512", b"\0" * 63)
    with pytest.raises(VerificationError):
        SshSignature(pub, "", "sha512", b"\0" * 64)


# -- signing -----------------------------------------------------------------------------


def test_sign_then_verify_round_trip() -> None:
    key = SigningKey.generate()
    text = sign(key, b"exhibit", "evault")
    assert verify(text, b"exhibit", "evault", trusted=[key.public]) == key.public
    with pytest.raises(VerificationError):
        verify(text, b"exhibit!", "evault")
    with pytest.raises(VerificationError):
        verify(text, b"exhibit", "evault-other")


def test_signature_has_ssh_keygen_structure() -> None:
    key = SigningKey.from_seed(bytes(range(32)))
    text = sign(key, b"exhibit", "evault")
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----"
    assert lines[-2:] == ["-----END SSH SIGNATURE-----", ""]
    body = lines[1:-2]
    assert all(len(line) == 70 for line in body[:-1]) and 0 < len(body[-1]) <= 70
    blob = decode(text)
    spans = field_spans(blob)
    assert blob[:10] == b"SSHSIG\0\0\0\1"
    assert blob[slice(*spans["publickey"])] == key.public.ssh_blob
    assert blob[slice(*spans["namespace"])] == b"evault"
    assert blob[slice(*spans["reserved"])] == b""
    assert blob[slice(*spans["hash_algorithm"])] == b"sha512"
    assert blob[slice(*spans["signature.type"])] == b"ssh-ed25519"
    # Same length as the vector made by OpenSSH, so same wrapping shape for a 6-byte namespace.
    assert len(blob) == len(decode(vector_sig())) - len("unittest") + len("evault")
    # Ed25519 is deterministic: the same key and message give the same text.
    assert sign(key, b"exhibit", "evault") == text


def test_sign_streams_a_file_in_bounded_reads() -> None:
    key = SigningKey.generate()
    data = bytes(range(256)) * (3 * MiB // 256 + 7)
    spy = ReadSpy(data)
    text = sign(key, spy, "evault")
    assert spy.sizes and all(s is not None and 0 < s <= MiB for s in spy.sizes)
    assert text == sign(key, data, "evault")
    spy = ReadSpy(data)
    assert verify(text, spy, "evault") == key.public
    assert all(s is not None and 0 < s <= MiB for s in spy.sizes)


def test_untrusted_signer_is_refused_before_the_message_is_read() -> None:
    key = SigningKey.generate()
    text = sign(key, b"m", "evault")
    spy = ReadSpy(b"m")
    with pytest.raises(VerificationError):
        verify(text, spy, "evault", trusted=[SigningKey.generate().public])
    assert spy.sizes == []


def test_text_mode_message_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        sign(SigningKey.generate(), io.StringIO("text"), "evault")  # type: ignore[arg-type]


@pytest.mark.parametrize("namespace", ["", "a\0b"])
def test_bad_namespace_is_a_usage_error(namespace: str) -> None:
    key = SigningKey.generate()
    with pytest.raises(UsageError):
        sign(key, b"m", namespace)
    with pytest.raises(UsageError):
        verify(sign(key, b"m", "evault"), b"m", namespace)


# -- allowed signers ---------------------------------------------------------------------

K1 = SigningKey.from_seed(b"\1" * 32).public
K2 = SigningKey.from_seed(b"\2" * 32).public


def test_allowed_signers_vector() -> None:
    (entry,) = parse_allowed_signers((V / "allowed_signers").read_text())
    assert entry.principals == ("test@example",)
    assert entry.namespaces == ("unittest",)
    assert entry.key.fingerprint == VECTOR_FINGERPRINT
    assert entry.valid_after is None and entry.valid_before is None
    key = verify(vector_sig(), vector_data(), "unittest", trusted=[entry.key])
    assert key == entry.key


def test_allowed_signers_full_syntax() -> None:
    text = "\n".join(
        [
            "# evidence signers",
            "",
            f"  a@x,b@x {K1.openssh('laptop')}",
            "\t# indented comment",
            f'"Jane Doe@x,*@lab" NAMESPACES="evault,file",Valid-After="20240101Z" {K2.openssh()}',
            f'c@x valid-before="202501021030" {K1.openssh()}\r',
            f'd@x valid-after="20240101120000UTC",valid-before="20250101000000z" {K2.openssh()}',
            "",
        ]
    )
    a, b, c, d = parse_allowed_signers(text)
    assert a == AllowedSigner(("a@x", "b@x"), K1)
    assert b.principals == ("Jane Doe@x", "*@lab")
    assert b.namespaces == ("evault", "file")
    assert b.valid_after == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert c.valid_before == datetime(2025, 1, 2, 10, 30).astimezone()  # local time, as ssh
    assert d.valid_after == datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    assert d.valid_before == datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_allowed_signers_format_round_trips() -> None:
    entries = [
        AllowedSigner(("a@x",), K1),
        AllowedSigner(("Jane Doe@x", "!bad@x", "*@x"), K2, ("evault", "git*")),
        AllowedSigner(
            ("#hash@x",),
            K1,
            None,
            datetime(2024, 1, 1, tzinfo=timezone.utc),
            datetime(2025, 6, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
    ]
    text = format_allowed_signers(entries)
    assert text.splitlines()[0] == f"a@x {K1.openssh()}"
    assert (
        text.splitlines()[1] == f'"Jane Doe@x,!bad@x,*@x" namespaces="evault,git*" {K2.openssh()}'
    )
    assert text.endswith("\n")
    assert parse_allowed_signers(text) == entries
    assert format_allowed_signers([]) == ""


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        (f"a@x cert-authority {K1.openssh()}", "cert-authority"),
        ("a@x ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-rsa"),
        ("a@x ecdsa-sha2-nistp256 AAAAE2VjZHNh", "ecdsa"),
        (f'a@x namespaces="evault" ssh-ed25519-cert-v01@openssh.com {K1.openssh()[12:]}', "cert"),
        (f"a@x no-touch-required {K1.openssh()}", "unknown option"),
        (f"a@x namespaces=evault {K1.openssh()}", "double quotes"),
        (f'a@x namespaces="evault {K1.openssh()}', "quote"),
        (f'a@x namespaces="a",namespaces="b" {K1.openssh()}', "more than one"),
        (f'a@x namespaces="a", {K1.openssh()}', "comma"),
        (f'a@x namespaces="a,,b" {K1.openssh()}', "namespace"),
        (f'a@x valid-after="2024" {K1.openssh()}', "valid-after"),
        (f'a@x valid-after="20241301" {K1.openssh()}', "valid-after"),
        (f'a@x valid-after="20250101Z",valid-before="20240101Z" {K1.openssh()}', "valid-before"),
        ("a@x", "missing key"),
        ('a@x namespaces="evault"', "missing key"),
        # Found by fuzzing: characters Python's str.split() takes for blanks (\x1f, \x0b)
        # where the key should be raised IndexError.
        ("a@x\t\x1f", "missing key"),
        ('a@x namespaces="evault" \x0b', "missing key"),
        ("a@x ssh-ed25519", "base64"),
        ("a@x ssh-ed25519 not-base64!", "base64"),
        (f'"a@x {K1.openssh()}', "quote"),
        (f'a"b"@x {K1.openssh()}', "quote"),
        (f"a@x,,b@x {K1.openssh()}", "principal"),
    ],
)
def test_allowed_signers_refusals_name_the_line(line: str, rule: str) -> None:
    text = f"# header\n\n{line}\n"
    with pytest.raises(UsageError) as e:
        parse_allowed_signers(text)
    assert "line 3" in str(e.value)
    assert rule in str(e.value)


def test_allowed_signer_check_and_trusted_keys() -> None:
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    entries = parse_allowed_signers(
        f'*@lab,!intruder@lab namespaces="evault" {K1.openssh()}\n'
        f'b@x valid-after="20240701Z" {K2.openssh()}\n'
    )
    assert trusted_keys(entries, namespace="evault", now=now) == [K1]
    assert trusted_keys(entries, namespace="evault", principal="ann@lab", now=now) == [K1]
    assert trusted_keys(entries, namespace="evault", principal="intruder@lab", now=now) == []
    assert trusted_keys(entries, namespace="git", now=now) == []
    later = datetime(2024, 7, 2, tzinfo=timezone.utc)
    assert trusted_keys(entries, namespace="git", principal="b@x", now=later) == [K2]
    with pytest.raises(VerificationError, match="namespace"):
        entries[0].check(namespace="git", now=now)
    with pytest.raises(VerificationError, match="valid-after"):
        entries[1].check(namespace="git", now=now)
    expired = AllowedSigner(("a@x",), K1, valid_before=now)
    with pytest.raises(VerificationError, match="valid-before"):
        expired.check(namespace="evault", now=now + timedelta(seconds=1))
    expired.check(namespace="evault", now=now)


def test_allowed_signer_value_object_validates() -> None:
    with pytest.raises(UsageError):
        AllowedSigner((), K1)
    with pytest.raises(UsageError):
        AllowedSigner(("a,b",), K1)
    with pytest.raises(UsageError):
        AllowedSigner(("a",), K1, ())
    with pytest.raises(UsageError):
        AllowedSigner(("a",), K1, valid_after=datetime(2024, 1, 1))


# -- interop with OpenSSH's ssh-keygen ---------------------------------------------------


def ssh_keygen(*args: str, stdin: BinaryIO | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("ssh-keygen"), *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def keygen_verify(
    tmp_path: Path, allowed: str, principal: str, sig: str, data: Path
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "allowed_signers").write_text(allowed)
    (tmp_path / "sig").write_text(sig)
    with data.open("rb") as f:
        return ssh_keygen(
            "-Y", "verify", "-f", str(tmp_path / "allowed_signers"), "-I", principal,
            "-n", "evault", "-s", str(tmp_path / "sig"), stdin=f,
        )  # fmt: skip


def keygen_key(tmp_path: Path) -> tuple[Path, VerifyKey]:
    k = tmp_path / "k"
    done = ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(k))
    assert done.returncode == 0, done.stderr
    return k, VerifyKey.from_openssh((tmp_path / "k.pub").read_text())


def keygen_sign(k: Path, data: Path, *options: str) -> str:
    done = ssh_keygen("-Y", "sign", "-f", str(k), "-n", "evault", *options, str(data))
    assert done.returncode == 0, done.stderr
    return Path(str(data) + ".sig").read_text()


@pytest.mark.interop
def test_interop_ssh_keygen_verifies_our_signature(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    key = SigningKey.generate()
    data = tmp_path / "data"
    data.write_bytes(b"exhibit 7\n")
    sig = sign(key, data.read_bytes(), "evault")
    allowed = format_allowed_signers([AllowedSigner(("principal",), key.public, ("evault",))])

    done = keygen_verify(tmp_path, allowed, "principal", sig, data)
    assert done.returncode == 0, done.stderr
    assert (
        f'Good "evault" signature for principal with ED25519 key {key.public.fingerprint}'
        in done.stdout.splitlines()
    )

    with data.open("rb") as f:
        done = ssh_keygen("-Y", "check-novalidate", "-n", "evault", "-s", str(tmp_path / "sig"),
                          stdin=f)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f'Good "evault" signature with ED25519 key {key.public.fingerprint}' in done.stdout

    data.write_bytes(b"exhibit 8\n")
    assert keygen_verify(tmp_path, allowed, "principal", sig, data).returncode != 0


@pytest.mark.interop
def test_interop_ssh_keygen_honours_our_allowed_signers_options(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    key = SigningKey.generate()
    data = tmp_path / "data"
    data.write_bytes(b"exhibit")
    sig = sign(key, b"exhibit", "evault")
    past = datetime(2001, 1, 1, tzinfo=timezone.utc)
    for entry, ok in [
        (AllowedSigner(("*@lab", "!eve@lab"), key.public, ("evault",), valid_after=past), True),
        (AllowedSigner(("*@lab", "!eve@lab"), key.public, ("git",)), False),
        (AllowedSigner(("*@lab",), key.public, valid_before=past), False),
    ]:
        allowed = format_allowed_signers([entry])
        assert (keygen_verify(tmp_path, allowed, "ann@lab", sig, data).returncode == 0) is ok
    allowed = format_allowed_signers([AllowedSigner(("*@lab", "!eve@lab"), key.public)])
    assert keygen_verify(tmp_path, allowed, "eve@lab", sig, data).returncode != 0


@pytest.mark.interop
def test_interop_we_verify_ssh_keygen_signature(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    k, pub = keygen_key(tmp_path)
    data = tmp_path / "data"
    data.write_bytes(b"exhibit 7\n")
    sig = keygen_sign(k, data)

    assert verify(sig, data.read_bytes(), "evault", trusted=[pub]) == pub
    assert parse(sig).hash_algorithm == "sha512"
    with pytest.raises(VerificationError):
        verify(sig, b"exhibit 8\n", "evault")

    # Same key, same message: Ed25519 is deterministic, so our text is ssh-keygen's exactly.
    private = load_ssh_private_key(k.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    assert sign(SigningKey(private), data.read_bytes(), "evault") == sig


@pytest.mark.interop
def test_interop_we_verify_ssh_keygen_sha256_signature(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    k, pub = keygen_key(tmp_path)
    data = tmp_path / "data"
    data.write_bytes(b"exhibit")
    sig = keygen_sign(k, data, "-O", "hashalg=sha256")
    assert parse(sig).hash_algorithm == "sha256"
    assert verify(sig, b"exhibit", "evault") == pub


@pytest.mark.interop
def test_interop_streamed_3_mib_file_both_ways(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    data = tmp_path / "data"
    data.write_bytes(bytes(range(251)) * (3 * MiB // 251 + 1))
    assert data.stat().st_size > 3 * MiB

    key = SigningKey.generate()
    spy = ReadSpy(data.read_bytes())
    sig = sign(key, spy, "evault")
    assert len(spy.sizes) >= 4 and all(s == MiB for s in spy.sizes)
    allowed = format_allowed_signers([AllowedSigner(("p",), key.public)])
    done = keygen_verify(tmp_path, allowed, "p", sig, data)
    assert done.returncode == 0, done.stderr

    k, pub = keygen_key(tmp_path)
    theirs = keygen_sign(k, data)
    with data.open("rb") as f:
        assert verify(theirs, f, "evault", trusted=[pub]) == pub
