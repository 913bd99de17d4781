"""Nothing leaks: after a full run, no private key and no plaintext is anywhere it should
not be, and nothing that travels or reports carries titles, descriptions or file names
(the chain-of-custody form, an internal court document, names the item's title, source
and place, and nothing else of the kind).

The run is ``make demo``'s main job: an office vault with two identities, two bodies whose
keys come from their officers' cards, a sample file holding a unique plaintext marker
ingested with a unique title, description, file name, source and location, a package with a
reference and a purpose, sending, the recipient opening and acknowledging, the office
importing the acknowledgement, an export to two bodies, reports, sheets, checkpoints and
proofs. Then every private key of every identity (Ed25519 seeds and age X25519 keys) and
every vault's storage key, raw and in every encoding (hex, base64, url-safe base64, the
``AGE-SECRET-KEY-1`` form, the key store's own entry), the passphrase, and the marker are
searched for in: the database (the SQLite file and its WAL byte for byte, and every row of
every table on either backend), the blob folders, ``exports/``, the outbox, every file the
commands wrote, and everything every command printed on stdout and stderr. The marker is
allowed only where the user asked for plaintext: ``open --out`` and ``items export -o``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import Result
from conftest import BACKENDS, TEST_PASSPHRASE, Cli, isolate
from test_robustness import extra_pg_schema

from vault.formats import package as fmt

CASE = "UA-2026-0042"


@dataclass
class Recorder:
    """Runs commands in-process and keeps everything they printed."""

    outputs: list[str] = field(default_factory=list)

    def vault(self, path: Path) -> Cli:
        recorder = self

        class Recording(Cli):
            def __call__(self, *args: str, input: str | None = None,
                         vault: bool = True) -> Result:
                result = super().__call__(*args, input=input, vault=vault)
                recorder.outputs.append(f"$ evault {' '.join(args)}\n{result.stdout}"
                                        f"{result.stderr}")
                return result

        return Recording(path)


def _encodings(raw: bytes) -> list[bytes]:
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw),
            base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"="),
            base64.b32encode(raw).rstrip(b"=")]


def vault_secrets(path: Path) -> dict[str, list[bytes]]:
    """Every private key of a vault, by name, in every encoding we can think of."""
    from sqlalchemy import select

    from vault.service.identities import load_keypair
    from vault.service.intake import storage_identity
    from vault.service.vaults import open_vault
    from vault.store.models import IdentityKey, VaultKey

    found: dict[str, list[bytes]] = {}
    v = open_vault(path)
    try:
        with v.transaction() as session:
            for key in session.scalars(select(IdentityKey)):
                pair = load_keypair(v, key)
                seed, age = pair.signing.seed(), pair.age.raw()
                found[f"{path.name} seed {key.fingerprint}"] = _encodings(seed)
                found[f"{path.name} age {key.fingerprint}"] = [
                    *_encodings(age), pair.age.encode().encode(),
                    pair.age.encode().lower().encode()]
                found[f"{path.name} key store entry {key.fingerprint}"] = _encodings(seed + age)
            if session.get(VaultKey, "storage") is not None:
                storage = storage_identity(v, session)
                found[f"{path.name} storage key"] = [
                    *_encodings(storage.raw()), storage.encode().encode(),
                    storage.encode().lower().encode()]
    finally:
        v.close()
    return found


def database_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every value of every row of every table of a vault's database, as bytes."""
    import sqlalchemy as sa

    from vault.store.vaultdir import load_config

    engine = sa.create_engine(load_config(path).database_url(path))
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    for column, value in zip(table.columns, row, strict=True):
                        if value is None:
                            continue
                        data = value if isinstance(value, bytes) else str(value).encode()
                        yield f"{path.name} db {table.name}.{column.name}", data
    finally:
        engine.dispose()


@dataclass
class Run:
    tmp: Path
    marker: bytes
    words: dict[str, str]
    vaults: list[Path]
    allowed: list[Path]  # where plaintext was asked for
    outputs: list[str]
    travelling: dict[str, bytes]  # envelopes, receipts, acks, reports, sheets, events


