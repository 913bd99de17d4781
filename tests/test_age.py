"""age encryption: round trips, failure kinds, streaming, key strings and the stock tool."""

from __future__ import annotations

import array
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_tool

from vault.crypto import bech32
from vault.crypto.age import (
    CHUNK_SIZE,
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeIdentity,
    AgeNoMatchError,
    AgePayloadError,
    AgeReader,
    AgeRecipient,
    AgeUnsupportedError,
    AgeWriter,
    decrypt,
    encrypt,
    encrypted_size,
)
from vault.crypto.age import stream as age_stream
from vault.errors import DecryptionError, UsageError

SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024]
# the example key pair of the age spec (age-encryption.org/v1), public knowledge
IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


def plaintext(size: int) -> bytes:
    return (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]


def seal(data: bytes, recipients: list[AgeRecipient], **kwargs: bool) -> bytes:
    out = io.BytesIO()
    with AgeWriter(out, recipients, **kwargs) as w:
        w.write(data)
    return out.getvalue()


def counting_rng(seed: int) -> Callable[[int], bytes]:
    state = [seed]

    def rng(n: int) -> bytes:
        state[0] += 1
        return hashlib.shake_256(state[0].to_bytes(8, "big")).digest(n)

    return rng


@pytest.fixture(scope="module")
def identity() -> AgeIdentity:
    return AgeIdentity.generate()


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(identity: AgeIdentity, size: int) -> None:
    data = plaintext(size)
    sealed = seal(data, [identity.recipient])
    chunks = max(1, -(-size // CHUNK_SIZE))
    header_end = sealed.index(b"\n---") + len(b"\n--- ") + 43 + 1
    assert len(sealed) == header_end + 16 + size + 16 * chunks
    assert AgeReader(io.BytesIO(sealed), [identity]).read() == data
    out = io.BytesIO()
    assert decrypt(io.BytesIO(sealed), out, [identity]) == size
    assert out.getvalue() == data


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_and_decrypt_stream_between_files(identity: AgeIdentity, size: int) -> None:
    data = plaintext(size)
    sealed = io.BytesIO()
    assert encrypt(io.BytesIO(data), sealed, [identity.recipient]) == size
    out = io.BytesIO()
    assert decrypt(io.BytesIO(sealed.getvalue()), out, [identity]) == size
    assert out.getvalue() == data


@pytest.mark.parametrize("piece", [7, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 7])
def test_writes_and_reads_of_any_size_agree(identity: AgeIdentity, piece: int) -> None:
    data = plaintext(3 * CHUNK_SIZE + 5)
    out = io.BytesIO()
    with AgeWriter(out, [identity.recipient]) as w:
        for i in range(0, len(data), piece):
            assert w.write(memoryview(data)[i : i + piece]) == len(data[i : i + piece])
        assert w.tell() == len(data)
    reader = AgeReader(io.BytesIO(out.getvalue()), [identity])
    got = bytearray()
    while chunk := reader.read(piece):
        got += chunk
    assert got == data


def test_write_accepts_any_bytes_like(identity: AgeIdentity) -> None:
    words = array.array("I", [1, 2, 3])
    out = io.BytesIO()
    with AgeWriter(out, [identity.recipient]) as w:
        assert w.write(bytearray(b"ab")) == 2
        assert w.write(memoryview(b"cd")) == 2
        assert w.write(words) == 12
        assert w.writable()
    assert AgeReader(io.BytesIO(out.getvalue()), [identity]).read() == b"abcd" + words.tobytes()


def test_reader_readinto_and_read1(identity: AgeIdentity) -> None:
    data = plaintext(2 * CHUNK_SIZE + 3)
    reader = AgeReader(io.BytesIO(seal(data, [identity.recipient])), [identity])
    assert reader.readable()
    buf = bytearray(CHUNK_SIZE + 10)
    assert reader.readinto(buf) == len(buf)
    assert reader.read1(10**6) == data[len(buf) : 2 * CHUNK_SIZE]
    assert reader.read() == data[2 * CHUNK_SIZE :]
    assert reader.read(5) == b""


def test_every_recipient_can_decrypt() -> None:
    identities = [AgeIdentity.generate() for _ in range(3)]
    sealed = seal(b"shared", [i.recipient for i in identities])
    assert sealed.count(b"\n-> X25519 ") == 3
    for i in identities:
        assert AgeReader(io.BytesIO(sealed), [i]).read() == b"shared"


def test_randomness_is_injectable(identity: AgeIdentity) -> None:
    one = io.BytesIO()
    two = io.BytesIO()
    for out in (one, two):
        with AgeWriter(out, [identity.recipient], rng=counting_rng(7)) as w:
            w.write(b"same")
    assert one.getvalue() == two.getvalue()
    assert AgeReader(io.BytesIO(one.getvalue()), [identity]).read() == b"same"


def test_without_the_into_methods_of_older_cryptography(
    identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = plaintext(CHUNK_SIZE + 1)
    monkeypatch.setattr(age_stream, "_HAS_INTO", False)
    sealed = seal(data, [identity.recipient])
    assert AgeReader(io.BytesIO(sealed), [identity]).read() == data
    monkeypatch.undo()
    assert AgeReader(io.BytesIO(sealed), [identity]).read() == data


@pytest.mark.parametrize("size", [0, 47, 48, CHUNK_SIZE + 1])
def test_armor_round_trip(identity: AgeIdentity, size: int) -> None:
    data = plaintext(size)
    sealed = seal(data, [identity.recipient], armor=True)
    text = sealed.decode("ascii")
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-1] == "-----END AGE ENCRYPTED FILE-----"
    assert all(len(line) == 64 for line in lines[1:-2])
    assert 0 < len(lines[-2]) <= 64
    assert AgeReader(io.BytesIO(sealed), [identity]).read() == data
    crlf = b"\r\n".join(sealed.split(b"\n"))
    assert AgeReader(io.BytesIO(b"\n  " + crlf + b"\t\n"), [identity]).read() == data
    lines = sealed.split(b"\n")
    mixed = b"".join(line + (b"\r\n" if i % 3 else b"\n") for i, line in enumerate(lines[:-1]))
    assert AgeReader(io.BytesIO(mixed), [identity]).read() == data


# --- failures ------------------------------------------------------------------------------


def test_wrong_identity_is_no_match(identity: AgeIdentity) -> None:
    sealed = seal(b"x", [identity.recipient])
    with pytest.raises(AgeNoMatchError):
        AgeReader(io.BytesIO(sealed), [AgeIdentity.generate()])
    with pytest.raises(AgeNoMatchError):
        AgeReader(io.BytesIO(sealed), [])


def test_errors_belong_to_the_package_hierarchy() -> None:
    for kind in (AgeHeaderError, AgeHMACError, AgePayloadError, AgeNoMatchError, AgeArmorError):
        assert issubclass(kind, AgeError)
    assert issubclass(AgeUnsupportedError, AgeError)
    assert issubclass(AgeError, DecryptionError)


@pytest.mark.parametrize("where", ["first", "last"])
def test_tampered_payload_byte(identity: AgeIdentity, where: str) -> None:
    data = plaintext(2 * CHUNK_SIZE + 100)
    sealed = bytearray(seal(data, [identity.recipient]))
    sealed[-50 if where == "last" else -(2 * CHUNK_SIZE + 100)] ^= 0x01
    reader = AgeReader(io.BytesIO(bytes(sealed)), [identity])
    released = bytearray()
    with pytest.raises(AgePayloadError):
        while chunk := reader.read(1000):
            released += chunk
    assert data.startswith(released)
    assert len(released) == (2 * CHUNK_SIZE if where == "last" else 0)
    with pytest.raises(AgePayloadError):
        reader.read(1)  # the failure sticks


def test_tampered_header(identity: AgeIdentity) -> None:
    sealed = seal(b"x", [identity.recipient])
    mac_at = sealed.index(b"\n--- ") + 5
    other = b"A" if sealed[mac_at] != ord("A") else b"B"
    bad_mac = sealed[:mac_at] + other + sealed[mac_at + 1 :]
    with pytest.raises(AgeHMACError):
        AgeReader(io.BytesIO(bad_mac), [identity])
    with pytest.raises(AgeHeaderError):
        AgeReader(io.BytesIO(b"age-encryption.org/v2\n" + sealed[22:]), [identity])
    with pytest.raises(AgeHeaderError):
        AgeReader(io.BytesIO(sealed[: mac_at + 10]), [identity])


@pytest.mark.parametrize("cut", [1, 16, 17, CHUNK_SIZE + 16, CHUNK_SIZE + 17])
def test_truncated_file(identity: AgeIdentity, cut: int) -> None:
    data = plaintext(2 * CHUNK_SIZE + 1)
    sealed = seal(data, [identity.recipient])
    reader = AgeReader(io.BytesIO(sealed[:-cut]), [identity])
    released = bytearray()
    with pytest.raises(AgePayloadError):
        while chunk := reader.read(4096):
            released += chunk
    assert data.startswith(released)
    with pytest.raises(AgePayloadError):
        decrypt(io.BytesIO(sealed[:-cut]), io.BytesIO(), [identity])


def test_read_all_raises_rather_than_return_a_prefix(identity: AgeIdentity) -> None:
    sealed = seal(plaintext(2 * CHUNK_SIZE + 1), [identity.recipient])
    with pytest.raises(AgePayloadError):
        AgeReader(io.BytesIO(sealed[:-1]), [identity]).read()


def test_trailing_data_is_refused(identity: AgeIdentity) -> None:
    # after a full final chunk the chunk is released, then the extra byte is an error
    data = plaintext(CHUNK_SIZE)
    reader = AgeReader(io.BytesIO(seal(data, [identity.recipient]) + b"\x00"), [identity])
    assert reader.read(2 * CHUNK_SIZE) == data
    with pytest.raises(AgePayloadError):
        reader.read(100)
    # after a short final chunk the extra byte joins the chunk, which then fails
    reader = AgeReader(io.BytesIO(seal(b"evidence", [identity.recipient]) + b"\x00"), [identity])
    with pytest.raises(AgePayloadError):
        reader.read(100)


def test_writer_left_by_an_exception_gives_no_complete_file(identity: AgeIdentity) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), AgeWriter(out, [identity.recipient]) as w:
        w.write(plaintext(CHUNK_SIZE * 2))
        raise RuntimeError("disk on fire")
    assert w.closed
    with pytest.raises(AgePayloadError):
        decrypt(io.BytesIO(out.getvalue()), io.BytesIO(), [identity])


def test_writer_needs_a_recipient() -> None:
    with pytest.raises(UsageError):
        AgeWriter(io.BytesIO(), [])


def test_writer_does_not_close_dst(identity: AgeIdentity) -> None:
    out = io.BytesIO()
    w = AgeWriter(out, [identity.recipient])
    w.close()
    w.close()
    assert not out.closed
    with pytest.raises(ValueError):
        w.write(b"late")


class Endless(io.RawIOBase):
    """An endless source of one byte, counting how much was read."""

    def __init__(self, byte: bytes, prefix: bytes = b"") -> None:
        self.byte = byte
        self.prefix = prefix
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = len(b)
        data = (self.prefix + self.byte * n)[:n]
        self.prefix = self.prefix[n:]
        b[:n] = data
        self.consumed += n
        return n


@pytest.mark.parametrize(
    ("prefix", "byte", "kind"),
    [
        (b"age-encryption.org/v1\n-> X25519 ", b"A", AgeHeaderError),  # endless line
        (b"age-encryption.org/v1\n", b"-> a\n\n", AgeHeaderError),  # endless stanzas
        (b"", b"\n", AgeArmorError),  # endless whitespace before armor
        (b"-----BEGIN AGE ENCRYPTED FILE-----\n", b"A", AgeArmorError),  # endless armor line
    ],
)
def test_hostile_input_is_refused_with_bounded_reads(
    identity: AgeIdentity, prefix: bytes, byte: bytes, kind: type[AgeError]
) -> None:
    src = Endless(byte, prefix)
    with pytest.raises(kind):
        AgeReader(src, [identity])  # type: ignore[arg-type]
    assert src.consumed <= 2 * 1024 * 1024


# --- tar streaming -------------------------------------------------------------------------


def test_tarfile_streams_through_writer_and_reader(identity: AgeIdentity) -> None:
    members = {"a.txt": b"alpha", "big.bin": plaintext(CHUNK_SIZE * 3 + 11), "empty": b""}
    sealed = io.BytesIO()
    with (
        AgeWriter(sealed, [identity.recipient]) as w,
        tarfile.open(fileobj=w, mode="w|") as tar,  # type: ignore[call-overload]
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sealed.seek(0)
    got = {}
    reader = AgeReader(sealed, [identity])
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            f = tar.extractfile(member)
            assert f is not None
            got[member.name] = f.read()
    assert got == members
    assert not reader.read().strip(b"\0")  # the rest, zero padding, authenticates to the end


# --- keys and strings ----------------------------------------------------------------------


def test_bech32_known_vectors() -> None:
    # from BIP 173
    assert bech32.decode("A12UEL5L") == ("A", b"")
    assert bech32.decode("a12uel5l") == ("a", b"")
    hrp, _ = bech32.decode(
        "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs"
    )
    assert hrp.startswith("an83")
    for bad in ("A1G7SGD8", "10a06t8", "1qzzfhee", "a12UEL5L", "x1b4n0q5v", "li1dgmt3"):
        with pytest.raises(bech32.Bech32Error):
            bech32.decode(bad)


def test_bech32_has_no_length_limit() -> None:
    s = bech32.encode("age", bytes(range(256)) * 4)
    assert len(s) > 90
    assert bech32.decode(s) == ("age", bytes(range(256)) * 4)
    assert bech32.encode("AGE-SECRET-KEY-", b"\x01").isupper()


def test_identity_and_recipient_strings() -> None:
    i = AgeIdentity.parse(IDENTITY)
    assert i.encode() == IDENTITY
    assert str(i.recipient) == RECIPIENT == i.recipient.encode()
    assert AgeRecipient.parse(RECIPIENT) == i.recipient
    assert AgeIdentity.from_raw(i.raw()).encode() == IDENTITY
    assert len(i.raw()) == 32
    assert AgeIdentity.parse(f"  {IDENTITY}\n").encode() == IDENTITY


def test_identity_repr_hides_the_secret() -> None:
    i = AgeIdentity.parse(IDENTITY)
    for text in (repr(i), str(i)):
        assert RECIPIENT in text
        assert "SECRET" not in text.upper()
        assert i.raw().hex() not in text
        assert repr(i.raw())[2:-1] not in text


def flip_last(s: str) -> str:
    other = "q" if s[-1].lower() != "q" else "p"
    return s[:-1] + (other.upper() if s[-1].isupper() else other)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (flip_last(RECIPIENT), "checksum"),
        (RECIPIENT[:10].upper() + RECIPIENT[10:], "mixed case"),
        (RECIPIENT.upper(), "lowercase"),
        (IDENTITY, "age1"),
        (bech32.encode("age1pq", bytes(32)), "post-quantum"),
        (bech32.encode("age", bytes(31)), "32 bytes"),
        (bech32.encode("age", b"\x01" + bytes(31)), "low-order"),
        ("age1", "separator"),
        ("", "separator"),
    ],
)
def test_bad_recipient_strings(text: str, rule: str) -> None:
    with pytest.raises(UsageError, match=rule) as e:
        AgeRecipient.parse(text)
    assert str(e.value).startswith("age recipient: ")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (flip_last(IDENTITY), "checksum"),
        (IDENTITY[:20].lower() + IDENTITY[20:], "mixed case"),
        (IDENTITY.lower(), "uppercase"),
        (RECIPIENT, "uppercase"),
        (bech32.encode("AGE-SECRET-KEY-PQ-", bytes(32)), "post-quantum"),
        (bech32.encode("AGE-SECRET-KEY-", bytes(33)), "32 bytes"),
    ],
)
def test_bad_identity_strings(text: str, rule: str) -> None:
    with pytest.raises(UsageError, match=rule) as e:
        AgeIdentity.parse(text)
    message = str(e.value)
    assert message.startswith("age identity: ")
    assert text not in message  # never echo what may be a secret


