"""``evault open`` and ``evault ack``: receive a package into this vault and acknowledge it.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    say,
    timestamp_option,
    with_vault,
)
from vault.progress import ProgressLine, progress_line

if TYPE_CHECKING:
    from vault.service.progress import Progress
    from vault.service.vaults import Vault


@top_command("open")
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
@click.option(
    "--tsa-ca", "tsa_ca", multiple=True, metavar="FILE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA certificate (PEM) of a time-stamp authority whose RFC 3161 tokens you trust "
    "(repeatable; the vault's configured TSAs are trusted too).",
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
    tsa_ca: tuple[Path, ...],
    as_name: str | None,
    as_json: bool,
) -> None:
    """Checks, before a single file is kept: the envelope signature by a known sender, the
    payload digest, decryption, the signed statement (this package, this body, this key),
    every digest of the bag (and each MD5/SHA-1 the sender lists, recomputed), and the
    sender's custody excerpt with its proofs. Any failure exits 3 and leaves nothing behind.
    A sender key revoked here is refused even with --trust-sender, unless --allow-revoked.
    RFC 3161 timestamps in the envelope are checked against the vault's TSAs and --tsa-ca
    (a token that fails exits 3) and their times recorded in package.opened.

    \b
    Examples:
      evault open PKG-0123456789AB.evpkg --out ./received
      evault open PKG-0123456789AB.evpkg --out ./received --trust-sender SHA256:...
    """
    # The key file's scrypt (~0.4 s) starts on a helper thread, to run while the code of
    # open is imported and the envelope checked, instead of after them.
    vault.keystore.prepare(ask=False)
    from vault.service.opening import open_package

    with progress_line("open") as line:
        opened = open_package(
            vault, package_file, out_dir=out_dir, as_name=as_name, trust_sender=trust_sender,
            allow_revoked=allow_revoked, verifying=_stage(line, 1, 2, "verifying"),
            storing=_stage(line, 2, 2, "storing"), tsa_ca=tsa_ca,
        )
    if as_json:
        emit_record(opened.to_json(), True)
        return
    emit_rows([i.to_json() for i in opened.items], None,
              ("id", "source_item", "name", "size", "sha256"))
    if opened.sender_revoked_at:
        say(f"warning: the sender's key was revoked at {opened.sender_revoked_at}; opened "
            "because of --allow-revoked, and logged so in package.opened")
    if opened.approved_by:
        say(f"package {opened.package}: release approved by {', '.join(opened.approved_by)} "
            "(signed approvals, checked against the policy the package declares)")
    for stamp in opened.timestamps or ():
        say(f"package {opened.package}: checkpoint timestamped at {stamp.attested_at} by "
            f"{stamp.tsa} (RFC 3161, checked)")
    if opened.timestamps_unchecked:
        say(f"warning: package {opened.package}: {opened.timestamps_unchecked} timestamp(s) "
            "not checked: no TSA certificate to trust; pass --tsa-ca FILE")
    say(
        f"opened package {opened.package} from {opened.sender} "
        f"({opened.sender_fingerprint}) for {opened.body}: {len(opened.items)} item(s) "
        f"verified and received, {opened.sender_custody_events} custody event(s) proven; "
        f"files in {opened.out}"
    )


@top_command("ack")
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
@timestamp_option
def ack(vault: Vault, package_ref: str, output: Path, as_name: str | None, as_json: bool) -> None:
    """\b
    Example:
      evault ack PKG-0123456789AB -o PKG-0123456789AB.ack.json
    """
    from vault.service.opening import acknowledge

    written = acknowledge(vault, package_ref, output=output, as_name=as_name)
    emit_record(written.to_json(), as_json)
    if not as_json:
        say(f"wrote acknowledgement {written.ack} and {written.signature}")


def _stage(line: ProgressLine | None, n: int, of: int, what: str) -> Progress | None:
    """Bytes of stage ``n`` of ``of`` drawn on ``line`` as "n/of what, X MB of Y MB"."""
    if line is None:
        return None
    return lambda done, total: line.update(n, of, nbytes=(done, total), what=what)