def full_run(tmp: Path, database: str | None) -> Run:
    rec = Recorder()
    token = secrets.token_hex(8)
    marker = f"PLAINTEXT-MARKER-{token}".encode()
    words = {"title": f"Title-{token}", "description": f"Description-{token}",
             "name": f"statement-{token}.txt", "source": f"Source-{token}",
             "location": f"Location-{token}", "purpose": f"Purpose-{token}",
             "reference": f"REF-{token}", "case title": f"CaseTitle-{token}"}
    office = rec.vault(tmp / "office")
    office.init(database)
    office.ok("identity", "create", "registry-office", "--org", "Fictional Ministry")
    office.ok("identity", "create", "evidence-unit", "--org", "Fictional Ministry")
    office_card = tmp / "registry-office.card.json"
    office.ok("identity", "export", "registry-office", "-o", str(office_card))
    office_fp = json.loads(office.ok("identity", "show", "--json").stdout)["fingerprint"]
    recipients = {}
    for body, officer in (("ICC-OTP", "icc-officer"), ("UA-OPG", "opg-officer")):
        other = rec.vault(tmp / body.lower())
        other.init()
        fp = json.loads(other.ok("identity", "create", officer, "--json").stdout)["fingerprint"]
        card = tmp / f"{officer}.card.json"
        other.ok("identity", "export", "-o", str(card))
        office.ok("body", "add", body, "--name", f"Fictional {body}")
        office.ok("body", "key", "add", body, "--card", str(card), "--fingerprint", fp)
        other.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
        recipients[body] = other
    samples = tmp / "samples"
    samples.mkdir()
    sample = samples / words["name"]
    sample.write_bytes(b"FICTIONAL SAMPLE\n" + marker + b"\n" + marker * 3000)
    office.ok("case", "create", CASE, "--title", words["case title"])
    office.ok("ingest", str(sample), "--case", CASE, "--title", words["title"],
              "--description", words["description"], "--source", words["source"],
              "--location", words["location"], "--collected-at", "2026-03-14T09:30:00Z",
              "--tag", "witness=W-1", "--also-digest", "md5,sha1")
    item = json.loads(office.ok("items", "list", "--json").stdout)[0]["id"]
    office.ok("items", "show", item)
    office.ok("custody", "checkpoint", "-o", str(tmp / "checkpoint-1.txt"))
    office.ok("custody", "prove", item)
    outbox = tmp / "outbox"
    outbox.mkdir()
    package = tmp / "icc.evpkg"
    built = json.loads(office.ok(
        "package", "create", "--to", "ICC-OTP", "--case", CASE, "--reference",
        words["reference"], "--purpose", words["purpose"], "-o", str(package),
        "--json").stdout)
    office.ok("send", str(package), "--outbox", str(outbox))
    receipt = json.loads(office.ok("receipt", "list", "--json").stdout)[0]["id"]
    office.ok("receipt", "show", receipt)
    office.ok("receipt", "export", receipt, "-o", str(tmp / "receipt.json"))
    icc = recipients["ICC-OTP"]
    received = tmp / "received"
    icc.ok("open", str(outbox / f"{built['id']}.evpkg"), "--out", str(received))
    ack = tmp / "ack.json"
    icc.ok("ack", built["id"], "-o", str(ack))
    office.ok("receipt", "import", str(ack))
    second = samples / "photo.bin"
    second.write_bytes(marker * 10)
    office.ok("ingest", str(second), "--case", CASE, "--as", "evidence-unit")
    office.ok("export", "--to", "ICC-OTP,UA-OPG", "--case", CASE, "--outbox", str(outbox),
              "--jsonl")
    reports = {}
    for fmt_name in ("table", "md", "csv", "json"):
        reports[f"sharing {fmt_name}"] = office.ok("report", "sharing", "--format",
                                                   fmt_name).stdout
    for fmt_name in ("md", "html"):
        reports[f"custody {fmt_name}"] = office.ok("report", "custody", item, "--format",
                                                   fmt_name).stdout
        reports[f"sheet {fmt_name}"] = office.ok("package", "sheet", built["id"], "--format",
                                                 fmt_name).stdout
    office.ok("report", "custody", item, "--format", "html", "-o", str(tmp / "custody.html"))
    office.ok("custody", "checkpoint", "-o", str(tmp / "checkpoint-2.txt"))
    office.ok("custody", "consistency", str(tmp / "receipt.json"), str(tmp / "checkpoint-2.txt"),
              "-o", str(tmp / "proof.json"))
    for cli in (office, *recipients.values()):
        cli.ok("custody", "verify")
        cli.ok("doctor")
        cli.ok("identity", "list")
    office.ok("verify", str(package), str(tmp / "receipt.json"), str(ack), str(office_card))
    exported = tmp / "asked-for.txt"
    office.ok("items", "export", item, "-o", str(exported), "--reason", "expert review")

    travelling: dict[str, bytes] = {f"report {k}": v.encode() for k, v in reports.items()}
    for path in [package, *outbox.glob("*.evpkg"), *(tmp / "office" / "exports").glob(
            "*.evpkg")]:
        travelling[f"envelope of {path.name}"] = fmt.read_package(path).envelope_bytes
    travelling["ack"] = ack.read_bytes()
    travelling["custody.html"] = (tmp / "custody.html").read_bytes()
    vaults = [tmp / "office", *(tmp / b.lower() for b in recipients)]
    for path in vaults:
        for where, data in database_rows(path):
            if where.endswith(("custody_events.body", "receipts.document",
                               "acknowledgements.document", "checkpoints.note",
                               "packages.envelope", "received_packages.envelope")):
                travelling[where + f" #{len(travelling)}"] = data
    return Run(tmp, marker, words, vaults, [received, exported], rec.outputs, travelling)


