"""The keyring key store against a real Secret Service (gnome-keyring on a D-Bus session).

.ci/run starts ``dbus-run-session`` with an unlocked ``gnome-keyring-daemon`` and runs these
(``-m secret_service``) there, under the CI gate (``EVAULT_CI=1``, tests/ci_gate.py), so that
there they fail instead of skipping. ``make test`` leaves them out: they need that session.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from conftest import Cli

pytestmark = pytest.mark.secret_service


@pytest.fixture
def secret_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.keystore import choose

    monkeypatch.setenv("EVAULT_KEY_STORAGE", "auto")
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    reason = None
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        reason = "no D-Bus session bus (.ci/run starts one with gnome-keyring)"
    elif choose("auto").kind != "keyring":
        reason = "no Secret Service on the session bus"
    if reason:
        pytest.skip(reason)  # a failure under the CI gate (tests/ci_gate.py)


def test_auto_chooses_the_secret_service(secret_service: None, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "v")
    cli.ok("init")
    report = json.loads(cli.ok("doctor", "--json").stdout)
    assert report["key_store"] == "keyring"
    assert report["key_store_reason"].startswith("keyring.backends.SecretService.Keyring")


def test_identity_keys_live_in_the_secret_service(secret_service: None, tmp_path: Path) -> None:
    import keyring

    from vault.store.vaultdir import load_config

    cli = Cli(tmp_path / "v")
    cli.ok("init")
    created = cli.ok("identity", "create", "registry-office")
    assert created.stderr == "evault: created identity registry-office in the keyring key store\n"
    fingerprint = json.loads(cli.ok("identity", "show", "--json").stdout)["fingerprint"]
    vault_id = load_config(cli.vault).vault_id
    stored = keyring.get_password(f"evault:{vault_id}", f"identity:{fingerprint}")
    assert stored is not None and len(stored) > 40
    assert not (cli.vault / "keys.enc").exists()
    # The key comes back out of the Secret Service: the card is signed with it.
    card = cli.ok("identity", "export").stdout
    assert json.loads(card)["fingerprint"] == fingerprint
    keyring.delete_password(f"evault:{vault_id}", f"identity:{fingerprint}")
    gone = cli("identity", "export")
    assert gone.exit_code == 1
    assert gone.stderr.startswith(f"evault: keyring: no private key identity:{fingerprint}")


def test_the_anchor_is_an_entry_of_its_own_in_the_secret_service(
    secret_service: None, tmp_path: Path
) -> None:
    """The newest log head (vault.service.anchor) sits beside the keys as trust:checkpoint,
    follows each write, and catches a log cut short with SQL and its head recomputed."""
    import keyring
    import sqlalchemy as sa

    from vault.custody.merkle import Frontier
    from vault.store.vaultdir import load_config

    cli = Cli(tmp_path / "v")
    cli.ok("init")
    cli.ok("identity", "create", "registry-office")
    cli.ok("case", "create", "UA-2026-0042")
    vault_id = load_config(cli.vault).vault_id
    stored = keyring.get_password(f"evault:{vault_id}", "trust:checkpoint")
    assert stored is not None
    assert json.loads(base64.b64decode(stored))["size"] == 2
    engine = sa.create_engine(load_config(cli.vault).database_url(cli.vault))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM custody_events WHERE seq = 1"))
        frontier = Frontier()
        for (leaf,) in conn.execute(sa.text("SELECT leaf_hash FROM custody_events")):
            frontier.append(bytes(leaf))
        conn.execute(
            sa.text("UPDATE custody_head SET size = :s, root = :r, frontier = :f"),
            {"s": frontier.size, "r": frontier.root(), "f": frontier.to_bytes()},
        )
    engine.dispose()
    result = cli("case", "create", "UA-2026-0043")
    assert (result.exit_code, result.stderr) == (
        3,
        "evault: custody log: the log is shorter than the last checkpoint this vault signed "
        "(1 events, the checkpoint has 2); restore the newer database; if an older backup "
        "was restored on purpose, run `evault custody reanchor --as NAME`\n",
    )
    keyring.delete_password(f"evault:{vault_id}", "trust:checkpoint")


def _forget_backends() -> None:
    """keyring caches its viable backends once per process; these tests change the bus."""
    import keyring.backend

    vars(keyring.backend.get_all_keyring).pop("saved_result", None)


def test_keyring_setting_without_a_keyring_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAULT_KEY_STORAGE", "keyring")
    # keyring caches the viable backends per process; this test changes the environment.
    _forget_backends()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    cli = Cli(tmp_path / "v")
    cli.ok("init")
    result = cli("identity", "create", "registry-office")
    assert result.exit_code == 1
    assert result.stderr == (
        "evault: EVAULT_KEY_STORAGE: key_storage = keyring, but no OS keyring is available "
        "(Secret Service, Keychain, Credential Locker); start one or use key_storage = file\n"
    )
    _forget_backends()
