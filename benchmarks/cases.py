"""The benchmark cases: each times evault against the stock tools doing the same job (case 11,
the scale table, times evault alone at growing sizes: benchmarks/scale.py).

    >>> ctx = Context(scale=SCALES["smoke"], rounds=1, work=Path(tmp))   # doctest: +SKIP
    >>> rows = CASES["ingest"](ctx)                                    # doctest: +SKIP

Every case makes its own data and throwaway vaults under ``ctx.work`` (one file system, so
evault's blob folder and the stock tools' output sit on the same disk). Setup that is not
measured (vault creation, identities, bodies, the items a package is built from) goes
through the real ``evault`` commands run in-process; what is measured runs as a separate
process, start-up included. Vaults that a measured command changes are copied from a
prepared template before each round, outside the timed region, so every round starts from
the same state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness import (
    GIB,
    MIB,
    BenchError,
    Pairs,
    Sample,
    alternate,
    clear,
    run_checked,
    run_timed,
    sh,
    write_random_file,
)

PASSPHRASE = "benchmark throwaway passphrase"


@dataclass(frozen=True)
class Scale:
    """Sizes of one run."""

    name: str
    big_file: int
    many_files: int
    many_file_size: int
    export_items: int
    export_item_size: int
    custody_events: tuple[int, ...]
    startup_rounds: int
    list_items: int
    team_small: int  # case 10: small files, split between the workers
    team_small_size: int
    team_big: int  # and big files
    team_big_size: int
    # Case 11, the scale table: the sizes each kind runs at, the first being its base
    # (benchmarks/scale.py); the largest is where the case's time goes.
    scale_files: tuple[int, ...]  # ingest of files of scale_file_size
    scale_file_size: int
    scale_items: tuple[int, ...]  # export of items of scale_item_size to the five bodies
    scale_item_size: int
    scale_events: tuple[int, ...]  # custody verify, --quick and full, on logs of this many


SCALES = {
    "full": Scale("full", GIB, 10_000, 4096, 1000, MIB, (100_000, 1_000_000), 15, 100_000,
                  2000, 32 * 1024, 8, 32 * MIB,
                  (100, 1_000, 10_000, 100_000), 4096, (10, 100, 1_000), 64 * 1024,
                  (1_000, 10_000, 100_000)),
    # Case 11 at smoke scale: two sizes of each kind (each size costs two commands a round),
    # the larger ingest above the 256 files from which intake runs on worker processes.
    "smoke": Scale("smoke", 16 * MIB, 200, 4096, 50, 64 * 1024, (2_000,), 3, 200,
                   40, 16 * 1024, 4, MIB,
                   (30, 300), 4096, (2, 20), 4096, (100, 1_000)),
}

BODIES = ("BODY-A", "BODY-B", "BODY-C", "BODY-D", "BODY-E")


@dataclass
class Row:
    """One line of the results table."""

    case: str
    pairs: Pairs
    goal: str
    met: bool | None
    notes: list[str] = field(default_factory=list)
    #: A table of the case's own (Markdown lines), printed after the main one (case 11).
    table: list[str] = field(default_factory=list)


def fmt_seconds(s: float | None) -> str:
    """``48 ms`` below a second, else ``4.21 s``."""
    if s is None:
        return "—"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


# ----------------------------------------------------------------------------- evault


class Evault:
    """Runs ``evault``: measured as a separate process, setup in-process through click."""

    def __init__(self, work: Path) -> None:
        exe = Path(sys.executable).with_name("evault")
        found = str(exe) if exe.exists() else shutil.which("evault")
        if found is None:
            raise BenchError("evault: not installed next to this Python nor on PATH")
        self.exe = found
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("EVAULT_")}
        self.base_env.update(EVAULT_KEY_STORAGE="file", EVAULT_PASSPHRASE=PASSPHRASE,
                             EVAULT_HOME=str(work / "no-default-vault"))

    def env(self, vault: Path) -> dict[str, str]:
        """The environment of a command against ``vault``."""
        return {**self.base_env, "EVAULT_HOME": str(vault)}

    def timed(self, vault: Path, *args: str, cwd: Path | None = None) -> Sample:
        """One measured run of ``evault ARGS`` against ``vault``."""
        return run_timed([self.exe, *args], env=self.env(vault), cwd=cwd)

    def setup(self, vault: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
        """An unmeasured ``evault ARGS --vault VAULT`` run in this process (with ``env`` over
        the usual environment, if given); returns stdout."""
        from click.testing import CliRunner

        from vault.cli import cli

        result = CliRunner().invoke(cli, [*args, "--vault", str(vault)],
                                    env={**self.env(vault), **(env or {})},
                                    catch_exceptions=False)
        if result.exit_code != 0:
            raise BenchError(f"evault {' '.join(args)}: exit {result.exit_code}: "
                             f"{result.stderr.strip()}")
        return result.stdout


# ----------------------------------------------------------------------------- fixtures


class Context:
    """Scale, rounds, the work folder and the data and vaults shared between cases."""

    def __init__(self, scale: Scale, rounds: int, work: Path,
                 log: Callable[[str], None] = print) -> None:
        self.scale = scale
        self.rounds = rounds
        self.work = work
        self.log = log
        self.evault = Evault(work)
        self.stock_env = dict(self.evault.base_env)
        self._n = 0

    def fresh(self, name: str) -> Path:
        """A new, unused path under the work folder."""
        self._n += 1
        return self.work / f"{name}-{self._n}"

    def copy_vault(self, template: Path, name: str) -> Path:
        """A copy of a prepared vault (same keys, same state), for one round."""
        target = self.fresh(name)
        shutil.copytree(template, target, symlinks=True)
        return target

    # -- stock keys and data ------------------------------------------------------------

    @cached_property
    def age_key(self) -> tuple[Path, str]:
        """An age-keygen identity file and its recipient, for the stock side."""
        key = self.work / "stock-age.key"
        run_checked(["age-keygen", "-o", str(key)], env=self.stock_env)
        recipient = run_checked(["age-keygen", "-y", str(key)], env=self.stock_env).strip()
        return key, recipient

    @cached_property
    def big_file(self) -> Path:
        """One random file of the scale's big size (1 GiB at full scale)."""
        path = self.work / "data" / "big.bin"
        path.parent.mkdir(exist_ok=True)
        self.log(f"  making {path.name}: {self.scale.big_file // MIB} MiB of random bytes")
        write_random_file(path, self.scale.big_file)
        return path

    @cached_property
    def big_sha256(self) -> str:
        """SHA-256 of :attr:`big_file`."""
        digest = hashlib.sha256()
        with open(self.big_file, "rb") as f:
            while chunk := f.read(4 * MIB):
                digest.update(chunk)
        return digest.hexdigest()

    # -- vaults -------------------------------------------------------------------------

    @cached_property
    def empty_vault(self) -> Path:
        """``evault init`` only."""
        vault = self.work / "template-empty"
        self.evault.setup(vault, "init")
        return vault

    @cached_property
    def office_vault(self) -> Path:
        """A sending office: one identity, no items yet."""
        vault = self.work / "template-office"
        self.evault.setup(vault, "init")
        self.evault.setup(vault, "identity", "create", "registry-office", "--org", "Bench")
        return vault

    @cached_property
    def office_card(self) -> Path:
        """The office identity's contact card."""
        card = self.work / "registry-office.card.json"
        self.evault.setup(self.office_vault, "identity", "export", "registry-office", "-o",
                          str(card))
        return card

    @cached_property
    def recipient_vault(self) -> Path:
        """The body's vault: one officer identity, the office added as a known sender."""
        vault = self.work / "template-recipient"
        self.evault.setup(vault, "init")
        self.evault.setup(vault, "identity", "create", "officer", "--org", "BODY-R")
        self.evault.setup(vault, "contact", "add", str(self.office_card))
        return vault

    @cached_property
    def recipient_card(self) -> Path:
        """The officer's contact card."""
        card = self.work / "officer.card.json"
        self.evault.setup(self.recipient_vault, "identity", "export", "officer", "-o", str(card))
        return card

    @cached_property
    def recipient_age(self) -> str:
        """The officer's age recipient (what the body's packages are encrypted to)."""
        return str(json.loads(self.recipient_card.read_text())["age_recipient"])

    @cached_property
    def sender_with_big_item(self) -> tuple[Path, str]:
        """The office vault with the big file ingested and body BODY-R keyed to the officer.

        Returns the vault and the item id.
        """
        vault = self.work / "template-sender"
        shutil.copytree(self.office_vault, vault, symlinks=True)
        self.evault.setup(vault, "body", "add", "BODY-R", "--name", "Recipient body")
        self.evault.setup(vault, "body", "key", "add", "BODY-R", "--card",
                          str(self.recipient_card))
        self.log("  ingesting the big file into the sending vault (setup)")
        self.evault.setup(vault, "ingest", str(self.big_file), "--case", "BENCH-PKG",
                          "--create-case")
        items = json.loads(self.evault.setup(vault, "items", "list", "--json"))
        return vault, str(items[0]["id"])


