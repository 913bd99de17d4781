"""What the commands share: option bundles, opening the vault, and the emitters that print.

    @identity.command("list")
    @list_output_options
    @with_vault
    def identity_list(vault: Vault, fmt: str | None) -> None:
        emit_rows([i.to_json() for i in list_identities(vault)], fmt, IDENTITY_COLUMNS)

Data goes to stdout (:func:`emit_record`, :func:`emit_rows`, :func:`write_or_print`),
messages to stderr prefixed ``evault:`` (:func:`say`).

May import: click, :mod:`vault.errors`, :mod:`vault.render`, :mod:`vault.progress`, and
(inside functions) :mod:`vault.service` and :mod:`vault.store`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vault.errors import OptionsError

if TYPE_CHECKING:
    from vault.keystore import PassphrasePrompt
    from vault.service.vaults import Vault

F = TypeVar("F", bound=Callable[..., Any])


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


def passphrase_prompt() -> PassphrasePrompt | None:
    """How a command asks for the key file's passphrase: only when stdin is a terminal."""
    return _prompt if sys.stdin.isatty() else None


def open_vault(vault_dir: Path | None) -> Vault:
    """Open the vault for a command; a passphrase prompt only when stdin is a terminal."""
    from vault.service.vaults import open_vault as _open

    return _open(vault_dir, prompt=passphrase_prompt())


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


def timestamp_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-timestamp`` on a command that signs a checkpoint: do not ask the configured
    TSAs; the checkpoint is kept pending for ``evault timestamp --pending``. Put it below
    :func:`with_vault` (nearer the function), which hands it the vault."""

    @functools.wraps(f)
    def wrapper(*args: Any, no_timestamp: bool, vault: Vault, **kwargs: Any) -> Any:
        vault.skip_timestamps = no_timestamp
        return f(*args, vault=vault, **kwargs)

    return click.option(
        "--no-timestamp", is_flag=True,
        help="Do not ask the configured TSAs now; `evault timestamp --pending` does later.",
    )(wrapper)


def outbox_options(*, required_help: str) -> Callable[[F], F]:
    """``--outbox DIR|sftp://...`` with ``--host-key``, ``--known-hosts`` and
    ``--identity-file``, handed to the command as one ``outbox``
    (:class:`~vault.service.outbox.OutboxChoice`; its ``outbox`` None when not given: the
    body's own). ``required_help`` is the ``--outbox`` help of the command."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, outbox: str | None, host_key: str | None,
                    known_hosts: Path | None, identity_file: Path | None, **kwargs: Any) -> Any:
            from vault.service.outbox import OutboxChoice

            choice = OutboxChoice(outbox, host_key, known_hosts, identity_file)
            return f(*args, outbox=choice, **kwargs)

        options = [
            click.option("--outbox", metavar="DIR|sftp://USER@HOST[:PORT]/PATH",
                         help=required_help),
            click.option("--host-key", metavar="SHA256:...",
                         help="The SFTP server's host-key fingerprint, confirmed with the body "
                              "(else ~/.ssh/known_hosts must know the host)."),
            click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
                         help="known_hosts file to trust instead of ~/.ssh/known_hosts."),
            click.option("--identity-file", type=click.Path(dir_okay=False, path_type=Path),
                         help="SSH private key to log in with (else the keys of ssh-agent)."),
        ]
        out: Any = wrapper
        for option in reversed(options):
            out = option(out)
        return out  # type: ignore[no-any-return]

    return decorate


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


def emit_columns(table: Mapping[str, Sequence[Any]], fmt: str | None,
                 columns: Sequence[str]) -> None:
    """Rows given column by column (``table``: each of ``columns`` -> its values) to stdout,
    as :func:`emit_rows` prints them as a table or CSV."""
    from vault.render import columns_to_csv, render_columns

    if fmt == "csv":
        click.echo(columns_to_csv(table, columns), nl=False)
    elif fmt is None:
        click.echo(render_columns(table, columns), nl=False)
    else:
        raise ValueError(f"emit_columns: no {fmt} form; see emit_rows")


def write_or_print(text: str, output: Path | None, *, what: str = "") -> None:
    """Text to a new file (atomically, never replacing one) or to stdout."""
    if output is None:
        click.echo(text, nl=False)
        return
    from vault.durable import atomic_writer

    if output.exists():
        raise OptionsError(f"{output} exists; choose another file")
    with atomic_writer(output, mode=0o644, overwrite=False) as handle:
        handle.write(text.encode("utf-8"))
    say(f"wrote {what} to {output}" if what else f"wrote {output}")


def paper_option(f: Callable[..., None]) -> Callable[..., None]:
    """``--paper a4|letter`` for the printed (HTML) forms."""
    return click.option(
        "--paper",
        type=click.Choice(["a4", "letter"]),
        help="Paper the HTML page prints on (default: a4).",
    )(f)


def paper_for(fmt: str, paper: str | None) -> str:
    """The paper to print on; the default is the forms module's, named in one place."""
    from vault.render.forms import DEFAULT_PAPER

    if paper is not None and fmt != "html":
        raise OptionsError("--paper goes with --format html")
    return paper or DEFAULT_PAPER
