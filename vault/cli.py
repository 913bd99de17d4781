"""The ``evault`` command line: the root command and what every command shares.

    $ evault init --vault ./office-vault
    $ evault identity create registry-office --vault ./office-vault

This module and :mod:`vault.commands` (the commands themselves, imported when one is looked
up) are the only ones that print, prompt or exit. Data goes to stdout, messages to stderr
prefixed ``evault:``. Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed. Heavy
modules (SQLAlchemy, alembic, keyring, cryptography) are imported inside the commands, so
``evault --help`` starts fast; ``evault --version`` is answered by :mod:`vault.entry`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vault import __version__
from vault.errors import VaultError

if TYPE_CHECKING:
    from vault.service.vaults import Vault

F = TypeVar("F", bound=Callable[..., Any])


#: The commands and the first paragraph of their help, for ``evault --help``: the commands
#: themselves are defined in :mod:`vault.commands`, imported only when one is looked up
#: (a test keeps this table equal to their help texts).
COMMANDS = {
    "ack": "Sign an acknowledgement of a package opened in this vault, for its sender.",
    "body": "Recipient bodies, such as ICC-OTP, and the keys of their officers.",
    "case": "Case files that group items.",
    "contact": "Known senders from other organisations, pinned by fingerprint.",
    "custody": "The signed, append-only custody log and its checkpoints and proofs.",
    "db": "Database schema of an existing vault.",
    "doctor": "Check the vault: configuration, database, key store, blobs, key history.",
    "export": "Export to several bodies: one package each, only what each may receive. "
    "Idempotent.",
    "identity": "Identities of this vault: signing and decryption keys of a person or office.",
    "ingest": "Ingest evidence files: hash, encrypt at rest, record custody. Each file is read "
    "once.",
    "init": "Create a vault, or upgrade an existing one (idempotent).",
    "items": "Items of the vault.",
    "open": "Verify a package whole, then extract it and receive its items into this vault.",
    "package": "Packages for one body: built, signed, encrypted to the body's keys, sent.",
    "receipt": "Signed sharing receipts of sent packages.",
    "rule": "Release rules: which bodies may receive items with a label. Each change is signed.",
    "report": "Reports for oversight: sharing per body, and one item's chain of custody.",
    "send": "Deliver a package (file or id) into a drop folder atomically and sign a receipt.",
    "verify": "Verify packages, receipts, acknowledgements, contact cards and checkpoints.",
}


INTERRUPTED = {
    "export": "; run the same command again to finish the job (packages already sent are "
    "not sent again)",
}
"""What to do after Ctrl-C, for commands where a re-run finishes the work."""


class VaultGroup(click.Group):
    """The root command: maps every expected error to one line on stderr and its exit code,
    in one place, and defines the commands only when one is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            import vault.commands  # noqa: F401  (registers every command on this group)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's list of commands, made from :data:`COMMANDS` (nothing else imported)."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, click.Command(name, help=text).get_short_help_str(limit))
                for name, text in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        _say_notices()
        try:
            return super().invoke(ctx)
        except VaultError as e:
            if _debug(ctx):
                _print_traceback()
            click.echo(f"evault: {_safe(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            after = INTERRUPTED.get(ctx.invoked_subcommand or "", "")
            click.echo(f"evault: interrupted; nothing half-written was kept{after}", err=True)
            ctx.exit(130)
        except OSError as e:
            if _debug(ctx):
                _print_traceback()
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"evault: {_safe(f'{where}{e.strerror or e}')}", err=True)
            ctx.exit(1)


class _Notices(logging.Handler):
    """What the layers below log for people (e.g. an older vault's metadata being sealed)."""

    def emit(self, record: logging.LogRecord) -> None:
        say(record.getMessage())


def _say_notices() -> None:
    logger = logging.getLogger("evault")
    if not any(isinstance(h, _Notices) for h in logger.handlers):
        logger.addHandler(_Notices(logging.INFO))
        logger.propagate = False


def _print_traceback() -> None:
    import traceback  # only with --debug; it costs start-up time otherwise

    traceback.print_exc()


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("EVAULT_DEBUG") == "1"


def _prompt(creating: bool) -> str:
    return str(
        click.prompt(
            "Passphrase for the vault's key file"
            if not creating
            else "New passphrase for the key file",
            hide_input=True,
            confirmation_prompt=creating,
            err=True,
        )
    )