# ----------------------------------------------------------------------------- cases


def _rss_ok(pairs: Pairs, limit_mib: int) -> bool:
    return pairs.evault_maxrss_kib < limit_mib * 1024


def _ratio_ok(pairs: Pairs, limit: float) -> bool:
    ratio = pairs.ratio_median
    return ratio is not None and ratio <= limit


def _size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"


def case_ingest(ctx: Context) -> list[Row]:
    """1. Ingest one big file vs ``openssl dgst -sha256 F && age -r R -o O F``."""
    big = ctx.big_file
    _, recipient = ctx.age_key
    state: dict[str, Path] = {}
    out = ctx.work / "stock-ingest.age"

    def prepare(n: int) -> None:
        state["vault"] = ctx.copy_vault(ctx.office_vault, "ingest-vault")

    def evault(n: int) -> Sample:
        return ctx.evault.timed(state["vault"], "ingest", str(big), "--case", "BENCH-1",
                                "--create-case")

    def stock(n: int) -> Sample:
        return run_timed(sh(f"openssl dgst -sha256 '{big}' >/dev/null && "
                            f"age -r {recipient} -o '{out}' '{big}'"), env=ctx.stock_env)

    def cleanup(n: int) -> None:
        clear(state["vault"])
        clear(out)

    pairs = alternate(ctx.rounds, evault, stock, prepare=prepare, cleanup=cleanup,
                      log=ctx.log, label="ingest")
    label = _size_label(ctx.scale.big_file)
    return [Row(f"1. ingest one {label} file", pairs, "ratio <= 1.0, RSS < 100 MiB",
                _ratio_ok(pairs, 1.0) and _rss_ok(pairs, 100))]


