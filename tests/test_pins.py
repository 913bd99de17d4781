"""A pin covers the whole key: `body key add --ssh --age` needs both halves pinned, unpinned
adds warn and are logged so, and a second contact under a known name is refused (issue 15,
item 3)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from conftest import Cli

from vault.crypto.age import AgeIdentity

BODY = "UA-OPG"


def _officer(tmp_path: Path) -> dict[str, str]:
    """The officer's `identity show --json`, in the officer's own (fictional) vault."""
    other = Cli(tmp_path / "officer-vault")
    other.init()
    other.ok("identity", "create", "opg-officer")
    return dict(json.loads(other.ok("identity", "show", "--json").stdout))


def _office(cli: Cli) -> None:
    cli.ok("identity", "create", "registry-office")
    cli.ok("body", "add", BODY, "--name", "Fictional prosecutor's office")


def _key_events(cli: Cli) -> list[dict[str, object]]:
    events = json.loads(cli.ok("custody", "show", BODY, "--json").stdout)["events"]
    return [e["details"] for e in events if e["action"] == "body.key_added"]


def test_identity_show_prints_the_age_fingerprint(tmp_path: Path) -> None:
    officer = _officer(tmp_path)
    digest = hashlib.sha256(officer["age_recipient"].encode()).digest()
    assert officer["age_fingerprint"] == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def test_ssh_pin_alone_does_not_cover_a_swapped_age_key(cli: Cli, tmp_path: Path) -> None:
    _office(cli)
    officer = _officer(tmp_path)
    swapped = str(AgeIdentity.generate().recipient)  # whoever altered the message
    result = cli("body", "key", "add", BODY, "--ssh", officer["signing_key"], "--age", swapped,
                 "--fingerprint", officer["fingerprint"])
    assert (result.exit_code, result.stderr) == (
        2, "evault: body key add: --fingerprint pins only the --ssh key; give --age-fingerprint "
           "too (the officer's `evault identity show` prints it), or add their --card\n")
    both = cli("body", "key", "add", BODY, "--ssh", officer["signing_key"], "--age", swapped,
               "--fingerprint", officer["fingerprint"],
               "--age-fingerprint", officer["age_fingerprint"])
    got = "SHA256:" + base64.b64encode(hashlib.sha256(swapped.encode()).digest()).decode()
    assert (both.exit_code, both.stderr) == (
        3, f"evault: body {BODY}: age key fingerprint is {got.rstrip('=')}, expected "
           f"{officer['age_fingerprint']}; do not add this key until its holder confirms the "
           "fingerprint\n")
    assert json.loads(cli.ok("body", "show", BODY, "--json").stdout)["keys"] == []


def test_both_pins_add_the_key_without_a_warning(cli: Cli, tmp_path: Path) -> None:
    _office(cli)
    officer = _officer(tmp_path)
    added = cli("body", "key", "add", BODY, "--ssh", officer["signing_key"], "--age",
                officer["age_recipient"], "--fingerprint", officer["fingerprint"],
                "--age-fingerprint", officer["age_fingerprint"])
    assert (added.exit_code, added.stderr) == (
        0, f"evault: added key {officer['fingerprint']} to body {BODY}\n")
    assert [d["pinned"] for d in _key_events(cli)] == [True]


def test_unpinned_body_key_warns_and_is_logged_unpinned(cli: Cli, tmp_path: Path) -> None:
    _office(cli)
    officer = _officer(tmp_path)
    added = cli("body", "key", "add", BODY, "--ssh", officer["signing_key"], "--age",
                officer["age_recipient"])
    fp = officer["fingerprint"]
    assert (added.exit_code, added.stderr) == (
        0, f"evault: added key {fp} to body {BODY}\n"
           f"evault: warning: body {BODY}: key {fp} not pinned: confirm it with the officer by "
           "another channel (--fingerprint next time)\n")
    assert [d["pinned"] for d in _key_events(cli)] == [False]


def _card(tmp_path: Path, vault: str, name: str) -> tuple[Path, str]:
    sender = Cli(tmp_path / vault)
    sender.init()
    fp = json.loads(sender.ok("identity", "create", name, "--json").stdout)["fingerprint"]
    card = tmp_path / f"{vault}.card.json"
    sender.ok("identity", "export", name, "-o", str(card))
    return card, fp


def test_unpinned_contact_warns_and_is_logged_unpinned(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "opg-officer")
    card, fp = _card(tmp_path, "sender", "registry-office")
    added = cli("contact", "add", str(card))
    assert (added.exit_code, added.stderr) == (
        0, f"evault: added contact registry-office ({fp})\n"
           f"evault: warning: contact registry-office: key {fp} not pinned: confirm it with "
           "the sender by another channel (--fingerprint next time)\n")
    events = json.loads(cli.ok("custody", "show", f"contact:{fp}", "--json").stdout)["events"]
    assert [e["details"]["pinned"] for e in events] == [False]


def test_a_second_contact_under_a_known_name_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "opg-officer")
    card, fp = _card(tmp_path, "sender", "registry-office")
    cli.ok("contact", "add", str(card), "--fingerprint", fp)
    impostor, impostor_fp = _card(tmp_path, "impostor", "registry-office")
    refused = cli("contact", "add", str(impostor), "--fingerprint", impostor_fp)
    assert (refused.exit_code, refused.stderr) == (
        1, f"evault: contact registry-office: a contact of that name has key {fp} already; a "
           "card under a known name is refused (revoke the old contact first if its holder "
           "confirms a new key)\n")
    cli.ok("contact", "revoke", "registry-office")
    cli.ok("contact", "add", str(impostor), "--fingerprint", impostor_fp)
    names = json.loads(cli.ok("contact", "list", "--json").stdout)
    assert [(c["fingerprint"], c["status"]) for c in names] == [
        (fp, "revoked"), (impostor_fp, "active")]
