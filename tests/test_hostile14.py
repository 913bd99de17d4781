"""Hostile review of issue 14: attacks by a database holder, a hostile recipient and a
hostile sender on the signed key history, the log's anchor, witnesses and sealed metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import Cli
from test_key_history import BODY, CASE, OFFICE, office, sql, verify_lines, with_body


def test_hiding_a_body_key_revocation_by_its_stored_action_refuses_packages(
    cli: Cli, tmp_path: Path
) -> None:
    """A revocation hidden from the quick checks (its stored action changed) must not let
    a package be encrypted to the revoked key before anyone runs `custody verify`."""
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    cli.ok("body", "key", "revoke", BODY, signing.public.fingerprint)
    sql(cli, "UPDATE custody_events SET action = 'body.added' "
             "WHERE action = 'body.key_revoked'")
    sql(cli, "UPDATE body_keys SET revoked_at = NULL")
    out = tmp_path / "p.evpkg"

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o", str(out))

    assert (result.exit_code, result.stderr) == (
        3, "evault: custody log: event 5: key history: a key event the key store lists is missing, "
           "rewritten or hidden by its stored action; run `evault custody verify`\n")
    assert not out.exists()


def test_reanchor_forgets_key_events_of_the_log_given_up(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """A key event the key store lists, in the part of the log an older backup rolled back,
    does not block the log once it is reanchored."""
    cli = sqlite_cli
    office(cli, tmp_path)
    backup = tmp_path / "vault.db.bak"
    shutil.copy2(cli.vault / "vault.db", backup)
    with_body(cli)
    shutil.copy2(backup, cli.vault / "vault.db")
    cli.ok("custody", "reanchor", "--as", OFFICE)

    with_body(cli)
    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o",
                 str(tmp_path / "p.evpkg"))

    assert result.exit_code == 0, result.stderr
    assert verify_lines(cli)[0] == 0
