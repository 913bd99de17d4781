"""``evault verify``: check any evault file with the keys at hand, with or without a vault.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import (
    emit_rows,
    json_option,
    passphrase_prompt,
    say,
    vault_option,
)
from vault.errors import Reported
from vault.progress import ProgressLine, progress_line

if TYPE_CHECKING:
    from vault.service.progress import Progress


@top_command("verify")
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
@click.option(
    "--tsa-ca", "tsa_ca", multiple=True, metavar="FILE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA certificate (PEM) of a time-stamp authority whose RFC 3161 tokens you trust "
    "(repeatable; a vault's configured TSAs are trusted too).",
)
@json_option
@vault_option
def verify_cmd(
    files: tuple[Path, ...],
    as_name: str | None,
    trusted_keys: Path | None,
    tsa_ca: tuple[Path, ...],
    as_json: bool,
    vault_dir: Path | None,
) -> None:
    """Each file is recognised by its content and checked as far as the keys at hand allow;
    a receipt or acknowledgement needs its FILE.sig beside it. Signers are trusted from
    --trusted-keys and, when a vault exists (--vault, or the default one), from its known
    senders. Prints `OK: FILE (what)` or `FAIL: FILE: reason` per file; exit 3 if any fails.
    RFC 3161 timestamps a file carries are checked against --tsa-ca and the vault's TSAs,
    and the attested times printed; for a revoked signer, they decide.

    \b
    Examples:
      evault verify PKG-0123456789AB.evpkg receipt.json --trusted-keys allowed_signers
      evault verify PKG-0123456789AB.evpkg --as icc-officer
      evault verify *.evpkg *.json checkpoint.txt --json
    """
    from vault.service import audit

    with progress_line("verify") as line:
        findings = audit.verify_at_hand(
            files, vault_dir=vault_dir, trusted_keys=trusted_keys, tsa_ca=tsa_ca,
            as_name=as_name,
            prompt=passphrase_prompt(), progress=_per_file(line, len(files)),
        )
    if as_json:
        emit_rows([f.to_json() for f in findings], "json", ())
    else:
        for finding in findings:
            click.echo(finding.line())
    failed = sum(not f.ok for f in findings)
    if failed:
        if not as_json:
            say(f"{failed} of {len(findings)} file(s) did not verify")
        raise Reported(verification=True)


def _per_file(line: ProgressLine | None, files: int) -> Callable[[int], Progress | None] | None:
    """For file i of ``files``: its bytes drawn on ``line`` as "i+1/files, X MB of Y MB"."""
    if line is None:
        return None
    return lambda i: (lambda done, total: line.update(i + 1, files, nbytes=(done, total)))
