"""The ``evault`` command line: the root command, which loads a command only when it is used.

    $ evault init --vault ./office-vault
    $ evault identity create registry-office --vault ./office-vault

:data:`COMMANDS` maps each command to the module that defines it (``vault.cli.<module>``,
one module per command group, over the shared options and emitters of
:mod:`vault.cli.common`) and to the first paragraph of its help, written only here: the
command's own help opens with it (:func:`top_command`), and ``evault --help`` lists the
commands from it without importing any of them. :class:`RootGroup` imports a command's
module when the command is looked up, and maps every expected error
(:class:`vault.errors.VaultError`) to one line on stderr and its exit code, in one place;
only :class:`~vault.errors.OptionsError` is shown by the command itself (:class:`Command`),
under its usage line as click shows its own usage errors. Commands never exit themselves.

The command line is the only code that prints, prompts or exits. Data goes to stdout,
messages to stderr prefixed ``evault:``. Exit codes: 0 ok, 1 error, 2 usage, 3 verification
failed. Heavy modules (SQLAlchemy, alembic, keyring, cryptography) are imported inside the
commands, so ``evault --help`` starts fast; ``evault --version`` is answered before this
module is imported (:func:`vault.__main__.main`).

May import: click, :mod:`vault.errors`; :mod:`vault.cli.common` and :mod:`vault.render`
only to print a message, and the command modules only when their command is looked up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import click

from vault import __version__
from vault.errors import OptionsError, Reported, UsageError, VaultError


class Entry(NamedTuple):
    """Where a command is defined (``module:attribute``) and the first paragraph of its help."""

    where: str
    summary: str


#: Every command of the root: where it is defined, and its summary for ``evault --help``.
COMMANDS = {
    "ack": Entry("vault.cli.receiving:ack",
                 "Sign an acknowledgement of a package opened in this vault, for its sender."),
    "approval": Entry("vault.cli.approval:approval", "Release approvals: who must agree before "
                      "items go to a body, their signed requests and answers."),
    "body": Entry("vault.cli.body:body",
                  "Recipient bodies, such as ICC-OTP, and the keys of their officers."),
    "case": Entry("vault.cli.case:case", "Case files that group items."),
    "contact": Entry("vault.cli.contact:contact",
                     "Known senders from other organisations, pinned by fingerprint."),
    "custody": Entry("vault.cli.custody:custody",
                     "The signed, append-only custody log and its checkpoints and proofs."),
    "db": Entry("vault.cli.init:db", "Database schema of an existing vault."),
    "doctor": Entry("vault.cli.doctor:doctor", "Check the vault: configuration, database, "
                    "key store, blobs, key history."),
    "export-case-uco": Entry("vault.cli.case_uco:export_case_uco", "Write an item or a "
                             "case and its custody events as CASE/UCO JSON-LD."),
    "export": Entry("vault.cli.export:export_cmd", "Export to several bodies: one package "
                    "each, only what each may receive. Idempotent."),
    "identity": Entry("vault.cli.identity:identity", "Identities of this vault: signing and "
                      "decryption keys of a person or office."),
    "ingest": Entry("vault.cli.ingest:ingest", "Ingest evidence files: hash, encrypt at rest, "
                    "record custody. Each file is read once."),
    "init": Entry("vault.cli.init:init",
                  "Create a vault, or upgrade an existing one (idempotent)."),
    "items": Entry("vault.cli.items:items", "Items of the vault."),
    "open": Entry("vault.cli.receiving:open_cmd", "Verify a package whole, then extract it "
                  "and receive its items into this vault."),
    "package": Entry("vault.cli.package:package", "Packages for one body: built, signed, "
                     "encrypted to the body's keys, sent."),
    "receipt": Entry("vault.cli.receipt:receipt", "Signed sharing receipts of sent packages."),
    "rule": Entry("vault.cli.rule:rule", "Release rules: which bodies may receive items with "
                  "a label. Each change is signed."),
    "report": Entry("vault.cli.report:report", "Reports for oversight: sharing per body, and "
                    "one item's chain of custody."),
    "send": Entry("vault.cli.package:send", "Deliver a package (file or id) into a drop folder "
                  "atomically and sign a receipt."),
    "timestamp": Entry("vault.cli.timestamp:timestamp", "Trusted time: obtain the RFC 3161 "
                       "timestamps of checkpoints signed while no TSA answered."),
    "verify": Entry("vault.cli.verify:verify_cmd", "Verify packages, receipts, "
                    "acknowledgements, contact cards and checkpoints."),
}


INTERRUPTED = {
    "export": "; run the same command again to finish the job (packages already sent are "
    "not sent again)",
}
"""What to do after Ctrl-C, for commands where a re-run finishes the work."""


class RecordedPath(click.Path):
    """A path evault records (in the database, in a signed custody event), not only opens:
    it must be UTF-8 text, as every text option is (:func:`refuse_undecodable`)."""


def refuse_undecodable(ctx: click.Context) -> None:
    """Refuse a text option or argument of ``ctx``'s command that is not valid UTF-8 (a
    usage error, exit 2), before the command runs. Python hands over the bytes of such an
    argument as lone surrogates (``'\\udcff'`` for byte 0xff), which no database, signed
    JSON or terminal takes: the command traced back wherever the text met one. Paths
    (``click.Path``, ``click.File``) may be any bytes the file system allows, and are let
    through, but for a :class:`RecordedPath`."""
    for param in ctx.command.get_params(ctx):
        if param.name is None or (isinstance(param.type, (click.Path, click.File))
                                  and not isinstance(param.type, RecordedPath)):
            continue
        value = ctx.params.get(param.name)
        for given in value if isinstance(value, (tuple, list)) else (value,):
            text = os.fspath(given) if isinstance(given, os.PathLike) else given
            if not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                code = ord(text[e.start])
                what = (f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
                        else f"U+{code:04X}, a lone surrogate")
                raise UsageError(
                    f"{_param_name(param)}: not valid UTF-8 ({what}); pass it as UTF-8 (check "
                    "the encoding of the terminal or script)") from None


def _param_name(param: click.Parameter) -> str:
    """An option as typed (its long form), or an argument as its usage line names it."""
    if isinstance(param, click.Option):
        return next((o for o in param.opts if o.startswith("--")), param.opts[0])
    return f"argument {param.human_readable_name}"


class Command(click.Command):
    """A command of evault: an :class:`~vault.errors.OptionsError` it raises is shown as
    click shows its own usage errors, under this command's usage line (exit 2); a text
    option or argument that is not UTF-8 is refused before it runs
    (:func:`refuse_undecodable`)."""

    def invoke(self, ctx: click.Context) -> Any:
        refuse_undecodable(ctx)
        try:
            return super().invoke(ctx)
        except OptionsError as e:
            raise click.UsageError(str(e), ctx) from None


class Group(click.Group):
    """A group of commands below the root (``evault identity ...``): its commands and
    subgroups are :class:`Command` and :class:`Group` too; its own options are checked as
    a command's are."""

    command_class = Command
    group_class = type

    def invoke(self, ctx: click.Context) -> Any:
        refuse_undecodable(ctx)
        return super().invoke(ctx)