def test_recipient_value_object_validates() -> None:
    with pytest.raises(UsageError):
        AgeRecipient(b"short")
    assert repr(AgeRecipient.parse(RECIPIENT)) == f"AgeRecipient({RECIPIENT!r})"


# --- the stock age tool --------------------------------------------------------------------

INTEROP_SIZES = [0, 1, 65536, 65537, 5 * 1024 * 1024]
# binary at every size, armor at the small ones
INTEROP_CASES = [(n, False) for n in INTEROP_SIZES] + [(n, True) for n in INTEROP_SIZES[:4]]


@pytest.fixture(scope="module")
def keygen_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AgeIdentity]:
    require_tool("age-keygen")
    path = tmp_path_factory.mktemp("age") / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    secret = next(line for line in path.read_text().splitlines() if line.startswith("AGE-"))
    public = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    identity = AgeIdentity.parse(secret)
    assert identity.recipient.encode() == public
    return path, identity


@pytest.mark.interop
@pytest.mark.parametrize(("size", "armor"), INTEROP_CASES)
def test_age_tool_decrypts_what_we_encrypt(
    tmp_path: Path, keygen_identity: tuple[Path, AgeIdentity], size: int, armor: bool
) -> None:
    age_bin = require_tool("age")
    id_path, identity = keygen_identity
    data = os.urandom(size)
    sealed = tmp_path / "file.age"
    with sealed.open("wb") as dst:
        assert encrypt(io.BytesIO(data), dst, [identity.recipient], armor=armor) == size
    done = subprocess.run(
        [age_bin, "-d", "-i", str(id_path), str(sealed)], capture_output=True, check=True
    )
    assert done.stdout == data


