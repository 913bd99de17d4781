"""The ``evault`` commands, registered on :data:`vault.cli.cli` when this module is imported.

:class:`vault.cli.VaultGroup` imports it the first time a command is looked up, so that
``evault --help`` lists the commands (from :data:`vault.cli.COMMANDS`) without defining them.
Like :mod:`vault.cli`, this module only parses, calls one service function and renders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from vault.service.export import Progress as ExportProgress
    from vault.service.progress import Progress
    from vault.service.rules import Change
    from vault.service.vaults import Vault

from vault.cli import (
    as_option,
    cli,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    open_vault,
    read_card,
    say,
    vault_option,
    with_vault,
    write_or_print,
)
from vault.progress import ProgressLine, progress_line

# ----------------------------------------------------------------------------- vault


@cli.command()
@vault_option
@click.option(
    "--db",
    "database",
    metavar="URL",
    help="Database URL (default: SQLite vault.db "
    "inside the vault), e.g. postgresql+psycopg://user@host/dbname",
)
@json_option
def init(vault_dir: Path | None, database: str | None, as_json: bool) -> None:
    """Create a vault, or upgrade an existing one (idempotent).

    \b
    Examples:
      evault init --vault ./office-vault
      evault init --vault ./team-vault --db postgresql+psycopg://evault@db.example/evault
    """
    from vault.service.vaults import init_vault

    result = init_vault(vault_dir, database=database)
    data = {
        "vault": str(result.root),
        "created": result.created,
        "database": result.database,
        "revision": result.revision,
    }
    emit_record(data, as_json)
    if not as_json:
        say(("created vault at " if result.created else "vault is ready at ") + str(result.root))


@cli.group()
def db() -> None:
    """Database schema of an existing vault.

    \b
    Examples:
      evault db current
      evault db upgrade
    """


@db.command("upgrade")
@vault_option
def db_upgrade(vault_dir: Path | None) -> None:
    """Upgrade the vault's database to this evault's schema.

    \b
    Example:
      evault db upgrade --vault ./office-vault
    """
    from vault.service.vaults import upgrade_vault

    before, after = upgrade_vault(vault_dir)
    if before == after:
        say(f"database is at {after} already")
    else:
        say(f"database upgraded from {before or 'empty'} to {after}")


@db.command("current")
@vault_option
@json_option
def db_current(vault_dir: Path | None, as_json: bool) -> None:
    """Show the database's schema revision and the code's.

    \b
    Example:
      evault db current --json
    """
    from vault.service.vaults import current

    rev, head = current(vault_dir)
    emit_record({"current": rev, "head": head, "up_to_date": rev == head}, as_json)


@cli.command()
@vault_option
@click.option(
    "--repair", is_flag=True,
    help="Remove leftover temporary and orphaned blobs; rewrite the key tables from the "
    "signed key history.",
)
@json_option
def doctor(vault_dir: Path | None, repair: bool, as_json: bool) -> None:
    """Check the vault: configuration, database, key store, blobs, key history.

    The key tables are compared with the signed key history: exit 3 if they differ, and
    --repair rewrites them from it.

    \b
    Examples:
      evault doctor
      evault doctor --repair
    """
    from vault.service.doctor import diagnose

    report = diagnose(vault_dir, repair=repair)
    leftovers = report.get("leftovers", [])
    shown = report if as_json or "leftovers" not in report else {
        **report, "leftovers": len(leftovers)}  # each named on stderr below
    emit_record(shown, as_json)
    if not as_json:
        for pid in report.get("unsent_packages", []):
            say(f"package {pid}: built but never sent; re-run the export that built it, or "
                f"send it with `evault send {pid} --outbox DIR`")
        for row in leftovers:
            say(_leftover_line(row))
    if report.get("key_history_differences"):
        # The key tables disagree with the signed history: a failed verification.
        raise SystemExit(3)


def _leftover_line(row: dict[str, Any]) -> str:
    """One line about a leftover of a killed ``items export`` or ``open``."""
    if row["command"] == "unknown":
        return f"{row['path']}: {row['state'].removeprefix('refused: ')}; left alone"
    of = f"`{row['command']}`" + (f" of item {row['item']}" if "item" in row else "")
    age = _age(row["age_seconds"])
    where = row["path"] if row["on_disk"] else f"{row['path']} (nothing left there)"
    state = row["state"]
    if state == "left":
        return (f"leftover of an interrupted {of}, started {age} ago: {where}; "
                "`evault doctor --repair` removes it")
    if state.startswith("refused: "):
        return f"leftover of an interrupted {of}: {row['path']}: {state[9:]}; left alone"
    logged = f"; logged {row['logged']}" if row.get("logged") else ""
    return f"leftover of an interrupted {of}, started {age} ago: {where}: {state}{logged}"


def _age(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


# ----------------------------------------------------------------------------- identities


@cli.group()
def identity() -> None:
    """Identities of this vault: signing and decryption keys of a person or office.

    \b
    Examples:
      evault identity create registry-office --org "Fictional Ministry of Justice"
      evault identity list
      evault identity export registry-office -o registry-office.card.json
    """


IDENTITY_COLUMNS = (
    "name",
    "org",
    "default",
    "status",
    "fingerprint",
    "age_recipient",
    "created_at",
)


@identity.command("create")
@click.argument("name")
@click.option("--org", help="Organisation the identity belongs to.")
@click.option("--email", help="Contact address printed on the card.")
@as_option
@json_option
@with_vault
def identity_create(
    vault: Vault, name: str, org: str | None, email: str | None, as_name: str | None,
    as_json: bool,
) -> None:
    """Create an identity: an Ed25519 signing key and an age decryption key.

    The private halves go to the key store; the first identity is the vault's default.
    Every later one is introduced (its creation signed) by the default identity, or --as.

    \b
    Example:
      evault identity create registry-office --org "Fictional Ministry of Justice"
    """
    from vault.service.identities import create_identity

    data = create_identity(vault, name, org=org, email=email, as_name=as_name)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"created identity {name} in the {vault.keystore.kind} key store")


@identity.command("list")
@list_output_options
@with_vault
def identity_list(vault: Vault, fmt: str | None) -> None:
    """List the identities.

    \b
    Example:
      evault identity list --json
    """
    from vault.service.identities import list_identities

    emit_rows(list_identities(vault), fmt, IDENTITY_COLUMNS)


@identity.command("show")
@click.argument("name", required=False)
@json_option
@with_vault
def identity_show(vault: Vault, name: str | None, as_json: bool) -> None:
    """Show one identity (the default one without NAME), with all its keys.

    \b
    Example:
      evault identity show registry-office
    """
    from vault.service.identities import show_identity

    emit_record(show_identity(vault, name), as_json)


@identity.command("export")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file (default: stdout; with --secret-age-key, '-' for stdout).",
)
@click.option(
    "--secret-age-key",
    is_flag=True,
    help="Export the current age SECRET key as an age identity file (mode 0600), not the card.",
)
@with_vault
def identity_export(
    vault: Vault, name: str | None, output: Path | None, secret_age_key: bool
) -> None:
    """Export the public contact card of an identity (self-signed JSON).

    Hand the card to the other side and tell them its fingerprint by another channel.

    With --secret-age-key, write the identity's current age secret key instead, in the form
    age-keygen writes, so that stock `age -d -i FILE` can decrypt packages sent to it. The
    export is logged (identity.secret_exported); keep the file offline and delete it after use.

    \b
    Examples:
      evault identity export registry-office -o registry-office.card.json
      evault identity export icc-officer --secret-age-key -o icc-officer.agekey
    """
    if secret_age_key:
        _export_secret_age_key(vault, name, output)
        return
    from vault.service.identities import export_card

    write_or_print(export_card(vault, name), output, what="contact card")


def _export_secret_age_key(vault: Vault, name: str | None, output: Path | None) -> None:
    from vault.errors import UsageError
    from vault.service.identities import export_secret_age_key

    if output is None:
        raise UsageError(
            "--secret-age-key writes a secret key: give -o FILE, or -o - to print it to stdout"
        )
    to_stdout = str(output) == "-"
    done = export_secret_age_key(vault, name, None if to_stdout else output)
    if done.text is not None:
        click.echo(done.text, nl=False)
    where = "stdout" if to_stdout else f"{output} (mode 0600)"
    advice = "" if to_stdout else "; delete it when you no longer need it"
    say(
        f"wrote the age secret key of {done.name} (key generation {done.generation}, "
        f"{done.fingerprint}) to {where}; logged identity.secret_exported{advice}"
    )


@identity.command("rotate")
@click.argument("name", required=False)
@json_option
@with_vault
def identity_rotate(vault: Vault, name: str | None, as_json: bool) -> None:
    """Make new keys for an identity; old keys stay for verifying and decrypting the past.

    \b
    Example:
      evault identity rotate registry-office
    """
    from vault.service.identities import rotate_identity

    data = rotate_identity(vault, name)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"rotated identity {data['name']}: new key {data['fingerprint']}")


@identity.command("revoke")
@click.argument("name")
@as_option
@json_option
@with_vault
def identity_revoke(vault: Vault, name: str, as_name: str | None, as_json: bool) -> None:
    """Revoke an identity: no new use; what it signed before still verifies.

    \b
    Example:
      evault identity revoke former-officer
    """
    from vault.service.identities import revoke_identity

    data = revoke_identity(vault, name, as_name=as_name)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"revoked identity {name}")


# ----------------------------------------------------------------------------- bodies

BODY_COLUMNS = ("id", "name", "active_keys", "created_at")


@cli.group()
def body() -> None:
    """Recipient bodies, such as ICC-OTP, and the keys of their officers.

    \b
    Examples:
      evault body add ICC-OTP --name "International Criminal Court, Office of the Prosecutor"
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body list
    """


@body.command("add")
@click.argument("body_id", metavar="ID")
@click.option("--name", required=True, help="Full name of the body.")
@as_option
@json_option
@with_vault
def body_add(vault: Vault, body_id: str, name: str, as_name: str | None, as_json: bool) -> None:
    """Register a recipient body.

    \b
    Example:
      evault body add UA-OPG --name "Office of the Prosecutor General of Ukraine"
    """
    from vault.service.bodies import add_body

    data = add_body(vault, body_id, name=name, as_name=as_name)
    emit_record(data, as_json, skip=("keys",))


@body.command("list")
@list_output_options
@with_vault
def body_list(vault: Vault, fmt: str | None) -> None:
    """List the bodies and how many active keys each has.

    \b
    Example:
      evault body list --csv
    """
    from vault.service.bodies import list_bodies

    emit_rows(list_bodies(vault), fmt, BODY_COLUMNS)


@body.command("show")
@click.argument("body_id", metavar="ID")
@json_option
@with_vault
def body_show(vault: Vault, body_id: str, as_json: bool) -> None:
    """Show a body with all its keys.

    \b
    Example:
      evault body show ICC-OTP
    """
    from vault.service.bodies import show_body

    emit_record(show_body(vault, body_id), as_json)


@body.group("key")
def body_key() -> None:
    """Keys of a body's officers.

    \b
    Examples:
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body key revoke ICC-OTP SHA256:...
    """


@body_key.command("add")
@click.argument("body_id", metavar="ID")
@click.option(
    "--card",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Contact card exported by the officer's `evault identity export`.",
)
@click.option("--age", "age_recipient", metavar="AGE1...", help="The officer's age recipient.")
@click.option("--ssh", "ssh_key", metavar="KEY", help="The officer's 'ssh-ed25519 AAAA...' key.")
@click.option(
    "--fingerprint",
    "pin",
    metavar="SHA256:...",
    help="Fingerprint confirmed by the officer; a different key is refused.",
)
@click.option(
    "--age-fingerprint",
    "age_pin",
    metavar="SHA256:...",
    help="Fingerprint of the age key confirmed by the officer (needed with --ssh --fingerprint).",
)
@as_option
@json_option
@with_vault
def body_key_add(
    vault: Vault,
    body_id: str,
    card: Path | None,
    age_recipient: str | None,
    ssh_key: str | None,
    pin: str | None,
    age_pin: str | None,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Add an officer's key to a body, from a contact card or from the two public keys.

    A card is signed by its SSH key, so --fingerprint pins the whole card; the bare --ssh and
    --age keys are pinned only by --fingerprint and --age-fingerprint together (both printed
    by the officer's `evault identity show`). A key added unpinned is logged so, with a warning.

    \b
    Examples:
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body key add UA-OPG --age age1... --ssh "ssh-ed25519 AAAA... officer" \\
        --fingerprint SHA256:... --age-fingerprint SHA256:...
    """
    from vault.service.bodies import add_body_key

    data = add_body_key(
        vault,
        body_id,
        card=read_card(card) if card else None,
        age_recipient=age_recipient,
        ssh_key=ssh_key,
        pin=pin,
        age_pin=age_pin,
        as_name=as_name,
    )
    emit_record(data, as_json)
    if not as_json:
        say(f"added key {data['fingerprint']} to body {body_id}")
    if pin is None:
        say(f"warning: body {body_id}: key {data['fingerprint']} not pinned: confirm it with "
            "the officer by another channel (--fingerprint next time)")