def _help(name: str, f: Callable[..., Any]) -> str:
    """The help of the root's command ``name``: its summary, then its docstring."""
    import inspect  # loaded by click already

    return f"{COMMANDS[name].summary}\n\n{inspect.cleandoc(f.__doc__ or '')}"


def top_command(name: str) -> Callable[[Callable[..., Any]], Command]:
    """``click.command`` for the root's command ``name``: its help opens with the summary in
    :data:`COMMANDS`, and the function's docstring says the rest (details, examples)."""

    def decorate(f: Callable[..., Any]) -> Command:
        return click.command(name, cls=Command, help=_help(name, f))(f)

    return decorate


def top_group(name: str) -> Callable[[Callable[..., Any]], Group]:
    """``click.group`` for the root's group ``name``, as :func:`top_command`."""

    def decorate(f: Callable[..., Any]) -> Group:
        return click.group(name, cls=Group, help=_help(name, f))(f)

    return decorate


class RootGroup(click.Group):
    """The root command: loads a command's module when the command is looked up, and maps
    every expected error to one line on stderr and its exit code, in one place."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            import importlib

            module, _, attribute = COMMANDS[cmd_name].where.partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's list of commands, made from :data:`COMMANDS` (nothing else imported)."""
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, click.Command(name, help=entry.summary).get_short_help_str(limit))
                for name, entry in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        _say_notices()
        try:
            return super().invoke(ctx)
        except Reported as e:
            ctx.exit(e.exit_code)  # the command has shown what failed
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


def _say_notices() -> None:
    """Show what the layers below log for people (e.g. an older vault's metadata being
    sealed) as messages. :mod:`logging` is imported here, not at the top: ``evault --help``
    does without it (~10 ms)."""
    import logging

    class Notices(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from vault.cli.common import say

            say(record.getMessage())

    logger = logging.getLogger("evault")
    if not any(getattr(h, "evault_notices", False) for h in logger.handlers):
        handler = Notices(logging.INFO)
        handler.evault_notices = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def _print_traceback() -> None:
    import traceback  # only with --debug; it costs start-up time otherwise

    traceback.print_exc()


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("EVAULT_DEBUG") == "1"


def _safe(message: str) -> str:
    """A message with the control characters of any name or title in it shown as escapes."""
    from vault.render import terminal_safe

    return terminal_safe(message)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=RootGroup, context_settings=CONTEXT)
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
