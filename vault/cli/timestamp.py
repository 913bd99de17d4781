"""``evault timestamp``: RFC 3161 timestamps for checkpoints signed without them.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`;
:mod:`vault.service` only inside the command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import as_option, emit_rows, list_output_options, say, with_vault
from vault.errors import OptionsError

if TYPE_CHECKING:
    from vault.service.vaults import Vault

COLUMNS = ("checkpoint", "tsas", "attested_at")


@top_command("timestamp")
@click.option("--pending", is_flag=True,
              help="Timestamp every checkpoint kept pending (signed with --no-timestamp, or "
              "while no TSA answered).")
@as_option
@list_output_options
@with_vault
def timestamp(vault: Vault, pending: bool, as_name: str | None, fmt: str | None) -> None:
    """Each pending checkpoint gets a token from every TSA in config.toml that answers,
    logged as a `checkpoint.timestamped` custody event; the tokens prove when the
    checkpoint's signature existed, not when the documents that carried it were made.

    \b
    Example:
      evault timestamp --pending
    """
    from vault.service.timestamping import stamp_pending

    if not pending:
        raise OptionsError("say what to timestamp: --pending")
    done = stamp_pending(vault, as_name)
    if not done:
        say("no checkpoint is pending a timestamp")
        return
    emit_rows([{"checkpoint": d.checkpoint, "tsas": ", ".join(d.tsas),
                "attested_at": ", ".join(d.attested_at)} if fmt is None else d.to_json()
               for d in done], fmt, COLUMNS)