@body_key.command("revoke")
@click.argument("body_id", metavar="ID")
@click.argument("fingerprint")
@as_option
@json_option
@with_vault
def body_key_revoke(
    vault: Vault, body_id: str, fingerprint: str, as_name: str | None, as_json: bool
) -> None:
    """Revoke a key of a body: no new package is encrypted to it.

    \b
    Example:
      evault body key revoke ICC-OTP SHA256:...
    """
    from vault.service.bodies import revoke_body_key

    data = revoke_body_key(vault, body_id, fingerprint, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(f"revoked key {fingerprint} of body {body_id}")


# ----------------------------------------------------------------------------- release rules


@cli.group()
def rule() -> None:
    """Release rules: which bodies may receive items with a label. Each change is signed.

    A label without a rule goes to no body (unless `evault rule default allow`).

    \b
    Examples:
      evault rule add restricted-icc ICC-OTP
      evault rule add sealed --none
      evault rule list
    """


def _rule_said(change: Change, what: str, as_json: bool) -> None:
    if as_json:
        emit_record({"changed": change.changed, **change.rules.to_dict()}, as_json)
    else:
        say(f"{what}; logged rule.changed" if change.changed else f"{what} (unchanged)")


def _releases(bodies: tuple[str, ...] | None) -> str:
    if bodies is None:
        return "has no rule"
    return f"releases to {', '.join(bodies)}" if bodies else "releases to no body"


@rule.command("add")
@click.argument("label")
@click.argument("bodies", nargs=-1, metavar="BODY...")
@click.option("--none", "none", is_flag=True, help="A rule that releases to no body.")
@as_option
@json_option
@with_vault
def rule_add(vault: Vault, label: str, bodies: tuple[str, ...], none: bool,
             as_name: str | None, as_json: bool) -> None:
    """Create the rule for a label, or add bodies to it.

    \b
    Examples:
      evault rule add restricted-icc ICC-OTP
      evault rule add sealed --none
    """
    from vault.service.rules import add_rule

    change = add_rule(vault, label, bodies, none=none, as_name=as_name)
    _rule_said(change, f"rule for {label}: {_releases(change.rules.rules[label])}", as_json)


@rule.command("remove")
@click.argument("label")
@click.argument("bodies", nargs=-1, metavar="[BODY...]")
@as_option
@json_option
@with_vault
def rule_remove(vault: Vault, label: str, bodies: tuple[str, ...], as_name: str | None,
                as_json: bool) -> None:
    """Remove the rule for a label, or only some bodies from it.

    \b
    Examples:
      evault rule remove restricted-icc UA-OPG
      evault rule remove restricted-icc
    """
    from vault.service.rules import remove_rule

    change = remove_rule(vault, label, bodies, as_name=as_name)
    left = change.rules.rules.get(label)
    _rule_said(change, f"rule for {label}: " + ("removed" if left is None else _releases(left)),
               as_json)


@rule.command("default")
@click.argument("default", type=click.Choice(["deny", "allow"]))
@as_option
@json_option
@with_vault
def rule_default(vault: Vault, default: str, as_name: str | None, as_json: bool) -> None:
    """What a label without a rule does: deny (goes to no body) or allow (goes to all).

    \b
    Example:
      evault rule default deny
    """
    from vault.service.rules import set_default

    change = set_default(vault, default, as_name=as_name)
    _rule_said(change, f"default: {default} ({_DEFAULT_MEANS[default]})", as_json)


_DEFAULT_MEANS = {"deny": "a label without a rule goes to no body",
                  "allow": "a label without a rule goes to every body"}


@rule.command("sign")
@as_option
@json_option
@with_vault
def rule_sign(vault: Vault, as_name: str | None, as_json: bool) -> None:
    """Adopt config.toml's release rules as they are: after an upgrade or a hand edit.

    \b
    Example:
      evault rule sign --as registry-office
    """
    from vault.service.rules import sign_rules

    change = sign_rules(vault, as_name=as_name)
    n = len(change.rules.rules)
    _rule_said(change, f"release rules signed: {n} rule{'s' if n != 1 else ''}, default "
               f"{change.rules.default}", as_json)


@rule.command("list")
@json_option
@with_vault
def rule_list(vault: Vault, as_json: bool) -> None:
    """List the rules, the default, and labels in use that have no rule.

    \b
    Example:
      evault rule list --json
    """
    from vault.render import render_table
    from vault.service.rules import list_rules

    data = list_rules(vault)
    if as_json:
        emit_record(data, as_json)
        return
    rows = [{"label": r["label"],
             "bodies": ", ".join(r["bodies"]) or "(none)" if r["rule"]
             else f"(no rule: {r['note']})"} for r in data["rules"]]
    click.echo(render_table(rows, ("label", "bodies")), nl=False)
    click.echo(f"default: {data['default']} ({_DEFAULT_MEANS[data['default']]})")
    if data["difference"]:
        click.echo(data["difference"])


# ----------------------------------------------------------------------------- intake

ITEM_COLUMNS = ("id", "case", "name", "size", "sha256", "labels", "ingested_at")
INGEST_COLUMNS = ("id", "case", "name", "size", "sha256")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV or JSON-lines file, one row per file with the same fields.",
)
@click.option("--case", "case_id", metavar="CASE", help="Case the items belong to.")
@click.option("--create-case", is_flag=True, help="Create the case if it does not exist.")
@click.option("--title", help="Title of the item(s).")
@click.option("--description", help="Description of the item(s).")
@click.option("--source", help="Where the evidence came from.")
@click.option("--collected-at", metavar="ISO8601", help="Collection time, e.g. 2026-03-14T09:30Z.")
@click.option("--location", help="Collection place.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag; repeatable.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A handling label (release rules act on these); repeatable.",
)
@click.option("--recursive", "-r", is_flag=True, help="Ingest the files inside directories.")
@click.option("--follow-symlinks", is_flag=True, help="Ingest the targets of symbolic links.")
@click.option(
    "--also-digest",
    metavar="md5,sha1",
    default="",
    help="Legacy digests to compute too, for forensic cross-reference.",
)
@as_option
@list_output_options
@with_vault
def ingest(
    vault: Vault,
    paths: tuple[Path, ...],
    manifest: Path | None,
    case_id: str | None,
    create_case: bool,
    title: str | None,
    description: str | None,
    source: str | None,
    collected_at: str | None,
    location: str | None,
    tags: tuple[str, ...],
    labels: tuple[str, ...],
    recursive: bool,
    follow_symlinks: bool,
    also_digest: str,
    as_name: str | None,
    fmt: str | None,
) -> None:
    """Ingest evidence files: hash, encrypt at rest, record custody. Each file is read once.

    \b
    Examples:
      evault ingest statement.pdf --case UA-2026-0042 --title "Witness statement" \\
          --collected-at 2026-03-14T09:30:00Z --label restricted-icc
      evault ingest ./photos --recursive --case UA-2026-0042 --also-digest md5,sha1
      evault ingest --manifest batch.csv --create-case
    """
    from vault.service import intake

    if not paths and not manifest:
        raise click.UsageError("give files to ingest, or --manifest FILE")
    if paths and manifest:
        raise click.UsageError("give files to ingest or --manifest FILE, not both")
    fields = None
    if case_id or not manifest:
        if not case_id:
            raise click.UsageError("--case CASE is required")
        fields = intake.IntakeFields(
            case=case_id,
            title=title,
            description=description,
            source=source,
            collected_at=intake.parse_collected_at(collected_at) if collected_at else None,
            location=location,
            tags=intake.parse_tags(tags),
            labels=intake.parse_labels(labels),
        )
    if manifest:
        rows = intake.rows_from_manifest(manifest, fields, follow_symlinks=follow_symlinks)
    else:
        assert fields is not None
        rows = intake.rows_from_paths(
            list(paths), fields, recursive=recursive, follow_symlinks=follow_symlinks
        )
    digests = [a.strip() for a in also_digest.split(",") if a.strip()]
    with progress_line("ingest") as line:
        files, nbytes = [0, len(rows)], [0, 0]

        def files_done(done: int, total: int) -> None:
            files[:] = done, total
            if line is not None:
                line.update(done, total, nbytes=(nbytes[0], nbytes[1]))

        def bytes_read(done: int, total: int) -> None:
            nbytes[:] = done, total
            if line is not None:
                line.update(files[0], files[1], nbytes=(done, total))

        results = intake.ingest(
            vault,
            rows,
            as_name=as_name,
            create_case=create_case,
            also_digest=digests,
            follow_symlinks=follow_symlinks,
            progress=files_done if line else None,
            bytes_progress=bytes_read if line else None,
        )
    emit_rows(results, fmt, INGEST_COLUMNS + tuple(digests))
    if fmt is None:
        say(f"ingested {len(results)} file(s), {sum(r['size'] for r in results)} bytes")


