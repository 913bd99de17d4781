"""`receipt import` refuses acknowledgements that cannot be genuine, though a real body key
signed them: a key the package was not encrypted to, a receipt before the send, a checkpoint
the signer did not sign, items other than the package's (issue 15, item 4)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_opening import World, _ack, _make_world

from vault.crypto.keys import SigningKey
from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
from vault.formats.receipt import ACK_NAMESPACE, Acknowledgement, sign_document


@pytest.fixture
def world(tmp_path: Path) -> World:
    """Office, ICC-OTP and UA-OPG vaults on SQLite, and one package for ICC-OTP."""
    return opening_world(tmp_path)


def opening_world(tmp_path: Path) -> World:
    """test_opening's ``_make_world(tmp_path, None)``: the vaults a copy of those the test
    process builds once (conftest's ``reuse_world``), the package built for the test."""
    return _make_world(tmp_path, None)


def _key(world: World, name: str | None = None) -> SigningKey:
    """The private signing key of an ICC identity (the officer's, by default)."""
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(world.icc.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, name)))
    v.close()
    return pair.signing


def _import(world: World, ack: Acknowledgement, key: SigningKey) -> tuple[int, str]:
    """Sign ``ack`` with ``key``, as the officer's own tool would, and import it."""
    path = world.tmp / "forged.ack.json"
    path.write_bytes(ack.to_bytes())
    Path(f"{path}.sig").write_text(sign_document(ack.to_bytes(), key, ACK_NAMESPACE))
    result = world.office("receipt", "import", str(path))
    return result.exit_code, result.stderr


def _state(world: World) -> str:
    shown = world.office.ok("package", "show", world.package_id, "--json").stdout
    return str(json.loads(shown)["state"])


def test_ack_by_a_body_key_the_package_was_not_encrypted_to_is_refused(world: World) -> None:
    # A second ICC key, registered for the body after the package was built: a real key
    # of ICC-OTP, but it never could open this package.
    world.icc.ok("identity", "create", "icc-intern")
    card = world.tmp / "intern.card.json"
    world.icc.ok("identity", "export", "icc-intern", "-o", str(card))
    world.office.ok("body", "key", "add", "ICC-OTP", "--card", str(card))
    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "received"))
    ack = world.tmp / "intern.ack.json"
    world.icc.ok("ack", world.package_id, "--as", "icc-intern", "-o", str(ack))
    intern = json.loads(ack.read_text())["recipient"]["fingerprint"]
    result = world.office("receipt", "import", str(ack))
    assert (result.exit_code, result.stderr) == (
        3, f"evault: ack for package {world.package_id}: it is signed by {intern}, a key of "
           "ICC-OTP the package was not encrypted to\n")
    assert _state(world) == "built"


def test_ack_received_before_the_package_was_sent_is_refused(world: World) -> None:
    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    built = json.loads(world.office.ok("package", "show", world.package_id,
                                       "--json").stdout)["created_at"]
    code, err = _import(world, replace(genuine, received_at="2020-01-01T00:00:00Z"), _key(world))
    assert (code, err) == (
        3, f"evault: ack for package {world.package_id}: it says received at "
           f"2020-01-01T00:00:00Z, before the package was sent at {built} (allowing 5 minutes "
           "of clock skew)\n")
    assert _state(world) == "built"


def test_ack_received_in_the_future_is_refused(world: World) -> None:
    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    code, err = _import(world, replace(genuine, received_at="2099-01-01T00:00:00Z"), _key(world))
    assert code == 3
    prefix = (f"evault: ack for package {world.package_id}: it says received at "
              "2099-01-01T00:00:00Z, after now (")
    assert err.startswith(prefix), err
    assert err.endswith("; allowing 5 minutes of clock skew)\n"), err
    assert _state(world) == "built"


def test_ack_received_within_the_clock_skew_is_accepted(world: World) -> None:
    from vault.clock import isoformat, parse_iso
    from vault.service.packaging.receipts import ACK_CLOCK_SKEW

    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    built = json.loads(world.office.ok("package", "show", world.package_id,
                                       "--json").stdout)["created_at"]
    early = isoformat(parse_iso(built) - ACK_CLOCK_SKEW)
    code, err = _import(world, replace(genuine, received_at=early), _key(world))
    assert code == 0, err
    assert _state(world) == "acknowledged"


def test_ack_whose_checkpoint_the_signer_did_not_sign_is_refused(world: World) -> None:
    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    origin = genuine.checkpoint.split("\n", 1)[0]
    # The officer's log name and a well-formed tree head, signed by some other key.
    other = sign_checkpoint(Checkpoint(origin, 3, bytes(32)),
                            NoteSigner(origin, SigningKey.generate()))
    code, err = _import(world, replace(genuine, checkpoint=other), _key(world))
    assert (code, err) == (
        3, f"evault: ack for package {world.package_id}: its checkpoint does not verify under "
           f"the signer's key (signed note: no signature from a known key ({origin}))\n")
    assert _state(world) == "built"


def test_ack_with_other_item_sizes_or_digests_is_refused(world: World) -> None:
    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    first, *rest = genuine.items
    expected = (3, f"evault: ack for package {world.package_id}: its item ids, sizes or "
                   "digests differ from the package's\n")
    for changed in (replace(first, size=first.size + 1), replace(first, sha256="00" * 32)):
        forged = replace(genuine, items=(changed, *rest))
        assert _import(world, forged, _key(world)) == expected
    assert _state(world) == "built"


def test_every_reason_is_named_at_once(world: World) -> None:
    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    first, *rest = genuine.items
    forged = replace(genuine, received_at="2020-01-01T00:00:00Z",
                     items=(replace(first, size=first.size + 1), *rest))
    code, err = _import(world, forged, _key(world))
    assert code == 3
    assert err.startswith(f"evault: ack for package {world.package_id}: it says received at "
                          "2020-01-01T00:00:00Z, before the package was sent at ")
    assert err.endswith("of clock skew); its item ids, sizes or digests differ from the "
                        "package's\n")