def case_package(ctx: Context) -> list[Row]:
    """2. Package one big item for a body vs ``age -d -i K blob.age | age -r R -o out.age``."""
    vault, item = ctx.sender_with_big_item
    key, stock_recipient = ctx.age_key
    blob = ctx.work / "stock-blob.age"
    run_checked(["age", "-r", stock_recipient, "-o", str(blob), str(ctx.big_file)],
                env=ctx.stock_env)
    body_recipient = ctx.recipient_age
    package = ctx.work / "bench-package.evpkg"
    out = ctx.work / "stock-package.age"

    def evault(n: int) -> Sample:
        return ctx.evault.timed(vault, "package", "create", "--to", "BODY-R", "--item", item,
                                "-o", str(package))

    def stock(n: int) -> Sample:
        return run_timed(sh(f"age -d -i '{key}' '{blob}' | age -r {body_recipient} -o '{out}'"),
                         env=ctx.stock_env)

    def cleanup(n: int) -> None:
        clear(package)
        clear(out)

    pairs = alternate(ctx.rounds, evault, stock, cleanup=cleanup, log=ctx.log, label="package")
    clear(blob)
    label = _size_label(ctx.scale.big_file)
    # Issue 23's goal, a ratio of 1.2: evault also hashes the plaintext (checked against
    # each item's digest), the payload and the whole file, and fsyncs; the stock pipeline
    # does none of it.
    return [Row(f"2. package one {label} item", pairs, "ratio <= 1.2, RSS < 100 MiB (flat)",
                _ratio_ok(pairs, 1.2) and _rss_ok(pairs, 100))]


