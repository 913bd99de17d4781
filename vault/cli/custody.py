"""``evault custody``: the custody log, its checkpoints and proofs.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_group
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    passphrase_prompt,
    say,
    timestamp_option,
    vault_option,
    with_vault,
    write_or_print,
)
from vault.errors import OptionsError, Reported
from vault.progress import progress_line

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_group("custody")
def custody() -> None:
    """\b
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
    """Show the custody events of an item (or case, package, body, identity:NAME); for a
    derived copy or an item copied, the items it was derived from and its derivatives.

    \b
    Example:
      evault custody show EV-0123456789AB
    """
    from vault.service.custody import show_subject

    events = show_subject(vault, subject)
    links = None
    if subject.startswith("EV-"):
        from vault.service.items import lineage

        found = lineage(vault, subject)
        links = None if found.empty else found
    if as_json:
        record = {"subject": subject, "events": [e.to_json() for e in events]}
        if links is not None:  # the derivation chain, both ways, for a derived or copied item
            record.update({k: v for k, v in links.to_json().items() if k != "note"})
        emit_record(record, True)
        return
    rows = [{**e.to_json(), "details": e.details or None, "digests": e.digests or None}
            for e in events]
    emit_rows(rows, None, ("seq", "time", "action", "actor", "details", "digests"))
    if links is not None:
        for what, chain in (("derived from", links.derived_from),
                            ("derivatives", links.derivatives)):
            if chain:
                click.echo(f"{what}: " + ", ".join(
                    f"{link.id} ({link.relation}"
                    + (f" of {link.of}" if link.of and link.of != subject else "")
                    + (", not held here" if link.sender else "") + ")"
                    for link in chain))


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
        raise Reported(verification=True)


@custody.command("checkpoint")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed note to this file (default: stdout).",
)
@as_option
@with_vault
@timestamp_option
def custody_checkpoint(vault: Vault, output: Path | None, as_name: str | None) -> None:
    """Sign a checkpoint (C2SP signed note: origin, size, root) of the log as it is now.

    With TSAs in config.toml, each timestamps it (RFC 3161); with -o, token N is written
    beside the note as FILE.N.tsr, for `openssl ts -verify -data FILE -in FILE.N.tsr`.

    \b
    Example:
      evault custody checkpoint -o checkpoint-2026-11-28.txt
    """
    from vault.service.custody import make_checkpoint

    if output is not None and output.exists():
        raise OptionsError(f"{output} exists; choose another file")
    if output is not None and any(output.parent.glob(f"{glob_escape(output.name)}.*.tsr")):
        # verify reads every FILE.N.tsr beside FILE: a stale one would be taken for its own.
        raise OptionsError(f"{output}.N.tsr files exist from an earlier checkpoint; choose "
                           "another file")
    if output is not None:
        from vault.durable import require_folder

        require_folder(output)
    signed = make_checkpoint(vault, as_name)
    write_or_print(signed.note, output)
    if output is not None:
        from vault.durable import atomic_write_bytes

        for i, token in enumerate(signed.timestamps, 1):
            atomic_write_bytes(output.with_name(f"{output.name}.{i}.tsr"), token,
                               mode=0o644)
    if signed.timestamps:
        say(f"checkpoint {signed.size}: timestamped by {len(signed.timestamps)} TSA(s)"
            + ("" if output else "; pass -o FILE to keep the tokens"))


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

    done = reanchor(vault, as_name)
    if as_json:
        emit_record(done.to_json(), True)
    else:
        say(
            f"custody log: reanchored at {done.accepted_size} events (the last checkpoint "
            f"this vault signed had {done.previous_size}); logged as event {done.event} "
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

    proved = prove_subject(vault, subject)
    if as_json:
        emit_record(proved.to_json(), True)
        return
    click.echo(f"checkpoint: size {proved.tree_size}, root {proved.root_hash}")
    for event in proved.events:
        click.echo(
            f"event {event.seq} ({event.action}): {event.status}"
            + (f", {len(event.proof)} hashes" if event.proof is not None else "")
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
        raise OptionsError("--trusted-keys goes with --proof")
    if proof_file is not None and output is not None:
        raise OptionsError("-o writes a proof from this vault's log; not with --proof")
    if output is not None and output.exists():
        raise OptionsError(f"{output} exists; choose another file")
    if output is not None and any(output.parent.glob(f"{glob_escape(output.name)}.*.tsr")):
        # verify reads every FILE.N.tsr beside FILE: a stale one would be taken for its own.
        raise OptionsError(f"{output}.N.tsr files exist from an earlier checkpoint; choose "
                           "another file")
    found = audit.check_consistency(old, new, proof=proof_file, trusted_keys=trusted_keys,
                                    vault_dir=vault_dir, prompt=passphrase_prompt())
    if as_json:
        emit_record(found.to_json(), True)
    else:
        click.echo(
            f"OK: the log grew from {found.old_size} to {found.new_size} events "
            f"without rewriting ({len(found.proof)} proof hashes)"
        )
    if output is not None:
        write_or_print(audit.proof_document(found), output)