def vault_option(f: F) -> F:
    """``--vault DIR`` on every command (default: EVAULT_HOME or the user data directory)."""
    return click.option(
        "--vault",
        "vault_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Vault directory (default: $EVAULT_HOME or the user data directory).",
    )(f)


def as_option(f: F) -> F:
    """``--as NAME``: the identity that acts and signs (default: the vault's default)."""
    return click.option(
        "--as", "as_name", metavar="NAME", help="Identity that acts and signs (default: default)."
    )(f)


def json_option(f: F) -> F:
    """``--json`` for commands that output one object."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def list_output_options(f: F) -> F:
    """``--json``, ``--jsonl`` and ``--csv`` for commands that output rows."""
    f = click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header row.")(f)
    f = click.option("--jsonl", "fmt", flag_value="jsonl", help="Print one JSON object a line.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="Print a JSON array.")(f)
    return f


def open_vault(vault_dir: Path | None) -> Vault:
    """Open the vault for a command; a passphrase prompt only when stdin is a terminal."""
    from vault.service.vaults import open_vault as _open

    return _open(vault_dir, prompt=_prompt if sys.stdin.isatty() else None)


def with_vault(f: Callable[..., Any]) -> Callable[..., Any]:
    """Open the vault named by ``--vault`` and pass it as ``vault``; close it afterwards."""

    @functools.wraps(f)
    def wrapper(*args: Any, vault_dir: Path | None, **kwargs: Any) -> Any:
        v = open_vault(vault_dir)
        try:
            return f(*args, vault=v, **kwargs)
        finally:
            v.close()

    return vault_option(wrapper)


def read_card(path: Path) -> bytes:
    """A contact card's bytes; a fifo or device (which could block forever) is refused."""
    from vault.errors import VerificationError

    if not path.is_file():
        raise VerificationError(f"{path}: is not a regular file")
    return path.read_bytes()


def _safe(message: str) -> str:
    """A message with the control characters of any name or title in it shown as escapes."""
    from vault.render import terminal_safe

    return terminal_safe(message)


def say(message: str) -> None:
    """A message for people, on stderr (on its own line, after any progress line); names and
    titles in it cannot drive the terminal (see :func:`vault.render.terminal_safe`)."""
    from vault.progress import interrupt

    interrupt()
    click.echo(f"evault: {_safe(message)}", err=True)


def emit_record(data: dict[str, Any], as_json: bool, skip: Sequence[str] = ()) -> None:
    """One object to stdout, as JSON or ``key: value`` lines."""
    from vault.render import render_record, to_json

    click.echo(to_json(data) if as_json else render_record(data, skip), nl=False)


def emit_rows(rows: Sequence[dict[str, Any]], fmt: str | None, columns: Sequence[str]) -> None:
    """Rows to stdout in the chosen shape (table by default)."""
    from vault.render import render_table, to_csv, to_json, to_jsonl

    if fmt == "json":
        click.echo(to_json(list(rows)), nl=False)
    elif fmt == "jsonl":
        click.echo(to_jsonl(rows), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(rows, columns), nl=False)
    else:
        click.echo(render_table(rows, columns), nl=False)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=VaultGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="evault", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(debug: bool) -> None:
    """Evidence Vault: keep evidence under a verifiable chain of custody and share it
    confidentially with the bodies that investigate and prosecute.

    \b
    Examples:
      evault init --vault ./office-vault
      evault identity create registry-office --org "Fictional Ministry of Justice"
      evault body add ICC-OTP --name "International Criminal Court, Office of the Prosecutor"
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...

    Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.
    """


def write_or_print(text: str, output: Path | None, *, what: str = "") -> None:
    """Text to a new file (atomically, never replacing one) or to stdout."""
    if output is None:
        click.echo(text, nl=False)
        return
    from vault.durable import atomic_writer

    if output.exists():
        raise click.UsageError(f"{output} exists; choose another file")
    with atomic_writer(output, mode=0o644, overwrite=False) as handle:
        handle.write(text.encode("utf-8"))
    say(f"wrote {what} to {output}" if what else f"wrote {output}")


def main() -> None:
    """Console entry point."""
    cli(prog_name="evault")