def case_open(ctx: Context) -> list[Row]:
    """3. Open and verify a big package vs ``age -d | tar -x`` then ``sha256sum -c``."""
    sender, item = ctx.sender_with_big_item
    package = ctx.work / "bench-open.evpkg"
    ctx.log("  building the package to open (setup)")
    ctx.evault.setup(sender, "package", "create", "--to", "BODY-R", "--item", item, "-o",
                     str(package))
    template = ctx.recipient_vault
    key, recipient = ctx.age_key
    # The stock side: the same bytes as a bag folder, tarred and encrypted with age.
    bag = ctx.work / "stock-bag" / "bag"
    (bag / "data" / item).mkdir(parents=True)
    os.link(ctx.big_file, bag / "data" / item / "big.bin")
    (bag / "manifest-sha256.txt").write_text(f"{ctx.big_sha256}  data/{item}/big.bin\n")
    payload = ctx.work / "stock-payload.age"
    run_checked(sh(f"tar -c -C '{bag.parent}' bag | age -r {recipient} -o '{payload}'"),
                env=ctx.stock_env)
    state: dict[str, Path] = {}

    def prepare(n: int) -> None:
        # A package opens once per vault: each round gets a fresh copy of the recipient.
        state["vault"] = ctx.copy_vault(template, "open-vault")
        state["out"] = ctx.fresh("open-out")
        state["stock"] = ctx.fresh("stock-open-out")
        state["stock"].mkdir()

    def evault(n: int) -> Sample:
        return ctx.evault.timed(state["vault"], "open", str(package), "--out", str(state["out"]))

    def stock(n: int) -> Sample:
        dest = state["stock"]
        return run_timed(sh(f"age -d -i '{key}' '{payload}' | tar -x -C '{dest}' && "
                            f"cd '{dest}/bag' && sha256sum -c --quiet manifest-sha256.txt"),
                         env=ctx.stock_env)

    def cleanup(n: int) -> None:
        for path in state.values():
            clear(path)

    pairs = alternate(ctx.rounds, evault, stock, prepare=prepare, cleanup=cleanup,
                      log=ctx.log, label="open")
    for path in (package, payload, bag.parent):
        clear(path)
    label = _size_label(ctx.scale.big_file)
    return [Row(f"3. open and verify a {label} package", pairs, "ratio <= 0.9",
                _ratio_ok(pairs, 0.9))]


def _many_files(ctx: Context, name: str, count: int, size: int, per_folder: int) -> Path:
    root = ctx.work / "data" / name
    ctx.log(f"  making {count} files of {size} bytes in {root.name}/")
    for n in range(count):
        folder = root / f"batch-{n // per_folder:03d}"
        if n % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"file-{n:05d}.bin").write_bytes(os.urandom(size))
    return root


def case_ingest_many(ctx: Context) -> list[Row]:
    """4. Ingest many small files with --recursive vs sha256sum of all plus tar | age."""
    scale = ctx.scale
    folder = _many_files(ctx, "many", scale.many_files, scale.many_file_size, 1000)
    _, recipient = ctx.age_key
    out = ctx.work / "stock-many.tar.age"
    state: dict[str, Path] = {}

    def prepare(n: int) -> None:
        state["vault"] = ctx.copy_vault(ctx.office_vault, "many-vault")

    def evault(n: int) -> Sample:
        return ctx.evault.timed(state["vault"], "ingest", str(folder), "--recursive", "--case",
                                "BENCH-4", "--create-case")

    def stock(n: int) -> Sample:
        return run_timed(sh(f"find '{folder}' -type f -print0 | xargs -0 sha256sum >/dev/null"
                            f" && tar -c -C '{folder.parent}' '{folder.name}' | "
                            f"age -r {recipient} -o '{out}'"), env=ctx.stock_env)

    rounds: list[Path] = []

    def cleanup(n: int) -> None:
        # The round's vault is deleted after the last round, not now: on this machine's
        # file system (ext4 mounted with `discard`) creating files is ~10x slower for a
        # while after tens of thousands were deleted, which would charge the next round's
        # 10,000 blob creations for this round's cleanup.
        rounds.append(state["vault"])
        clear(out)

    pairs = alternate(ctx.rounds, evault, stock, prepare=prepare, cleanup=cleanup,
                      log=ctx.log, label="ingest-many")
    for vault in rounds:
        clear(vault)
    clear(folder)
    goal_s = 2.0 if scale.name == "full" else None
    files_per_s = scale.many_files / pairs.evault_median
    return [Row(
        f"4. ingest {scale.many_files:,} files of {scale.many_file_size // 1024} KiB "
        "(--recursive)",
        pairs,
        "evault < 2 s" if goal_s else "(evault < 2 s at full scale)",
        pairs.evault_median < goal_s if goal_s else None,
        [f"ingest of {scale.many_files:,} small files: {files_per_s:,.0f} files/s"],
    )]