@cli.group()
def case() -> None:
    """Case files that group items.

    \b
    Examples:
      evault case create UA-2026-0042 --title "Fictional shelling of a school"
      evault case list
    """


CASE_COLUMNS = ("id", "title", "items", "bytes", "created_at")


@case.command("create")
@click.argument("case_id", metavar="CASE")
@click.option("--title", help="Short title of the case (stays in this vault).")
@as_option
@json_option
@with_vault
def case_create(
    vault: Vault, case_id: str, title: str | None, as_name: str | None, as_json: bool
) -> None:
    """Create a case.

    \b
    Example:
      evault case create UA-2026-0042 --title "Fictional shelling of a school"
    """
    from vault.service.intake import create_case

    emit_record(create_case(vault, case_id, title=title, as_name=as_name), as_json)


@case.command("list")
@list_output_options
@with_vault
def case_list(vault: Vault, fmt: str | None) -> None:
    """List cases with item counts and sizes.

    \b
    Example:
      evault case list --json
    """
    from vault.service.intake import list_cases

    emit_rows(list_cases(vault), fmt, CASE_COLUMNS)


@case.command("show")
@click.argument("case_id", metavar="CASE")
@json_option
@with_vault
def case_show(vault: Vault, case_id: str, as_json: bool) -> None:
    """Show one case.

    \b
    Example:
      evault case show UA-2026-0042
    """
    from vault.service.intake import show_case

    emit_record(show_case(vault, case_id), as_json)


