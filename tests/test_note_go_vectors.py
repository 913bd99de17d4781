"""Signed notes against a second source: the notes, keys and outcomes of Go's
golang.org/x/mod/sumdb/note tests (tests/vectors/go-sumdb-note/README.md), several
signatures a note, unknown keys ignored, bad signatures refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import VECTORS

from vault.crypto.keys import SigningKey
from vault.custody.note import NoteSigner, NoteVerifier, open_note
from vault.errors import UsageError, VerificationError

GO = VECTORS / "go-sumdb-note"
CASES = json.loads((GO / "vectors.json").read_text(encoding="utf-8"))
KEYS = {line.split("+", 1)[0]: line for line in (GO / "keys.txt").read_text().splitlines()}
VERIFIERS = {name: NoteVerifier.parse(vkey) for name, vkey in KEYS.items()}

#: What each of Go's outcomes is in evault's terms: the VerificationError's message says
#: which (Go's "malformed note" covers every refusal for the note's form).
UNVERIFIED = "no signature from a known key"
INVALID = "does not verify"


def _signer(skey_file: str) -> NoteSigner:
    """Go's private key string ``PRIVATE+KEY+name+hex(key ID)+base64(0x01 || seed)``."""
    private, key, name, key_id, typed_seed = (GO / skey_file).read_text().strip().split("+", 4)
    raw = base64.b64decode(typed_seed, validate=True)
    assert (private, key, raw[:1], len(raw)) == ("PRIVATE", "KEY", b"\x01", 33)
    signer = NoteSigner(name, SigningKey.from_seed(raw[1:]))
    assert signer.key_id.hex() == key_id
    return signer


@pytest.mark.parametrize(
    "case", CASES["open"], ids=[f"{c['note']}-{'+'.join(c['verifiers']) or 'none'}"
                                for c in CASES["open"]])
def test_open(case: dict[str, Any]) -> None:
    note = (GO / "notes" / case["note"]).read_bytes()
    verifiers = [VERIFIERS[name] for name in case["verifiers"]]
    expect = case["expect"]
    if "signers" in expect:
        opened = open_note(note, verifiers)
        assert opened.text == (GO / "text.txt").read_text(encoding="utf-8")
        assert list(opened.signers) == expect["signers"]
        return
    with pytest.raises(VerificationError) as e:
        open_note(note, verifiers)
    message = str(e.value)
    if expect["error"] == "unverified":
        assert UNVERIFIED in message
    elif expect["error"] == "invalid signature":
        assert INVALID in message and "PeterNeumann (key id c74f20a3)" in message
    else:
        assert expect["error"] == "malformed"
        assert UNVERIFIED not in message and INVALID not in message


def test_the_open_cases_cover_every_note() -> None:
    assert {c["note"] for c in CASES["open"]} == {p.name for p in (GO / "notes").iterdir()}


def test_signing_gives_gos_note_byte_for_byte() -> None:
    """Ed25519 is deterministic: Go's test key signs Go's text into Go's note, and its
    verifier key is Go's."""
    case = CASES["sign"][0]
    signer = _signer(case["skey"])
    note = signer.sign((GO / case["text"]).read_text(encoding="utf-8"))
    assert note.encode("utf-8") == (GO / "notes" / case["expect_note"]).read_bytes()
    assert signer.vkey() == KEYS["PeterNeumann"]


def test_signing_a_text_without_its_newline_is_refused() -> None:
    case = CASES["sign"][1]
    with pytest.raises(UsageError, match="must end with a newline"):
        _signer(case["skey"]).sign(case["text_literal"])


def test_gos_verifier_keys_parse_and_print_back() -> None:
    for vkey in KEYS.values():
        assert NoteVerifier.parse(vkey).vkey() == vkey


@pytest.mark.parametrize("vkey", (GO / "bad-keys.txt").read_text().splitlines())
def test_gos_bad_verifier_keys_are_refused(vkey: str) -> None:
    """A key of the wrong length and one of an unknown algorithm, each with its key ID
    adjusted to match (so only the key's own check can refuse it)."""
    with pytest.raises(UsageError):
        NoteVerifier.parse(vkey)


def test_every_mangling_of_a_verifier_key_is_refused() -> None:
    """As Go's TestNewVerifier: every proper substring of a verifier key, and the key with
    any one byte incremented, is refused."""
    vkey = KEYS["PeterNeumann"]
    mangled = {vkey[i:j] for i in range(len(vkey) + 1) for j in range(i + 1, len(vkey) + 1)}
    mangled |= {vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1:] for i in range(len(vkey))}
    mangled.discard(vkey)
    accepted = []
    for text in sorted(mangled):
        try:
            NoteVerifier.parse(text)
        except UsageError:
            continue
        accepted.append(text)
    assert accepted == []
    assert len(mangled) > 2000


def test_vectors_carry_their_source_and_licence() -> None:
    readme = (GO / "README.md").read_text(encoding="utf-8")
    assert "fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db" in readme
    assert "fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db" in CASES["source"]
    assert "Copyright 2009 The Go Authors" in (GO / "LICENSE").read_text(encoding="utf-8")