@pytest.fixture(scope="module", params=BACKENDS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One full run per backend, shared by the checks below (the office vault on it)."""
    database = None if request.param == "sqlite" else extra_pg_schema(request)
    tmp = tmp_path_factory.mktemp(f"secrets-{request.param}")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, tmp / "no-default-vault")
        yield full_run(tmp, database)


def _haystacks(run: Run) -> Iterator[tuple[str, bytes]]:
    """Everything on disk under the run's folder, every database row, every output."""
    for path in sorted(run.tmp.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield str(path.relative_to(run.tmp)), path.read_bytes()
    for vault in run.vaults:
        yield from database_rows(vault)
    for n, output in enumerate(run.outputs):
        yield f"output of command {n}: {output.splitlines()[0]}", output.encode()


def test_no_private_key_and_no_passphrase_anywhere(run: Run) -> None:
    needles: dict[str, list[bytes]] = {"passphrase": [TEST_PASSPHRASE.encode()]}
    for vault in run.vaults:
        needles.update(vault_secrets(vault))
    assert len([n for n in needles if " seed " in n]) == 4  # 2 office identities, 2 officers
    assert any("office storage key" in n for n in needles)
    found = []
    scanned = 0
    for where, data in _haystacks(run):
        scanned += 1
        for name, forms in needles.items():
            if any(form in data for form in forms):
                found.append(f"{name} in {where}")
    assert scanned > 50
    assert found == []


def test_plaintext_only_where_asked_for(run: Run) -> None:
    allowed = [str(p.relative_to(run.tmp)) for p in run.allowed]
    hits = [where for where, data in _haystacks(run)
            if (run.marker in data or run.marker.hex().encode() in data)]
    unexpected = [w for w in hits if not w.startswith((*allowed, "samples/"))]
    assert unexpected == []
    # The places the user asked for do hold it: the test can see the marker at all.
    assert any(w.startswith(allowed[0]) for w in hits)
    assert any(w.startswith(allowed[1]) for w in hits)


def test_what_travels_or_reports_carries_no_titles_descriptions_or_names(run: Run) -> None:
    assert len(run.travelling) > 20
    private = ["title", "description", "name", "source", "location", "purpose", "case title"]
    # The chain-of-custody form is the one internal court document: it names what the item
    # is (title, source, place), never its description or file name.
    form = ("report custody md", "report custody html", "custody.html")
    described = ["title", "source", "location"]
    found = [f"{word} in {where}" for where, data in run.travelling.items() for word in private
             if run.words[word].encode() in data
             and not (where in form and word in described)]
    assert [(where, word) for where in form for word in described
            if run.words[word].encode() not in run.travelling[where]] == []
    # The reference is a receipt's one free-text field (hashed with --confidential-
    # reference); it stays out of envelopes, acks, events, reports and sheets.
    found += [f"reference in {where}" for where, data in run.travelling.items()
              if run.words["reference"].encode() in data and "receipts.document" not in where]
    assert found == []