def export_template(ctx: Context, name: str) -> tuple[Path, list[str]]:
    """A copy of the office vault with the five bodies, each keyed to an officer of its own;
    the vault and the bodies' age recipients (in the order of ``BODIES``)."""
    template = ctx.work / name
    shutil.copytree(ctx.office_vault, template, symlinks=True)
    recipients = []
    from vault.crypto.age import AgeIdentity
    from vault.crypto.keys import SigningKey

    for body in BODIES:
        # Officers' public keys as they would hand them over: an age recipient and an SSH key.
        age_recipient = str(AgeIdentity.generate().recipient)
        ssh_key = SigningKey.generate().public.openssh(f"officer@{body.lower()}")
        ctx.evault.setup(template, "body", "add", body, "--name", f"Body {body[-1]}")
        ctx.evault.setup(template, "body", "key", "add", body, "--age", age_recipient, "--ssh",
                         ssh_key)
        recipients.append(age_recipient)
    return template, recipients


def case_export(ctx: Context) -> list[Row]:
    """5. Export many items to five bodies vs five ``tar -c DIR | age -r R -o O``."""
    scale = ctx.scale
    folder = _many_files(ctx, "export", scale.export_items, scale.export_item_size, 1000)
    template, recipients = export_template(ctx, "template-export")
    ctx.log(f"  ingesting {scale.export_items} items into the exporting vault (setup)")
    ctx.evault.setup(template, "ingest", str(folder), "--recursive", "--case", "BENCH-5",
                     "--create-case")
    state: dict[str, Path] = {}

    def prepare(n: int) -> None:
        # Each round exports from the same fresh state: nothing shared yet.
        state["vault"] = ctx.copy_vault(template, "export-vault")
        state["outbox"] = ctx.fresh("outbox")
        state["outbox"].mkdir()
        state["stock"] = ctx.fresh("stock-outbox")
        state["stock"].mkdir()

    def evault(n: int) -> Sample:
        return ctx.evault.timed(state["vault"], "export", "--to", ",".join(BODIES), "--case",
                                "BENCH-5", "--outbox", str(state["outbox"]))

    def stock(n: int) -> Sample:
        dest = state["stock"]
        script = " && ".join(
            f"tar -c -C '{folder.parent}' '{folder.name}' | age -r {r} -o '{dest}/{b}.tar.age'"
            for b, r in zip(BODIES, recipients, strict=True)
        )
        return run_timed(sh(script), env=ctx.stock_env)

    def cleanup(n: int) -> None:
        for path in state.values():
            clear(path)

    pairs = alternate(ctx.rounds, evault, stock, prepare=prepare, cleanup=cleanup,
                      log=ctx.log, label="export")
    clear(template)
    clear(folder)
    deliveries = scale.export_items * len(BODIES)
    volume = deliveries * scale.export_item_size
    t = pairs.evault_median
    size = (f"{scale.export_item_size // MIB} MiB" if scale.export_item_size >= MIB
            else f"{scale.export_item_size // 1024} KiB")
    return [Row(
        f"5. export {scale.export_items:,} items of {size} to 5 bodies",
        pairs,
        "ratio <= 1.5",
        _ratio_ok(pairs, 1.5),
        [f"export: {deliveries / t:,.0f} items/s and {volume / t / 1e6:,.0f} MB/s "
         f"({scale.export_items:,} items x {len(BODIES)} bodies = {volume / 1e9:.2f} GB "
         f"in {t:.2f} s)"],
    )]


