"""The passphrase key file: passphrase length at creation, wrong passphrase, scrypt cost."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_PASSPHRASE, Cli

from vault.crypto import secretbox
from vault.errors import KeyStoreError, UsageError
from vault.keystore import KEY_FILE, FileKeyStore, resolve_passphrase


def test_short_passphrase_from_the_environment_is_refused_at_creation(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAULT_PASSPHRASE", "elevenchars")
    result = sqlite_cli("identity", "create", "registry-office")
    assert result.exit_code == 2
    assert result.stderr == (
        "evault: EVAULT_PASSPHRASE: a new key file needs a passphrase of at least 12 "
        "characters, this one has 11; choose a longer one\n"
    )
    assert not (sqlite_cli.vault / KEY_FILE).exists()
    monkeypatch.setenv("EVAULT_PASSPHRASE", "twelve chars")
    sqlite_cli.ok("identity", "create", "registry-office")


def test_short_passphrase_from_a_file_is_refused_at_creation(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    phrase = tmp_path / "phrase"
    phrase.write_text("short\n", encoding="utf-8")
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    monkeypatch.setenv("EVAULT_PASSPHRASE_FILE", str(phrase))
    result = sqlite_cli("identity", "create", "registry-office")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evault: EVAULT_PASSPHRASE_FILE {phrase}: a new key file needs a passphrase of at "
        "least 12 characters, this one has 5; choose a longer one\n"
    )
    assert not (sqlite_cli.vault / KEY_FILE).exists()


def test_short_passphrase_typed_at_the_prompt_is_refused_only_when_creating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    with pytest.raises(UsageError, match=r"^the passphrase typed: .* this one has 4;"):
        resolve_passphrase(lambda creating: "abcd", True)
    # An existing key file opens with whatever passphrase it was made with.
    assert resolve_passphrase(lambda creating: "abcd", False) == "abcd"


def test_wrong_passphrase_is_a_key_store_error_exit_1(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    monkeypatch.setenv("EVAULT_PASSPHRASE", "another fictional passphrase")
    result = sqlite_cli("identity", "export")
    assert result.exit_code == 1
    assert result.stderr == (
        f"evault: {sqlite_cli.vault / KEY_FILE}: wrong passphrase, or the key file is damaged; "
        "give the passphrase it was created with\n"
    )


def test_new_key_files_use_scrypt_2_to_the_17(tmp_path: Path) -> None:
    """In a subprocess: the suite's fixtures lower the cost in-process (tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVAULT_")}
    env |= {"EVAULT_KEY_STORAGE": "file", "EVAULT_PASSPHRASE": TEST_PASSPHRASE}
    vault = str(tmp_path / "vault")
    for args in (["init"], ["identity", "create", "registry-office"]):
        subprocess.run(
            [sys.executable, "-m", "vault", *args, "--vault", vault], env=env, check=True,
            capture_output=True,
        )
    box = (tmp_path / "vault" / KEY_FILE).read_bytes()
    assert secretbox.box_params(box)[0] == 17


def test_a_key_file_made_at_the_old_cost_still_opens_and_keeps_its_cost(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file sealed at N=2^15, as evault 0.x made them, opens with today's code."""
    secret = bytes(range(32))
    path = sqlite_cli.vault / KEY_FILE
    salt = secretbox.new_salt()
    old = secretbox.seal_with_key(
        json.dumps({"old": base64.b64encode(secret).decode()}).encode(),
        secretbox.derive_key(TEST_PASSPHRASE, salt, 15), salt, 15,
    )
    path.write_bytes(old)
    monkeypatch.setattr("vault.crypto.secretbox.DEFAULT_WORK_FACTOR", 17)
    store = FileKeyStore(sqlite_cli.vault, None, "test")
    assert store.get("old") == secret
    store.put("new", b"\x07" * 32)
    assert secretbox.box_params(path.read_bytes())[0] == 15
    assert FileKeyStore(sqlite_cli.vault, None, "test").get("new") == b"\x07" * 32


@pytest.mark.parametrize("contents", [
    b"", b"{", b"\xff", b"[]", b'{"a": 1}', b'{"a": ["AAAA"]}', b'{"a": "@AAA"}',
    b'{"a": "AAA"}', b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_a_key_file_sealed_around_damaged_contents_is_one_key_store_error(
    tmp_path: Path, contents: bytes
) -> None:
    """Found by fuzzing the key file as the vault reads it: contents that decrypt but are not
    an object of base64 strings raised JSONDecodeError, TypeError or binascii.Error."""
    salt = secretbox.new_salt()
    key = secretbox.derive_key(TEST_PASSPHRASE, salt, 10)
    (tmp_path / KEY_FILE).write_bytes(secretbox.seal_with_key(contents, key, salt, 10))
    with pytest.raises(KeyStoreError) as e:
        FileKeyStore(tmp_path, None, "test").get("a")
    assert str(e.value) == f"{tmp_path / KEY_FILE}: damaged key file"


def test_a_passphrase_that_is_not_utf8_is_one_line_even_before_ingests_own_checks(
        sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase file that is not UTF-8 traced back (UnicodeDecodeError), and since the
    key file's scrypt is started early, before `ingest` said the file to ingest is missing;
    an EVAULT_PASSPHRASE with bytes that are not UTF-8 traced back in scrypt."""
    sqlite_cli.ok("identity", "create", "registry-office")
    phrase = tmp_path / "phrase.txt"
    phrase.write_bytes(b"fictional \xff passphrase\n")
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    monkeypatch.setenv("EVAULT_PASSPHRASE_FILE", str(phrase))
    missing = sqlite_cli("ingest", str(tmp_path / "nowhere.txt"), "--case", "UA-1")
    assert (missing.exit_code, missing.stderr) == (
        1, f"evault: {tmp_path / 'nowhere.txt'}: no such file; check the path\n")
    listed = sqlite_cli("case", "create", "UA-2026-0001")
    assert (listed.exit_code, listed.stderr) == (
        1, f"evault: EVAULT_PASSPHRASE_FILE {phrase}: not valid UTF-8; save the passphrase "
           "in it as UTF-8\n")
    monkeypatch.delenv("EVAULT_PASSPHRASE_FILE")
    monkeypatch.setenv("EVAULT_PASSPHRASE", "fictional \udcff passphrase")
    listed = sqlite_cli("case", "create", "UA-2026-0001")
    assert (listed.exit_code, listed.stderr) == (
        1, "evault: EVAULT_PASSPHRASE: not valid UTF-8; set it as UTF-8 (check the encoding "
           "of the script or terminal that sets it)\n")