@cli.group()
def items() -> None:
    """Items of the vault.

    \b
    Examples:
      evault items list --case UA-2026-0042
      evault items show EV-0123456789AB
      evault items export EV-0123456789AB -o copy.pdf --reason "expert review"
    """


@items.command("list")
@click.option("--case", "case_id", metavar="CASE", help="Only items of this case.")
@click.option("--label", metavar="LABEL", help="Only items with this label.")
@list_output_options
@with_vault
def items_list(vault: Vault, case_id: str | None, label: str | None, fmt: str | None) -> None:
    """List items.

    \b
    Examples:
      evault items list --case UA-2026-0042
      evault items list --label restricted-icc --csv
    """
    from vault.service.items import list_items

    emit_rows(list_items(vault, case=case_id, label=label), fmt, ITEM_COLUMNS)


@items.command("show")
@click.argument("item_id", metavar="ID")
@json_option
@with_vault
def items_show(vault: Vault, item_id: str, as_json: bool) -> None:
    """Show an item's metadata and digests.

    \b
    Example:
      evault items show EV-0123456789AB --json
    """
    from vault.service.items import show_item

    emit_record(show_item(vault, item_id), as_json)


@items.command("export")
@click.argument("item_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the decrypted content.",
)
@click.option("--reason", required=True, help="Why the content is needed (logged).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@as_option
@json_option
@with_vault
def items_export(
    vault: Vault,
    item_id: str,
    output: Path,
    reason: str,
    force: bool,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Decrypt an item for authorised use; the digest is checked and the export logged.

    \b
    Example:
      evault items export EV-0123456789AB -o copy.pdf --reason "forensic examination"
    """
    from vault.service.items import export_item

    with progress_line("items export") as line:
        data = export_item(vault, item_id, output, reason=reason, as_name=as_name, force=force,
                           progress=line.update_bytes if line else None)
    emit_record(data, as_json)
    if not as_json:
        say(f"exported item {item_id} to {output}; the export is in the custody log")


# ----------------------------------------------------------------------------- custody


@cli.group()
def custody() -> None:
    """The signed, append-only custody log and its checkpoints and proofs.

    \b
    Examples:
      evault custody show EV-0123456789AB
      evault custody verify
      evault custody checkpoint -o checkpoint.txt
      evault custody prove EV-0123456789AB
      evault custody consistency old-checkpoint.txt new-checkpoint.txt
      evault custody reanchor --as registry-office
    """


@custody.command("show")
@click.argument("subject", metavar="ID")
@json_option
@with_vault
def custody_show(vault: Vault, subject: str, as_json: bool) -> None:
    """Show the custody events of an item (or case, package, body, identity:NAME).

    \b
    Example:
      evault custody show EV-0123456789AB
    """
    from vault.service.custody import show_subject

    events = show_subject(vault, subject)
    if as_json:
        emit_record({"subject": subject, "events": events}, True)
        return
    rows = [{**e, "details": e["details"] or None, "digests": e["digests"] or None} for e in events]
    emit_rows(rows, None, ("seq", "time", "action", "actor", "details", "digests"))


@custody.command("verify")
@click.option(
    "--quick", is_flag=True, help="Structure only: leaves, tree, checkpoints; skip the signatures."
)
@json_option
@with_vault
def custody_verify(vault: Vault, quick: bool, as_json: bool) -> None:
    """Re-derive the whole log and list every defect; exit 3 if there is any.

    Checks every leaf hash, every signature (on both cores), the sequence without gaps, the
    stored fields against the signed bytes, the tree head, every checkpoint, and every
    checkpoint a body cosigned in an acknowledgement (the log must still extend it).

    \b
    Examples:
      evault custody verify
      evault custody verify --json
    """
    from vault.render import terminal_safe
    from vault.service.custody import verify_log

    with progress_line("custody verify") as line:
        report = verify_log(vault, signatures=not quick, progress=line.update if line else None)
    if as_json:
        emit_record(report.to_dict(), True)
    else:
        for defect in report.defects:
            click.echo(f"FAIL: {terminal_safe(str(defect))}")
        what = "structure" if quick else "structure and signatures"
        if report.defects:
            say(f"custody log: {len(report.defects)} defect(s) in {report.size} events")
        else:
            witnessed = (f", {report.witnessed} witnessed by bodies" if report.witnessed
                         else "")
            click.echo(f"OK: {report.size} events, {report.checkpoints} checkpoints{witnessed} "
                       f"({what})")
    if report.defects:
        raise SystemExit(3)


@custody.command("checkpoint")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed note to this file (default: stdout).",
)
@as_option
@with_vault
def custody_checkpoint(vault: Vault, output: Path | None, as_name: str | None) -> None:
    """Sign a checkpoint (C2SP signed note: origin, size, root) of the log as it is now.

    \b
    Example:
      evault custody checkpoint -o checkpoint-2026-11-28.txt
    """
    from vault.service.custody import make_checkpoint

    if output is not None and output.exists():
        raise click.UsageError(f"{output} exists; choose another file")
    if output is not None:
        from vault.durable import require_folder

        require_folder(output)
    note = make_checkpoint(vault, as_name)
    write_or_print(note, output)


@custody.command("reanchor")
@as_option
@json_option
@with_vault
def custody_reanchor(vault: Vault, as_name: str | None, as_json: bool) -> None:
    """Accept the log as it is after an older backup of the database was restored on purpose.

    Every command that writes refuses a log shorter than, or different from, the last
    checkpoint this vault signed (kept in its key store). When that comes from restoring a
    backup, this command checks the rest of the log, signs a custody.reanchored event naming
    the checkpoint given up and the head accepted, and records the new head.

    \b
    Example:
      evault custody reanchor --as registry-office
    """
    from vault.service.anchor import reanchor

    data = reanchor(vault, as_name)
    if as_json:
        emit_record(data, True)
    else:
        say(
            f"custody log: reanchored at {data['accepted_size']} events (the last checkpoint "
            f"this vault signed had {data['previous_size']}); logged as event {data['event']} "
            "(custody.reanchored)"
        )


@custody.command("prove")
@click.argument("subject", metavar="ID")
@json_option
@with_vault
def custody_prove(vault: Vault, subject: str, as_json: bool) -> None:
    """Inclusion proofs of an item's events against the latest checkpoint.

    \b
    Example:
      evault custody prove EV-0123456789AB --json
    """
    from vault.service.custody import prove_subject

    data = prove_subject(vault, subject)
    if as_json:
        emit_record(data, True)
        return
    click.echo(f"checkpoint: size {data['tree_size']}, root {data['root_hash']}")
    for event in data["events"]:
        click.echo(
            f"event {event['seq']} ({event['action']}): {event['status']}"
            + (f", {len(event['proof'])} hashes" if "proof" in event else "")
        )


@custody.command("consistency")
@click.argument("old", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the consistency proof (JSON) to this file, for an auditor.",
)
@click.option(
    "--proof",
    "proof_file",
    metavar="PROOF",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verify with this proof instead of this vault's log (no vault needed).",
)
@click.option(
    "--trusted-keys",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --proof: OpenSSH allowed_signers file of the checkpoint signers, each line "
    "naming the logs it keeps (evault/<vault-id>) among its principals.",
)
@json_option
@vault_option
def custody_consistency(
    old: Path,
    new: Path,
    output: Path | None,
    proof_file: Path | None,
    trusted_keys: Path | None,
    as_json: bool,
    vault_dir: Path | None,
) -> None:
    """Prove a log only grew between two signed checkpoints (a rewrite exits 3).

    OLD and NEW are checkpoint notes, or sharing receipts or acknowledgements (their
    checkpoint is used). Without --proof this vault's own log computes the proof; -o writes
    it for an auditor. With --proof no vault is needed: both notes must be signed by keys
    bound to their log: a --trusted-keys line (namespace evault-checkpoint) whose principals
    name the log evault/<vault-id>, or a vault at hand (its own log; the sender of a package
    it opened, for that package's receipt).

    \b
    Examples:
      evault custody consistency checkpoint-old.txt checkpoint-new.txt
      evault custody consistency receipt.json checkpoint-new.txt -o proof.json
      evault custody consistency receipt.json checkpoint-new.txt --proof proof.json \\
          --trusted-keys allowed_signers
    """
    from vault.service import audit

    if proof_file is None and trusted_keys is not None:
        raise click.UsageError("--trusted-keys goes with --proof")
    if proof_file is not None and output is not None:
        raise click.UsageError("-o writes a proof from this vault's log; not with --proof")
    if output is not None and output.exists():
        raise click.UsageError(f"{output} exists; choose another file")
    if proof_file is None:
        v = open_vault(vault_dir)
        try:
            data = audit.prove_from_log(v, audit.read_checkpoint(old), audit.read_checkpoint(new))
        finally:
            v.close()
    else:
        root = audit.find_vault(vault_dir)
        v_or_none = open_vault(root) if root is not None else None
        try:
            trust = audit.Trust.build(trusted_keys, v_or_none)
        finally:
            if v_or_none is not None:
                v_or_none.close()
        (old_note, old_package), (new_note, new_package) = (
            audit.read_checkpoint_of(old), audit.read_checkpoint_of(new))
        data = audit.verify_with_proof(old_note, new_note, proof_file.read_bytes(), trust,
                                       old_package=old_package, new_package=new_package)
    if as_json:
        emit_record(data, True)
    else:
        click.echo(
            f"OK: the log grew from {data['old_size']} to {data['new_size']} events "
            f"without rewriting ({len(data['proof'])} proof hashes)"
        )
    if output is not None:
        write_or_print(audit.proof_document(data), output)


# ----------------------------------------------------------------------------- packages


@cli.group()
def package() -> None:
    """Packages for one body: built, signed, encrypted to the body's keys, sent.

    \b
    Examples:
      evault package create --to ICC-OTP --case UA-2026-0042 --reference OTP-REQ-17
      evault package create --to UA-OPG --item EV-0123456789AB --send --outbox /mnt/transfer
      evault package list
    """


def _parse_tag_filters(tags: tuple[str, ...]) -> list[tuple[str, str]]:
    from vault.service.intake import parse_tags

    return list(parse_tags(tags))


@package.command("create")
@click.option("--to", "body_id", required=True, metavar="BODY", help="The receiving body.")
@click.option("--item", "item_ids", multiple=True, metavar="ID", help="An item; repeatable.")
@click.option("--case", "case_id", metavar="CASE", help="All items of a case (with filters).")
@click.option("--label", metavar="LABEL", help="With --case: only items with this label.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="K=V",
    help="With --case: only items with this tag; repeatable.",
)
@click.option("--reference", metavar="REF", help="The body's request reference.")
@click.option("--purpose", help="Why the evidence is shared (inside the encrypted bag).")
@click.option(
    "--confidential-reference",
    is_flag=True,
    help="Put only the reference's SHA-256 in the sharing receipt.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Package file (default: ./<package-id>.evpkg).",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--send", "send_now", is_flag=True, help="Send it right away (needs --outbox).")
@click.option(
    "--outbox", type=click.Path(file_okay=False, path_type=Path), help="Drop folder for --send."
)
@as_option
@json_option
@with_vault
def package_create(
    vault: Vault,
    body_id: str,
    item_ids: tuple[str, ...],
    case_id: str | None,
    label: str | None,
    tags: tuple[str, ...],
    reference: str | None,
    purpose: str | None,
    confidential_reference: bool,
    output: Path | None,
    force: bool,
    send_now: bool,
    outbox: Path | None,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Build one package for one body, refusing anything the release rules forbid.

    \b
    Examples:
      evault package create --to ICC-OTP --case UA-2026-0042 --label restricted-icc
      evault package create --to UA-OPG --item EV-0123456789AB -o opg.evpkg
      evault package create --to ICC-OTP --case UA-2026-0042 --send --outbox /mnt/transfer
    """
    from vault.service.packaging.build import build_package
    from vault.service.packaging.plan import plan_package
    from vault.service.packaging.send import send_package

    if send_now and outbox is None:
        raise click.UsageError("--send needs --outbox DIR")
    if outbox is not None and not send_now:
        raise click.UsageError("--outbox goes with --send")
    draft = plan_package(
        vault,
        body_id=body_id,
        item_ids=item_ids,
        case=case_id,
        label=label,
        tags=_parse_tag_filters(tags),
        reference=reference,
        purpose=purpose,
        confidential_reference=confidential_reference,
        as_name=as_name,
        output=output,
        force=force,
    )
    data = build_package(vault, draft)
    if send_now:
        assert outbox is not None
        data = send_package(vault, data["id"], outbox=outbox, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(
            f"built package {data['id']} for {body_id}: {data['items']} item(s), "
            f"{data['bytes']} bytes" + (f"; sent, receipt {data['receipt']}" if send_now else "")
        )


@package.command("list")
@click.option("--body", metavar="BODY", help="Only packages for this body.")
@list_output_options
@with_vault
def package_list(vault: Vault, body: str | None, fmt: str | None) -> None:
    """List packages with their state: built, sent, acknowledged.

    \b
    Example:
      evault package list --body ICC-OTP
    """
    from vault.service.packaging.records import PACKAGE_COLUMNS, list_packages

    emit_rows(list_packages(vault, body=body), fmt, PACKAGE_COLUMNS)


@package.command("show")
@click.argument("package_id", metavar="ID")
@json_option
@with_vault
def package_show(vault: Vault, package_id: str, as_json: bool) -> None:
    """Show one package: items, keys, digests, state.

    \b
    Example:
      evault package show PKG-0123456789AB
    """
    from vault.service.packaging.records import show_package

    emit_record(show_package(vault, package_id), as_json)


def paper_option(f: Callable[..., None]) -> Callable[..., None]:
    """``--paper a4|letter`` for the printed (HTML) forms."""
    return click.option(
        "--paper",
        type=click.Choice(["a4", "letter"]),
        help="Paper the HTML page prints on (default: a4).",
    )(f)


def _paper(fmt: str, paper: str | None) -> str:
    """The paper to print on; the default is the forms module's, named in one place."""
    from vault.render.forms import DEFAULT_PAPER

    if paper is not None and fmt != "html":
        raise click.UsageError("--paper goes with --format html")
    return paper or DEFAULT_PAPER


@package.command("sheet")
@click.argument("package_id", metavar="ID")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html"]),
    default="md",
    show_default=True,
    help="Markdown (a table) or one self-contained, printable HTML page.",
)
@paper_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the sheet to this file (default: stdout).",
)
@with_vault
def package_sheet(
    vault: Vault, package_id: str, fmt: str, paper: str | None, output: Path | None
) -> None:
    """A printable one-page verification sheet: ids, fingerprints, times, digests, checks.

    No titles, descriptions or file names; the commands to check each value with stock
    tools (ssh-keygen, sha256sum, age, bagit.py) are on the sheet. The HTML page prints on
    one A4 or Letter page (--paper) for a package of up to 25 items.

    \b
    Examples:
      evault package sheet PKG-0123456789AB
      evault package sheet PKG-0123456789AB --format html --paper letter -o sheet.html
    """
    from vault.render.sheet import render_sheet
    from vault.service.sheet import sheet_data

    if output is not None and output.exists():
        raise click.UsageError(f"{output} exists; choose another file")
    paper = _paper(fmt, paper)
    write_or_print(render_sheet(sheet_data(vault, package_id), fmt, paper=paper), output)


@cli.command()
@click.argument("package_ref", metavar="PACKAGE")
@click.option(
    "--outbox",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Drop folder: a mounted transfer share or removable media.",
)
@as_option
@json_option
@with_vault
def send(vault: Vault, package_ref: str, outbox: Path, as_name: str | None, as_json: bool) -> None:
    """Deliver a package (file or id) into a drop folder atomically and sign a receipt.

    The copy's digest is checked again; a `package.sent` event is logged for the package and
    each item.

    \b
    Examples:
      evault send PKG-0123456789AB.evpkg --outbox /mnt/transfer
      evault send PKG-0123456789AB --outbox /media/usb
    """
    from vault.service.packaging.send import send_package

    data = send_package(vault, package_ref, outbox=outbox, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(f"sent package {data['id']} to {data['delivered']}; receipt {data['receipt']}")


@cli.group()
def receipt() -> None:
    """Signed sharing receipts of sent packages.

    \b
    Examples:
      evault receipt list --body ICC-OTP
      evault receipt export RCP-0123456789AB -o receipt.json
    """


@receipt.command("list")
@click.option("--body", metavar="BODY", help="Only receipts for this body.")
@click.option("--since", metavar="ISO8601", help="Only receipts from this time on.")
@list_output_options
@with_vault
def receipt_list(vault: Vault, body: str | None, since: str | None, fmt: str | None) -> None:
    """List sharing receipts.

    \b
    Example:
      evault receipt list --since 2026-11-01T00:00:00Z --json
    """
    from vault.service.intake import parse_collected_at
    from vault.service.packaging.receipts import list_receipts

    when = parse_collected_at(since, "--since") if since else None
    rows = list_receipts(vault, body=body, since=when)
    emit_rows(rows, fmt, ("id", "package", "body", "items", "sent_at", "envelope_sha256"))


@receipt.command("show")
@click.argument("receipt_id", metavar="ID")
@json_option
@with_vault
def receipt_show(vault: Vault, receipt_id: str, as_json: bool) -> None:
    """Show a sharing receipt.

    \b
    Example:
      evault receipt show RCP-0123456789AB
    """
    from vault.service.packaging.receipts import show_receipt

    data = show_receipt(vault, receipt_id)
    if as_json:
        emit_record(data, True)
    else:
        emit_record({k: v for k, v in data["document"].items() if k != "checkpoint"}, False)


@receipt.command("export")
@click.argument("receipt_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The receipt file; its signature goes to FILE.sig.",
)
@with_vault
def receipt_export(vault: Vault, receipt_id: str, output: Path) -> None:
    """Export a receipt (exact signed bytes) and its SSHSIG signature (FILE.sig).

    \b
    Example:
      evault receipt export RCP-0123456789AB -o receipt.json
    """
    from vault.service.packaging.receipts import export_receipt

    document, signature = export_receipt(vault, receipt_id, output)
    say(f"wrote {document} and {signature}")


# ----------------------------------------------------------------------------- auditing


@cli.command("verify")
@click.argument(
    "files",
    metavar="FILE...",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--as",
    "as_name",
    metavar="NAME",
    help="Also decrypt and check packages whole with this identity's keys (needs a vault).",
)
@click.option(
    "--trusted-keys",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="OpenSSH allowed_signers file of the signers you trust (namespaces= respected).",
)
@json_option
@vault_option
def verify_cmd(
    files: tuple[Path, ...],
    as_name: str | None,
    trusted_keys: Path | None,
    as_json: bool,
    vault_dir: Path | None,
) -> None:
    """Verify packages, receipts, acknowledgements, contact cards and checkpoints.

    Each file is recognised by its content and checked as far as the keys at hand allow;
    a receipt or acknowledgement needs its FILE.sig beside it. Signers are trusted from
    --trusted-keys and, when a vault exists (--vault, or the default one), from its known
    senders. Prints `OK: FILE (what)` or `FAIL: FILE: reason` per file; exit 3 if any fails.

    \b
    Examples:
      evault verify PKG-0123456789AB.evpkg receipt.json --trusted-keys allowed_signers
      evault verify PKG-0123456789AB.evpkg --as icc-officer
      evault verify *.evpkg *.json checkpoint.txt --json
    """
    from vault.service import audit

    root = audit.find_vault(vault_dir)
    if as_name is not None and root is None:
        raise click.UsageError("--as NAME needs the vault holding that identity; pass --vault")
    v = open_vault(root) if root is not None else None
    try:
        trust = audit.Trust.build(trusted_keys, v)
        identities = audit.recipient_keys(v, as_name) if v is not None and as_name else None
        with progress_line("verify") as line:
            findings = audit.verify_files(files, trust, identities=identities,
                                          progress=_per_file(line, len(files)))
    finally:
        if v is not None:
            v.close()
    if as_json:
        emit_rows([f.to_dict() for f in findings], "json", ())
    else:
        for finding in findings:
            click.echo(finding.line())
    failed = sum(not f.ok for f in findings)
    if failed:
        if not as_json:
            say(f"{failed} of {len(findings)} file(s) did not verify")
        raise SystemExit(3)


# ----------------------------------------------------------------------------- recipients


@cli.group()
def contact() -> None:
    """Known senders from other organisations, pinned by fingerprint.

    \b
    Examples:
      evault contact add registry-office.card.json --fingerprint SHA256:...
      evault contact list
      evault contact revoke registry-office
    """


@contact.command("add")
@click.argument("card", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--fingerprint",
    "pin",
    metavar="SHA256:...",
    help="Fingerprint confirmed by the sender; a different key is refused.",
)
@as_option
@json_option
@with_vault
def contact_add(
    vault: Vault, card: Path, pin: str | None, as_name: str | None, as_json: bool
) -> None:
    """Add a sender from their contact card.

    \b
    Example:
      evault contact add registry-office.card.json --fingerprint SHA256:...
    """
    from vault.service.contacts import add_contact

    data = add_contact(vault, read_card(card), pin=pin, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(f"added contact {data['name']} ({data['fingerprint']})")
    if pin is None:
        say(f"warning: contact {data['name']}: key {data['fingerprint']} not pinned: confirm it "
            "with the sender by another channel (--fingerprint next time)")


@contact.command("list")
@list_output_options
@with_vault
def contact_list(vault: Vault, fmt: str | None) -> None:
    """List contacts.

    \b
    Example:
      evault contact list --json
    """
    from vault.service.contacts import CONTACT_COLUMNS, list_contacts

    emit_rows(list_contacts(vault), fmt, CONTACT_COLUMNS)


@contact.command("show")
@click.argument("ref", metavar="NAME|FINGERPRINT")
@json_option
@with_vault
def contact_show(vault: Vault, ref: str, as_json: bool) -> None:
    """Show a contact.

    \b
    Example:
      evault contact show registry-office
    """
    from vault.service.contacts import show_contact

    emit_record(show_contact(vault, ref), as_json)


@contact.command("revoke")
@click.argument("ref", metavar="NAME|FINGERPRINT")
@as_option
@json_option
@with_vault
def contact_revoke(vault: Vault, ref: str, as_name: str | None, as_json: bool) -> None:
    """Stop trusting a contact for new packages.

    \b
    Example:
      evault contact revoke SHA256:...
    """
    from vault.service.contacts import revoke_contact

    data = revoke_contact(vault, ref, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(f"revoked contact {data['name']}")


@cli.command("open")
@click.argument("package_file", metavar="PACKAGE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to extract into (as <package-id>/, only after every check passed).",
)
@click.option(
    "--trust-sender",
    metavar="SHA256:...",
    help="Trust this sender fingerprint for this package only.",
)
@click.option(
    "--allow-revoked",
    is_flag=True,
    help="With --trust-sender: open it even though that key was revoked here (logged).",
)
@as_option
@json_option
@with_vault
def open_cmd(
    vault: Vault,
    package_file: Path,
    out_dir: Path,
    trust_sender: str | None,
    allow_revoked: bool,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Verify a package whole, then extract it and receive its items into this vault.

    Checks, before a single file is kept: the envelope signature by a known sender, the
    payload digest, decryption, the signed statement (this package, this body, this key),
    every digest of the bag (and each MD5/SHA-1 the sender lists, recomputed), and the
    sender's custody excerpt with its proofs. Any failure exits 3 and leaves nothing behind.
    A sender key revoked here is refused even with --trust-sender, unless --allow-revoked.

    \b
    Examples:
      evault open PKG-0123456789AB.evpkg --out ./received
      evault open PKG-0123456789AB.evpkg --out ./received --trust-sender SHA256:...
    """
    from vault.service.opening import open_package

    with progress_line("open") as line:
        data = open_package(
            vault, package_file, out_dir=out_dir, as_name=as_name, trust_sender=trust_sender,
            allow_revoked=allow_revoked, verifying=_stage(line, 1, 2, "verifying"),
            storing=_stage(line, 2, 2, "storing"),
        )
    if as_json:
        emit_record(data, True)
        return
    emit_rows(data["items"], None, ("id", "source_item", "name", "size", "sha256"))
    if data["sender_revoked_at"]:
        say(f"warning: the sender's key was revoked at {data['sender_revoked_at']}; opened "
            "because of --allow-revoked, and logged so in package.opened")
    say(
        f"opened package {data['package']} from {data['sender']} "
        f"({data['sender_fingerprint']}) for {data['body']}: {len(data['items'])} item(s) "
        f"verified and received, {data['sender_custody_events']} custody event(s) proven; "
        f"files in {data['out']}"
    )


@cli.command()
@click.argument("package_ref", metavar="PACKAGE")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The acknowledgement file; its signature goes to FILE.sig.",
)
@as_option
@json_option
@with_vault
def ack(vault: Vault, package_ref: str, output: Path, as_name: str | None, as_json: bool) -> None:
    """Sign an acknowledgement of a package opened in this vault, for its sender.

    \b
    Example:
      evault ack PKG-0123456789AB -o PKG-0123456789AB.ack.json
    """
    from vault.service.opening import acknowledge

    data = acknowledge(vault, package_ref, output=output, as_name=as_name)
    emit_record(data, as_json)
    if not as_json:
        say(f"wrote acknowledgement {data['ack']} and {data['signature']}")


@receipt.command("import")
@click.argument("ack_file", metavar="ACK", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@with_vault
def receipt_import(vault: Vault, ack_file: Path, as_json: bool) -> None:
    """Import a recipient's acknowledgement (ACK and ACK.sig) of a package sent from here.

    An acknowledgement of version 2 also carries the body's cosignature of the checkpoint the
    package carried; it is verified and kept, and `custody verify` checks the log against it.
    Refused (exit 3): a signer the package was not encrypted to, a receipt time before the
    send (5 minutes of clock skew allowed), a checkpoint the signer did not sign, other items.

    \b
    Example:
      evault receipt import PKG-0123456789AB.ack.json
    """
    from vault.service.packaging.receipts import import_ack

    data = import_ack(vault, ack_file)
    emit_record(data, as_json)
    if as_json:
        return
    if data["already_acknowledged"]:
        say(f"package {data['package']} already acknowledged by {data['by']} of "
            f"{data['body']}; this acknowledgement was imported before, nothing changed")
    else:
        witnessed = (f"; {data['body']} witnessed this vault's log at size "
                     f"{data['witnessed_size']}" if data["witnessed_size"] is not None else "")
        say(f"package {data['package']} acknowledged by {data['by']} of {data['body']}"
            f"{witnessed}")


# ----------------------------------------------------------------------------- bulk and reports


def _stage(line: ProgressLine | None, n: int, of: int, what: str) -> Progress | None:
    """Bytes of stage ``n`` of ``of`` drawn on ``line`` as "n/of what, X MB of Y MB"."""
    if line is None:
        return None
    return lambda done, total: line.update(n, of, nbytes=(done, total), what=what)


def _per_file(line: ProgressLine | None, files: int) -> Callable[[int], Progress | None] | None:
    """For file i of ``files``: its bytes drawn on ``line`` as "i+1/files, X MB of Y MB"."""
    if line is None:
        return None
    return lambda i: (lambda done, total: line.update(i + 1, files, nbytes=(done, total)))


def _progress_printer(line: ProgressLine | None) -> ExportProgress | None:
    """Export's progress (body, bodies done and in all, bytes) drawn on ``line``, if any."""
    if line is None:
        return None

    def show(body: str, done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        line.update(done, total, nbytes=(done_bytes, total_bytes), what=body)

    return show


@cli.command("export")
@click.option(
    "--to",
    "bodies",
    metavar="BODY,BODY,...",
    help="Bodies to export to (with --plan: a subset of the plan's bodies).",
)
@click.option("--case", "case_id", metavar="CASE", help="Share this case with every body.")
@click.option(
    "--plan",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML plan selecting items, reference and purpose per body.",
)
@click.option(
    "--outbox",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Drop folder for the packages.",
)
@click.option("--dry-run", is_flag=True, help="Print what would go to whom; change nothing.")
@click.option("--reshare", is_flag=True, help="Make new packages even for items already sent.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON result per body.")
@as_option
@with_vault
def export_cmd(
    vault: Vault,
    bodies: str | None,
    case_id: str | None,
    plan: Path | None,
    outbox: Path,
    dry_run: bool,
    reshare: bool,
    as_jsonl: bool,
    as_name: str | None,
) -> None:
    """Export to several bodies: one package each, only what each may receive. Idempotent.

    A re-run after success makes nothing new ("already shared"); a re-run after an
    interruption finishes what is missing, never a duplicate package or receipt. Exit 1 if
    any body failed (the others' results are kept).

    \b
    Examples:
      evault export --to ICC-OTP,UA-OPG,EUROJUST-JIT --case UA-2026-0042 --outbox /mnt/out
      evault export --plan plan.toml --outbox /mnt/out --dry-run
      evault export --to UA-OPG --case UA-2026-0042 --outbox /mnt/out --jsonl
    """
    from vault.render import to_jsonl
    from vault.service.export import export, load_plan, plans_for_case

    names = [b.strip() for b in (bodies or "").split(",") if b.strip()]
    if bool(case_id) == bool(plan):
        raise click.UsageError("give --case CASE or --plan PLAN.toml")
    if plan is not None:
        plans = load_plan(plan, names)
    else:
        if not names:
            raise click.UsageError("--case needs --to BODY,BODY,...")
        assert case_id is not None
        plans = plans_for_case(names, case_id)
    with progress_line("export") as line:
        results = export(
            vault,
            plans,
            outbox=outbox,
            dry_run=dry_run,
            reshare=reshare,
            as_name=as_name,
            progress=_progress_printer(line),
        )
    rows = [r.to_dict() for r in results]
    if as_jsonl:
        click.echo(to_jsonl(rows), nl=False)
    else:
        click.echo(_export_table(rows, dry_run), nl=False)
    would_fail = [r.body for r in results if r.would_fail]
    if would_fail:
        say(f"dry run: export would fail for {', '.join(would_fail)}; see the error column")
        raise SystemExit(1)
    failed = [r.body for r in results if r.failed]
    if failed:
        others = "the other bodies succeeded" if len(failed) < len(results) else "none succeeded"
        say(f"export failed for {', '.join(failed)}; {others}")
        # Exit 3 when nothing succeeded and every failure was a failed verification (e.g. a
        # body key that differs from the signed key history), else 1.
        verification = len(failed) == len(results) and all(
            r.exit_code == 3 for r in results if r.failed)
        raise SystemExit(3 if verification else 1)


def _export_table(rows: list[dict[str, Any]], dry_run: bool) -> str:
    """The export table, then one line per body that release rules kept items from.

    Its bytes column is named for what it counts: the plaintext of the items a dry run
    would send, or the size of the package file a run sent."""
    from vault.render import render_table

    size = "plaintext_bytes" if dry_run else "package_bytes"
    table = [{**r, size: r["bytes"], "withheld": len(r["withheld"])} for r in rows]
    text = render_table(table, ("body", "status", "package", "items", "withheld", size,
                                "receipt", "error"))
    kept = [f"withheld from {r['body']} by release rules: {', '.join(r['withheld'])}"
            for r in rows if r["withheld"]]
    return text + "".join(f"\n{line}" for line in kept) + ("\n" if kept else "")


@cli.group()
def report() -> None:
    """Reports for oversight: sharing per body, and one item's chain of custody.

    \b
    Examples:
      evault report sharing --since 2026-01-01T00:00:00Z --format md
      evault report custody EV-0123456789AB --format html -o custody.html
    """


@report.command("sharing")
@click.option("--since", metavar="ISO8601", help="Packages built from this time (UTC).")
@click.option("--until", metavar="ISO8601", help="Packages built before this time (UTC).")
@click.option("--body", metavar="BODY", help="Only this body.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "json"]),
    default="table",
    show_default=True,
)
@with_vault
def report_sharing(
    vault: Vault, since: str | None, until: str | None, body: str | None, fmt: str
) -> None:
    """Per body: packages, items, bytes, references, sent, acknowledged, time to ack; totals.

    No titles, descriptions or file names: it can go to an oversight committee as it is.

    \b
    Examples:
      evault report sharing --format md
      evault report sharing --body ICC-OTP --since 2026-11-01T00:00:00Z --format csv
    """
    from vault.render.reports import render_sharing
    from vault.service.intake import parse_collected_at
    from vault.service.reports import sharing_report

    data = sharing_report(
        vault,
        since=parse_collected_at(since, "--since") if since else None,
        until=parse_collected_at(until, "--until") if until else None,
        body=body,
    )
    click.echo(render_sharing(data, fmt), nl=False)


@report.command("custody")
@click.argument("item_id", metavar="ITEM")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@paper_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: stdout).",
)
@click.option("--as", "as_name", metavar="NAME",
              help="Identity named as printing the form (default: default).")
@with_vault
def report_custody(
    vault: Vault, item_id: str, fmt: str, paper: str | None, output: Path | None,
    as_name: str | None,
) -> None:
    """A printable chain-of-custody form for one item, for a court file.

    The item's case, title, source, collection time and place and digests; every event
    with time, actor name and fingerprint and proof status; the sender's chain for a
    received item; the latest checkpoint; who printed it (--as, else the default
    identity) and when; a signature line.

    \b
    Example:
      evault report custody EV-0123456789AB --format html --paper letter -o custody.html
    """
    from vault.render.reports import render_custody
    from vault.service.reports import custody_report

    data = custody_report(vault, item_id, as_name=as_name)
    write_or_print(render_custody(data, fmt, paper=_paper(fmt, paper)), output)