def grow_custody_log(ctx: Context, vault: Path, events: int) -> int:
    """Append ``events`` signed events to ``vault``'s log and take a checkpoint
    (benchmarks/custody_gen.py, in this process, with the vault's environment); returns the
    log's new size."""
    from custody_gen import generate

    env_before = dict(os.environ)
    os.environ.update(ctx.evault.env(vault))
    try:
        return generate(vault, events)
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def case_custody(ctx: Context) -> list[Row]:
    """6. ``custody verify`` (``--quick`` and full) on logs of many events."""
    rows = []
    for events in ctx.scale.custody_events:
        vault = ctx.work / f"custody-{events}"
        shutil.copytree(ctx.office_vault, vault, symlinks=True)
        ctx.log(f"  generating a custody log of {events:,} signed events (setup)")
        size = grow_custody_log(ctx, vault, events)
        for quick in (True, False):
            args = ["custody", "verify", *(["--quick"] if quick else [])]

            def verify(n: int, args: list[str] = args, vault: Path = vault) -> Sample:
                return ctx.evault.timed(vault, *args)

            pairs = alternate(ctx.rounds, verify, None, log=ctx.log,
                              label=" ".join(args) + f" @{events:,}")
            rate = size / pairs.evault_median
            what = "--quick (structure)" if quick else "full (signatures on 2 cores)"
            if quick and events >= 1_000_000:
                goal, met = "< 5 s at 1M", pairs.evault_median < 5.0
            elif quick:
                goal, met = "report", None
            else:
                goal, met = "report events/s", None
            rows.append(Row(f"6. custody verify {what}, {size:,} events", pairs, goal, met,
                            [f"custody verify {what} at {size:,} events: {rate:,.0f} events/s"]))
        clear(vault)
    return rows


def installed_evault(ctx: Context) -> str:
    """``evault`` as a user installs it: the checkout's wheel in a fresh venv (as pipx
    installs it; its dependencies from the package index or pip's cache). The development
    venv's editable install puts an import hook in front of every start (about 15 ms)."""
    import venv

    root = Path(__file__).resolve().parent.parent
    wheels = ctx.work / "wheel"
    ctx.log("  building the wheel and installing it in a fresh venv (setup)")
    run_checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                 str(root)], env=ctx.stock_env)
    [wheel] = wheels.glob("evault-*.whl")
    env_dir = ctx.work / "installed-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    run_checked([str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)], env=ctx.stock_env)
    return str(env_dir / "bin" / "evault")


def case_startup(ctx: Context) -> list[Row]:
    """7. Start-up: ``--version``, ``--help``, ``items list`` beside ``python -c pass``, for
    the wheel as installed (what the goals are about) and the development venv's editable
    install (in the notes)."""
    vault = ctx.empty_vault
    env = ctx.evault.env(vault)
    exe = installed_evault(ctx)
    commands: dict[str, list[str]] = {
        "version": [exe, "--version"],
        "help": [exe, "--help"],
        "items": [exe, "items", "list"],
        "dev version": [ctx.evault.exe, "--version"],
        "dev help": [ctx.evault.exe, "--help"],
        "dev items": [ctx.evault.exe, "items", "list"],
        "python": [sys.executable, "-c", "pass"],
        "age": ["age", "--version"],
    }
    samples: dict[str, list[Sample]] = {k: [] for k in commands}
    names = list(commands)
    for n in range(ctx.scale.startup_rounds):
        # rotate the order so that no command always runs first (or after the same one)
        for name in names[n % len(names):] + names[: n % len(names)]:
            samples[name].append(run_timed(commands[name], env=env))
    ctx.log("  startup medians: " + ", ".join(
        f"{k} {fmt_seconds(statistics.median(s.seconds for s in v))}"
        for k, v in samples.items()))
    python = samples["python"]
    age_median = statistics.median(s.seconds for s in samples["age"])
    py_median = statistics.median(s.seconds for s in python)
    rows = []
    for key, label, limit in (
        ("version", "`evault --version`", 0.060),
        ("help", "`evault --help`", 0.060),
        ("items", "`evault items list` (empty vault)", 0.150),
    ):
        pairs = Pairs(evault=samples[key], stock=python)
        rows.append(Row(f"7. start-up: {label} (stock: `python -c pass`)", pairs,
                        f"< {limit * 1000:.0f} ms", pairs.evault_median < limit))
    rows[0].notes.append(f"start-up references: `python -c pass` {fmt_seconds(py_median)}, "
                         f"`age --version` {fmt_seconds(age_median)}")
    dev = {key: fmt_seconds(statistics.median(s.seconds for s in samples[f"dev {key}"]))
           for key in ("version", "help", "items")}
    rows[0].notes.append("case 7 times the wheel installed in a fresh venv, as users get it; "
                         "the development venv's editable install (an import hook at every "
                         f"start): `--version` {dev['version']}, `--help` {dev['help']}, "
                         f"`items list` {dev['items']}")
    return rows


#: Metadata every item of case 8 carries (and, since schema 0005, the vault seals).
LIST_METADATA = ("--title", "Fictional benchmark title", "--source", "Fictional source",
                 "--location", "Fictional place", "--description", "Fictional description",
                 "--tag", "witness=fictional")


