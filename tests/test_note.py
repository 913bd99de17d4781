"""C2SP signed notes and tlog checkpoints: the spec's example, round trips, refusals."""

from __future__ import annotations

import base64
import doctest
import hashlib
from pathlib import Path

import pytest

from vault.crypto.keys import SigningKey
from vault.custody import note as note_module
from vault.custody.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    Note,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
    sign_checkpoint,
)
from vault.errors import UsageError, VerificationError

SIGNED_NOTE = Path(__file__).resolve().parent / "vectors" / "signed-note"

ORIGIN = "vault.example/custody"
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()


def _key(n: int) -> SigningKey:
    return SigningKey.from_seed(bytes([n]) * 32)


SIGNER = NoteSigner(ORIGIN, _key(1))
VERIFIER = NoteVerifier.parse(SIGNER.vkey())
WITNESS = NoteSigner("witness.example/w1", _key(2))


def _signature_line(signed: str) -> str:
    return signed.rstrip("\n").rsplit("\n", 1)[1] + "\n"


def _check_message(error: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert message[:1].islower()


# The worked example of the C2SP signed-note spec.


def test_spec_example_verifies() -> None:
    vkey = (SIGNED_NOTE / "example.vkey").read_text().strip()
    verifier = NoteVerifier.parse(vkey)
    assert verifier.name == "example.com/foo"
    assert verifier.key_id.hex() == "530d903a"
    assert verifier.vkey() == vkey
    opened = open_note((SIGNED_NOTE / "example.note").read_bytes(), [verifier])
    assert opened == Note("This is an example message.\n", ("example.com/foo",))


def test_spec_example_tampered_fails() -> None:
    verifier = NoteVerifier.parse((SIGNED_NOTE / "example.vkey").read_text().strip())
    with pytest.raises(VerificationError) as error:
        open_note((SIGNED_NOTE / "example.note.tampered").read_text(), [verifier])
    _check_message(error)


def test_module_example_runs() -> None:
    assert doctest.testmod(note_module).failed == 0


# Signing and opening.


def test_key_id_and_vkey_follow_the_spec() -> None:
    pub = _key(1).public.raw
    assert SIGNER.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()[:4]
    typed_key = base64.b64encode(b"\x01" + pub).decode()
    want = f"{ORIGIN}+{SIGNER.key_id.hex()}+{typed_key}"
    assert SIGNER.vkey() == want
    assert VERIFIER == SIGNER.verifier() == NoteVerifier.for_key(ORIGIN, _key(1).public)


def test_sign_and_open_round_trip() -> None:
    text = "first line\n\nafter an empty line\n"
    signed = SIGNER.sign(text)
    sig = base64.b64encode(SIGNER.key_id + _key(1).sign(text.encode())).decode()
    assert signed == f"{text}\n\u2014 {ORIGIN} {sig}\n"
    assert open_note(signed, [VERIFIER]) == Note(text, (ORIGIN,))
    assert open_note(signed.encode(), [VERIFIER]) == Note(text, (ORIGIN,))


def test_cosigned_note_lists_every_known_signer() -> None:
    signed = SIGNER.sign("text\n") + _signature_line(WITNESS.sign("text\n"))
    opened = open_note(signed, [WITNESS.verifier(), VERIFIER])
    assert opened.signers == (ORIGIN, "witness.example/w1")


def test_unknown_signature_is_ignored() -> None:
    signed = SIGNER.sign("text\n") + "\u2014 stranger.example AAAAAAAAAAA=\n"
    signed += _signature_line(WITNESS.sign("text\n"))
    assert open_note(signed, [VERIFIER]).signers == (ORIGIN,)


def test_sixteen_signatures_are_accepted() -> None:
    others = "".join(
        _signature_line(NoteSigner(f"w{i}.example", _key(10 + i)).sign("t\n")) for i in range(16)
    )
    assert open_note(SIGNER.sign("t\n") + others, [VERIFIER]).signers == (ORIGIN,)


def test_no_known_signature_is_refused() -> None:
    with pytest.raises(VerificationError) as error:
        open_note(WITNESS.sign("text\n"), [VERIFIER])
    _check_message(error)
    with pytest.raises(VerificationError):
        open_note(SIGNER.sign("text\n"), [])


def test_right_name_wrong_key_is_refused() -> None:
    # Another key under the log's name has another key id, so it counts as unknown.
    impostor = NoteSigner(ORIGIN, _key(3))
    with pytest.raises(VerificationError):
        open_note(impostor.sign("text\n"), [VERIFIER])


def test_right_name_and_key_id_but_bad_signature_rejects_the_note() -> None:
    forged_sig = base64.b64encode(SIGNER.key_id + _key(3).sign(b"text\n")).decode()
    forged = f"\u2014 {ORIGIN} {forged_sig}\n"
    with pytest.raises(VerificationError):
        open_note(f"text\n\n{forged}", [VERIFIER])
    # A good signature alongside does not excuse a failing one from a known key.
    with pytest.raises(VerificationError):
        open_note(SIGNER.sign("text\n") + forged, [VERIFIER])


GOOD = SIGNER.sign("text\n")
GOOD_LINE = _signature_line(GOOD)
UNKNOWN_LINE = "\u2014 stranger.example AAAAAAAAAAA=\n"


@pytest.mark.parametrize(
    "signed",
    [
        pytest.param(GOOD.replace("\n\n", "\n"), id="no-blank-line"),
        pytest.param("text\n\n", id="no-signature-lines"),
        pytest.param(GOOD.rstrip("\n"), id="no-final-newline"),
        pytest.param(GOOD + "\n", id="blank-line-after-signatures"),
        pytest.param(GOOD.replace("\u2014", "-"), id="hyphen-not-em-dash"),
        pytest.param(GOOD.replace("\u2014 ", "\u2014"), id="no-space-after-dash"),
        pytest.param(GOOD + "\u2014 stranger.example\n", id="no-signature"),
        pytest.param(GOOD + "\u2014 stranger.example AAAA AAAA\n", id="space-in-signature"),
        pytest.param(GOOD + "\u2014 stranger.example !!!!\n", id="signature-not-base64"),
        pytest.param(GOOD + "\u2014 stranger.example AAAAAA\n", id="signature-unpadded"),
        pytest.param(GOOD + "\u2014 stranger.example AAAAAA==\n", id="signature-4-bytes"),
        pytest.param(GOOD + "\u2014 a+b AAAAAAAAAAA=\n", id="name-with-plus"),
        pytest.param(GOOD + "\u2014  AAAAAAAAAAA=\n", id="empty-name"),
        pytest.param(GOOD.replace("text", "te\rxt"), id="carriage-return"),
        pytest.param(GOOD.replace("text", "te\txt"), id="tab"),
        pytest.param(GOOD.replace("text", "te\x00xt"), id="nul"),
        pytest.param(GOOD.encode().replace(b"text", b"te\xffxt"), id="invalid-utf8"),
        pytest.param(GOOD.replace("text", "te\udc80xt"), id="lone-surrogate"),
        pytest.param(GOOD + UNKNOWN_LINE * MAX_SIGNATURES, id="too-many-signatures"),
        pytest.param("x" * MAX_NOTE_BYTES + "\n\n" + GOOD_LINE, id="too-large"),
        pytest.param("\u00e9" * (MAX_NOTE_BYTES // 2) + "\n\n" + GOOD_LINE, id="too-large-utf8"),
    ],
)
def test_malformed_note_is_refused(signed: str | bytes) -> None:
    with pytest.raises(VerificationError) as error:
        open_note(signed, [VERIFIER])
    _check_message(error)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\nb"])
def test_signer_refuses_bad_names(name: str) -> None:
    with pytest.raises(UsageError):
        NoteSigner(name, _key(1))


@pytest.mark.parametrize("text", ["no newline", "a\r\n", "tab\there\n", "\udc80\n"])
def test_signer_refuses_texts_readers_would_refuse(text: str) -> None:
    with pytest.raises(UsageError):
        SIGNER.sign(text)


VKEY_NAME, VKEY_ID, VKEY_KEY = SIGNER.vkey().split("+", 2)
OTHER_KEY = base64.b64encode(b"\x01" + _key(3).public.raw).decode()
# A well-formed key of signature type 0x02 (ECDSA in the spec), which this vault does not use.
TYPE2_KEY = base64.b64encode(b"\x02" + _key(1).public.raw).decode()
TYPE2_ID = hashlib.sha256(f"{ORIGIN}\n".encode() + b"\x02" + _key(1).public.raw).hexdigest()[:8]


@pytest.mark.parametrize(
    "vkey",
    [
        pytest.param(f"{VKEY_ID}+{VKEY_KEY}", id="no-name"),
        pytest.param(f"+{VKEY_ID}+{VKEY_KEY}", id="empty-name"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID[:7]}+{VKEY_KEY}", id="short-id"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID}x+{VKEY_KEY}", id="long-id"),
        pytest.param(f"{VKEY_NAME}+zzzzzzzz+{VKEY_KEY}", id="id-not-hex"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID}+{OTHER_KEY}", id="id-of-another-key"),
        pytest.param(f"other.example+{VKEY_ID}+{VKEY_KEY}", id="id-of-another-name"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID}+{VKEY_KEY[:-4]}", id="short-key"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID}+{VKEY_KEY} ", id="trailing-space"),
        pytest.param(f"{VKEY_NAME}+{TYPE2_ID}+{TYPE2_KEY}", id="type-not-ed25519"),
        pytest.param(f"{VKEY_NAME}+{VKEY_ID}", id="no-key"),
    ],
)
def test_verifier_key_refusals(vkey: str) -> None:
    with pytest.raises(UsageError):
        NoteVerifier.parse(vkey)


# Checkpoints.


def test_checkpoint_text_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 20852163, ROOT)
    assert cp.to_text() == f"{ORIGIN}\n20852163\n{ROOT_B64}\n"
    assert Checkpoint.from_text(cp.to_text()) == cp
    with_ext = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "ext two"))
    assert with_ext.to_text() == f"{ORIGIN}\n0\n{ROOT_B64}\next one\next two\n"
    assert Checkpoint.from_text(with_ext.to_text()) == with_ext