@pytest.mark.interop
@pytest.mark.parametrize(("size", "armor"), INTEROP_CASES)
def test_we_decrypt_what_age_tool_encrypts(
    tmp_path: Path, keygen_identity: tuple[Path, AgeIdentity], size: int, armor: bool
) -> None:
    age_bin = require_tool("age")
    _, identity = keygen_identity
    data = os.urandom(size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    sealed = tmp_path / "file.age"
    cmd = [age_bin, *(["-a"] if armor else []), "-r", str(identity.recipient)]
    subprocess.run([*cmd, "-o", str(sealed), str(plain)], check=True, capture_output=True)
    out = io.BytesIO()
    with sealed.open("rb") as src:
        assert decrypt(src, out, [identity]) == size
    assert out.getvalue() == data


# --- the package's shape -----------------------------------------------------------------

# The modules of vault/crypto/age in the order its __init__ docstring lists them: each may
# import only those before it, and only __init__ imports stream, the top.
LAYERS = ["errors", "primitives", "byteio", "header", "keys", "armor", "stream"]


def test_age_modules_import_only_the_layers_below_them() -> None:
    import ast

    import vault.crypto.age as package

    root = Path(package.__file__).parent
    assert sorted(p.stem for p in root.glob("*.py")) == sorted([*LAYERS, "__init__"])
    for i, name in enumerate(LAYERS):
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{name}.py says its one job in its docstring"
        used = {
            node.module.removeprefix("vault.crypto.age.")
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("vault.crypto.age.")
        }
        assert used <= set(LAYERS[:i]), f"{name}.py imports {sorted(used - set(LAYERS[:i]))}"


def test_age_package_keeps_its_public_names_and_runs_its_example() -> None:
    import doctest

    import vault.crypto.age as package

    names = {n for n in vars(package) if not n.startswith("_")}
    constants = {"CHUNK_SIZE", "ENC_CHUNK_SIZE", "FILE_KEY_SIZE", "MAX_HEADER_SIZE",
                 "MAX_STANZAS", "NONCE_SIZE", "TAG_SIZE", "Fill", "Rng"}
    assert {*package.__all__, *constants} <= names
    assert doctest.testmod(package).failed == 0


@pytest.mark.parametrize("recipients", [1, 2, 5])
@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 17]
)
def test_encrypted_size_is_what_the_writer_writes(recipients: int, size: int) -> None:
    # Known in advance (a package states its payload's size before the payload): header,
    # nonce, each chunk with its tag, and a full last chunk is not followed by an empty one.
    keys = [AgeIdentity.generate().recipient for _ in range(recipients)]
    out = io.BytesIO()
    with AgeWriter(out, keys) as writer:
        writer.write(os.urandom(size))
    assert encrypted_size(keys, size) == len(out.getvalue())


def test_encrypted_size_refuses_what_no_writer_takes() -> None:
    key = AgeIdentity.generate().recipient
    for bad in (-1, True, 1.5):
        with pytest.raises(UsageError, match="size"):
            encrypted_size([key], bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="recipient"):
        encrypted_size([], 1)