def _python_evault(source: Path | None, vault: Path, *args: str) -> list[str]:
    """``python -m vault ARGS --vault VAULT``, from ``source`` (another checkout) if given."""
    prefix = ["env", f"PYTHONPATH={source}"] if source else []
    return [*prefix, sys.executable, "-m", "vault", *args, "--vault", str(vault)]


def case_items_list(ctx: Context) -> list[Row]:
    """8. ``items list`` over many items that all carry metadata, after vs before sealing.

    The "stock" column is the same command run by an older evault (the source tree named by
    ``EVAULT_BENCH_BEFORE``, e.g. ``git archive 8740842 vault | tar -x -C /tmp/before``) on
    a vault it made itself with the same files and metadata; without it, evault alone.
    """
    count = ctx.scale.list_items
    before_env = os.environ.get("EVAULT_BENCH_BEFORE")
    before = Path(before_env).absolute() if before_env else None
    folder = _many_files(ctx, "list", count, 16, 1000)
    vaults: dict[str, Path] = {}
    for name, source in (("after", None), ("before", before)):
        if name == "before" and source is None:
            continue
        vault = vaults[name] = ctx.work / f"list-{name}"
        ctx.log(f"  ingesting {count:,} items with metadata into the {name} vault (setup)")
        env = ctx.evault.env(vault)
        for args in (("init",), ("identity", "create", "registry-office"),
                     ("ingest", str(folder), "--recursive", "--case", "BENCH-8",
                      "--create-case", *LIST_METADATA)):
            run_checked(_python_evault(source, vault, *args), env=env, cwd=ctx.work)
        # The first listing converts nothing (a new vault) but settles the key store.
        run_checked(_python_evault(source, vault, "items", "list"), env=env, cwd=ctx.work)

    def run(name: str, source: Path | None) -> Sample:
        argv = _python_evault(source, vaults[name], "items", "list")
        return run_timed(argv, env=ctx.evault.env(vaults[name]), cwd=ctx.work)

    pairs = alternate(ctx.rounds, lambda n: run("after", None),
                      (lambda n: run("before", before)) if before else None,
                      log=ctx.log, label="items list")
    for vault in vaults.values():
        clear(vault)
    clear(folder)
    rate = count / pairs.evault_median
    notes = [f"items list of {count:,} items with sealed metadata: {rate:,.0f} items/s"]
    if before is None:
        notes.append("no EVAULT_BENCH_BEFORE: the evault before sealed metadata was not run")
    full = ctx.scale.name == "full"
    return [Row(f"8. `items list` over {count:,} items with metadata (stock: the same before "
                "sealed metadata)", pairs, "evault < 1 s" if full else "(evault < 1 s at full "
                "scale)", pairs.evault_median < 1.0 if full else None, notes)]