def test_checkpoint_spec_example_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.from_text(text)
    assert (cp.origin, cp.size, len(cp.root_hash), cp.extensions) == (
        "example.com/behind-the-sofa",
        20852163,
        32,
        (),
    )
    assert cp.to_text() == text


def test_signed_checkpoint_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT, ("extension",))
    signed = sign_checkpoint(cp, SIGNER)
    opened, note = open_checkpoint(signed, [VERIFIER])
    assert opened == cp
    assert note.signers == (ORIGIN,)


def test_signed_checkpoint_with_malformed_body_is_refused() -> None:
    with pytest.raises(VerificationError):
        open_checkpoint(SIGNER.sign(f"{ORIGIN}\n007\n{ROOT_B64}\n"), [VERIFIER])


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# 32 bytes leave the last base64 digit two unused low bits; setting one keeps the bytes.
NONCANONICAL = ROOT_B64[:-2] + _ALPHABET[_ALPHABET.index(ROOT_B64[-2]) ^ 1] + "="
assert NONCANONICAL != ROOT_B64
assert base64.b64decode(NONCANONICAL) == ROOT


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64}", id="no-final-newline"),
        pytest.param(f"{ORIGIN}\n1\n", id="no-root-line"),
        pytest.param("", id="empty"),
        pytest.param(f"\n1\n{ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"{ORIGIN}\n\n{ROOT_B64}\n", id="empty-size"),
        pytest.param(f"{ORIGIN}\n01\n{ROOT_B64}\n", id="leading-zero"),
        pytest.param(f"{ORIGIN}\n00\n{ROOT_B64}\n", id="double-zero"),
        pytest.param(f"{ORIGIN}\n+1\n{ROOT_B64}\n", id="plus-sign"),
        pytest.param(f"{ORIGIN}\n-1\n{ROOT_B64}\n", id="negative"),
        pytest.param(f"{ORIGIN}\n 1\n{ROOT_B64}\n", id="space-before-size"),
        pytest.param(f"{ORIGIN}\n1_000\n{ROOT_B64}\n", id="underscore"),
        pytest.param(f"{ORIGIN}\n\u0661\n{ROOT_B64}\n", id="arabic-indic-digit"),
        pytest.param(f"{ORIGIN}\n0x10\n{ROOT_B64}\n", id="hex-size"),
        pytest.param(f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n", id="size-over-64-bits"),
        pytest.param(f"{ORIGIN}\n{'9' * 5000}\n{ROOT_B64}\n", id="size-5000-digits"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64.rstrip('=')}\n", id="root-unpadded"),
        pytest.param(f"{ORIGIN}\n1\n{NONCANONICAL}\n", id="root-noncanonical"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64} \n", id="root-trailing-space"),
        pytest.param(f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", id="root-31"),
        pytest.param(f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n", id="root-33"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT.hex()}\n", id="root-hex"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64}\n\n", id="empty-extension"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64}\next\n\n", id="empty-last-extension"),
        pytest.param(f"{ORIGIN}\r\n1\n{ROOT_B64}\n", id="carriage-return"),
        pytest.param(f"{ORIGIN}\n1\n{ROOT_B64}\nex\tt\n", id="tab-in-extension"),
    ],
)
def test_checkpoint_strict_parse_refusals(text: str) -> None:
    with pytest.raises(VerificationError) as error:
        Checkpoint.from_text(text)
    _check_message(error)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        pytest.param("", 1, ROOT, (), id="empty-origin"),
        pytest.param("a\nb", 1, ROOT, (), id="newline-in-origin"),
        pytest.param(ORIGIN, -1, ROOT, (), id="negative-size"),
        pytest.param(ORIGIN, 2**64, ROOT, (), id="size-over-64-bits"),
        pytest.param(ORIGIN, 1, ROOT[:31], (), id="short-root"),
        pytest.param(ORIGIN, 1, ROOT, ("",), id="empty-extension"),
        pytest.param(ORIGIN, 1, ROOT, ("a\nb",), id="newline-in-extension"),
    ],
)
def test_checkpoint_refuses_bad_values(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(UsageError):
        Checkpoint(origin, size, root, extensions)