def case_sftp(ctx: Context) -> list[Row]:
    """9. Send a big package to an SFTP drop vs ``sftp -b`` put (and ``scp``) of the same file.

    Against the tests' real OpenSSH server on 127.0.0.1 (tests/sftp_server.py: needs root for
    its chroot). evault does more than the stock clients: it checks the host key against the
    body's pin, uploads under a temporary name, then reads the whole file back over SFTP to
    hash it (OpenSSH offers no check-file) before the rename, and records and receipts the
    send; ``sftp -b`` and ``scp`` only write.
    """
    # As tests/conftest.py does: tests/ and scripts/ (local_tsa, whose free_port the server
    # takes) on the path.
    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root / "tests"), str(root / "scripts")]
    from sftp_server import SftpServer, sftp_unavailable

    reason = sftp_unavailable()
    if reason:
        raise BenchError(f"sftp case: no SFTP server here: {reason}")
    sender, item = ctx.sender_with_big_item
    template = ctx.work / "template-sftp"
    shutil.copytree(sender, template, symlinks=True)
    package = ctx.work / "bench-sftp.evpkg"
    built = json.loads(ctx.evault.setup(template, "package", "create", "--to", "BODY-R",
                                        "--item", item, "-o", str(package), "--json"))
    with SftpServer() as server:
        drop = server.drop("bench")
        ssh = ["-i", str(server.client_key), "-o", f"UserKnownHostsFile={server.known_hosts}",
               "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        target = f"nobody@127.0.0.1:{drop}/stock.evpkg"
        batch = ctx.work / "sftp-batch"
        batch.write_text(f"put {package} {drop}/stock.evpkg\n")
        vaults: dict[int, Path] = {}

        def prepare(n: int) -> None:
            vaults[n] = ctx.copy_vault(template, "sftp")  # the package built, not sent

        def evault(n: int) -> Sample:
            return ctx.evault.timed(vaults[n], "send", built["id"], "--outbox",
                                    server.url(drop), "--host-key", server.fingerprint,
                                    "--identity-file", str(server.client_key))

        def stock(n: int) -> Sample:
            return run_timed(["sftp", *ssh, "-P", str(server.port), "-b", str(batch),
                              "nobody@127.0.0.1"], env=ctx.stock_env)

        def cleanup(n: int) -> None:
            for f in server.path(drop).iterdir():
                f.unlink()
            clear(vaults.pop(n))

        pairs = alternate(ctx.rounds, evault, stock, prepare=prepare, cleanup=cleanup,
                          log=ctx.log, label="sftp")
        scp = []
        for _ in range(ctx.rounds):
            os.sync()
            scp.append(run_timed(["scp", "-q", *ssh, "-P", str(server.port), str(package),
                                  target], env=ctx.stock_env).seconds)
            for f in server.path(drop).iterdir():
                f.unlink()
    clear(package)
    shutil.rmtree(template)
    label = _size_label(ctx.scale.big_file)
    notes = [f"`scp` of the same file, same server: median {fmt_seconds(statistics.median(scp))}"
             f" over {len(scp)} round(s)"]
    return [Row(f"9. send a {label} package to an SFTP drop", pairs, "report", None, notes)]


def case_ingest_workers(ctx: Context) -> list[Row]:
    """10. Ingest by 1, 2 and 4 machines at once into one PostgreSQL and one S3 bucket
    (benchmarks/s3_workers.py)."""
    from s3_workers import case_ingest_workers as case

    return case(ctx)


def case_scale(ctx: Context) -> list[Row]:
    """11. Ingest, export and custody verify at 1x, 10x, 100x (1000x) a base size: how the
    cost of one unit grows (benchmarks/scale.py)."""
    from scale import case_scale as case

    return case(ctx)


CASES: dict[str, Callable[[Context], list[Row]]] = {
    "ingest": case_ingest,
    "package": case_package,
    "open": case_open,
    "ingest-many": case_ingest_many,
    "export": case_export,
    "custody": case_custody,
    "startup": case_startup,
    "items-list": case_items_list,
    "sftp": case_sftp,
    "ingest-workers": case_ingest_workers,
    "scale": case_scale,
}

STOCK = {
    "ingest": "`sh -c 'openssl dgst -sha256 F && age -r R -o O F'`",
    "package": "`sh -c 'age -d -i K blob.age | age -r R -o out.age'` (blob.age: the same "
               "file, age-encrypted)",
    "open": "`sh -c 'age -d -i K payload.age | tar -x -C D && cd D/bag && sha256sum -c "
            "manifest-sha256.txt'` (payload.age: the same file as a bag, tarred and encrypted)",
    "ingest-many": "`sh -c 'find D -type f -print0 | xargs -0 sha256sum && tar -c D | age -r "
                   "R -o O'`",
    "export": "five `tar -c D | age -r R_i -o O_i`, one after the other, in one `sh -c`",
    "custody": "none (no stock tool re-derives the log)",
    "startup": "`python -c pass` (and `age --version` in the notes)",
    "items-list": "the same `items list` by the evault before sealed metadata "
                  "(EVAULT_BENCH_BEFORE)",
    "sftp": "`sftp -b` put of the same package file to the same OpenSSH server on 127.0.0.1 "
            "(and `scp` in the notes)",
    "ingest-workers": "W processes at once, each uploading its share of the same files as they "
                      "are with boto3's `upload_file` (no encryption, no database) to the same "
                      "SeaweedFS",
    "scale": "none (evault alone at growing sizes; the start-up, the same command on one unit, "
             "is subtracted before the per-unit cost)",
}


def selected(only: Sequence[str]) -> list[str]:
    """The case names to run, in the canonical order; unknown names are refused."""
    if not only:
        return list(CASES)
    unknown = [c for c in only if c not in CASES]
    if unknown:
        raise BenchError(f"--only: unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    return [c for c in CASES if c in only]
