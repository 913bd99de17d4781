"""Intake: cases, ingest (paths, recursive, manifests), items, export, doctor --repair."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SQLITE_ONLY, TEST_PASSPHRASE, Cli

CASE = "UA-2026-0042"


@pytest.fixture
def office(cli: Cli) -> Cli:
    cli.ok("identity", "create", "registry-office", "--org", "Fictional Ministry of Justice")
    return cli


def _files(tmp_path: Path, **contents: bytes) -> list[Path]:
    folder = tmp_path / "evidence"
    folder.mkdir(exist_ok=True)
    out = []
    for name, data in contents.items():
        path = folder / name.replace("_", ".")
        path.write_bytes(data)
        out.append(path)
    return out


def _blob_files(cli: Cli) -> list[Path]:
    return sorted(p for p in (cli.vault / "blobs").rglob("*") if p.is_file()
                  and not p.name.startswith(".intake"))


def _items(cli: Cli) -> list[dict[str, object]]:
    return json.loads(cli.ok("items", "list", "--json").stdout)  # type: ignore[no-any-return]


def test_ingest_one_file_with_metadata(office: Cli, tmp_path: Path) -> None:
    (statement,) = _files(tmp_path, statement_txt=b"fictional witness statement\n")
    result = office.ok(
        "ingest", str(statement), "--case", CASE, "--create-case", "--title", "Statement W-1",
        "--description", "Fictional statement", "--source", "Fictional field office",
        "--collected-at", "2026-03-14T09:30:00+02:00", "--location", "Fictional town",
        "--tag", "witness=W-1", "--label", "restricted-icc", "--also-digest", "md5,sha1",
    )
    digest = hashlib.sha256(b"fictional witness statement\n").hexdigest()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "case", "name", "size", "sha256", "md5", "sha1"]
    assert lines[1].split()[1:5] == [CASE, "statement.txt", "28", digest]
    assert result.stderr == "evault: ingested 1 file(s), 28 bytes\n"
    (item,) = _items(office)
    shown = json.loads(office.ok("items", "show", str(item["id"]), "--json").stdout)
    assert shown == {
        "id": item["id"],
        "case": CASE,
        "name": "statement.txt",
        "title": "Statement W-1",
        "description": "Fictional statement",
        "source": "Fictional field office",
        "collected_at": "2026-03-14T07:30:00Z",
        "location": "Fictional town",
        "size": 28,
        "sha256": digest,
        "digests": {
            "md5": hashlib.md5(b"fictional witness statement\n").hexdigest(),
            "sha1": hashlib.sha1(b"fictional witness statement\n").hexdigest(),
        },
        "labels": ["restricted-icc"],
        "tags": {"witness": "W-1"},
        "ingested_at": shown["ingested_at"],
        "ingested_by": shown["ingested_by"],
    }
    (blob,) = _blob_files(office)
    data = blob.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"fictional witness statement" not in data
    assert digest not in str(blob) and blob.stat().st_mode & 0o777 == 0o600
    events = json.loads(office.ok("custody", "show", str(item["id"]), "--json").stdout)["events"]
    assert [e["action"] for e in events] == ["item.ingested"]
    assert events[0]["details"] == {"case": CASE, "labels": ["restricted-icc"], "size": 28}
    assert b"Statement W-1" not in events[0]["details"].__repr__().encode()
    assert events[0]["digests"]["sha256"] == digest


def test_same_content_twice_is_two_items_sharing_one_blob(office: Cli, tmp_path: Path) -> None:
    a, b = _files(tmp_path, a_bin=b"same bytes", b_bin=b"same bytes")
    office.ok("ingest", str(a), "--case", CASE, "--create-case")
    office.ok("ingest", str(b), "--case", CASE)
    items = _items(office)
    assert len(items) == 2 and items[0]["id"] != items[1]["id"]
    assert len(_blob_files(office)) == 1
    assert json.loads(office.ok("case", "show", CASE, "--json").stdout)["items"] == 2


def test_recursive_ingest_and_cases(office: Cli, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "day-1").mkdir(parents=True)
    (root / "day-2").mkdir()
    for i in range(3):
        (root / "day-1" / f"img-{i}.jpg").write_bytes(os.urandom(1000 + i))
    (root / "day-2" / "img-9.jpg").write_bytes(os.urandom(70_000))
    office.ok("case", "create", CASE, "--title", "Fictional shelling of a school")
    refused = office("ingest", str(root), "--case", CASE)
    assert (refused.exit_code, refused.stderr) == (
        2, f"evault: {root}: is a directory; pass --recursive to ingest what it holds\n")
    result = office.ok("ingest", str(root), "--recursive", "--case", CASE, "--jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["img-0.jpg", "img-1.jpg", "img-2.jpg", "img-9.jpg"]
    cases = json.loads(office.ok("case", "list", "--json").stdout)
    assert cases == [{"id": CASE, "title": "Fictional shelling of a school", "items": 4,
                      "bytes": 3003 + 70_000, "created_at": cases[0]["created_at"]}]
    dup = office("case", "create", CASE)
    assert (dup.exit_code, dup.stderr) == (
        1, f"evault: case {CASE}: exists already; see `evault case show {CASE}`\n")


@SQLITE_ONLY
@pytest.mark.parametrize("case", ["A/../../etc", "A/./B", "A//B", "A/", "../etc", "A/.."])
def test_a_case_id_that_names_a_path_to_climb_is_refused(office: Cli, tmp_path: Path,
                                                          case: str) -> None:
    """A case id becomes a folder name in exports and a row in a recipient's vault: no part
    may be empty, '.' or '..', typed here or (tests/test_opening.py) sent by another office."""
    note = tmp_path / "note.txt"
    note.write_bytes(b"fictional note\n")
    rule = ("1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit, with "
            "no empty, '.' or '..' part between '/' (e.g. UA-2026-0042)")
    for args in (["case", "create", case], ["ingest", str(note), "--case", case, "--create-case"]):
        result = office(*args)
        assert (result.exit_code, result.stderr) == (2, f"evault: case id {case!r}: use {rule}\n")
    assert json.loads(office.ok("case", "list", "--json").stdout) == []
    assert _items(office) == []


#: Refusals of ingest's arguments and paths, before any file is stored or the database
#: written; the last one is the only one decided by a row of the database (the case).
BAD_INPUT = [
    ("missing", [], 1, "{p}: no such file; check the path"),
    ("symlink", [], 2, "{p}: is a symbolic link; pass --follow-symlinks to ingest its target"),
    ("fifo", [], 2, "{p}: is not a regular file (device, socket or pipe)"),
    ("file", ["--collected-at", "14 March 2026"], 2,
     "--collected-at: '14 March 2026' is not an ISO 8601 time with a zone, "
     "e.g. 2026-03-14T09:30:00Z"),
    ("file", ["--collected-at", "2026-03-14T09:30:00"], 2,
     "--collected-at: '2026-03-14T09:30:00' is not an ISO 8601 time with a zone, "
     "e.g. 2026-03-14T09:30:00Z"),
    ("file", ["--tag", "nokey"], 2, "--tag: 'nokey' is not KEY=VALUE with a simple key"),
    ("file", ["--also-digest", "crc32"], 2, "--also-digest: 'crc32' is not one of md5, sha1"),
    ("unknown-case", [], 1,
     "case NEW-CASE: not found; create it with `evault case create NEW-CASE` "
     "or pass --create-case"),
]


# Every refusal on SQLite; on PostgreSQL the one a query decides (the others are decided
# by the arguments and the files alone, before anything is written, whatever the database).
@pytest.mark.parametrize(
    "database,make,args,code,message",
    [("sqlite", *bad) for bad in BAD_INPUT]
    + [pytest.param("postgres", *BAD_INPUT[-1], marks=pytest.mark.postgres)],
    indirect=["database"],
)
def test_bad_input_is_refused_with_nothing_written(
    office: Cli, tmp_path: Path, make: str, args: list[str], code: int, message: str
) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"fictional")
    path = tmp_path / "input"
    case = CASE
    if make == "symlink":
        path.symlink_to(good)
    elif make == "fifo":
        os.mkfifo(path)
    elif make in ("file", "unknown-case"):
        path.write_bytes(b"fictional")
        case = "NEW-CASE" if make == "unknown-case" else CASE
    office.ok("case", "create", CASE)
    result = office("ingest", str(good), str(path), "--case", case, *args)
    assert result.exit_code == code
    assert result.stderr == "evault: " + message.format(p=path) + "\n"
    assert _items(office) == []
    assert _blob_files(office) == []


def test_symlink_is_followed_when_asked(office: Cli, tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_bytes(b"fictional target")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    office.ok("ingest", str(link), "--case", CASE, "--create-case", "--follow-symlinks")
    assert [i["size"] for i in _items(office)] == [16]


@SQLITE_ONLY
@pytest.mark.parametrize("how", ["dotted", "folder-and-file", "link-to-file",
                                 "link-to-folder", "hard-link"])
def test_a_file_named_twice_is_refused_however_it_is_named(office: Cli, tmp_path: Path,
                                                           how: str) -> None:
    """One file, one item: named twice on one command line, by another spelling of its path,
    through its folder with --recursive, through a link to it or to a folder above it
    (followed), or by a second name of its inode (a hard link), the command is refused
    before anything is stored."""
    folder = tmp_path / "evidence" / "photos"
    folder.mkdir(parents=True)
    photo = folder / "photo.jpg"
    photo.write_bytes(b"fictional photo")
    other = {
        "dotted": tmp_path / "evidence" / "." / "photos" / ".." / "photos" / "photo.jpg",
        "folder-and-file": folder,
        "link-to-file": tmp_path / "alias.jpg",
        "link-to-folder": tmp_path / "alias",
        "hard-link": tmp_path / "second-name.jpg",
    }[how]
    if how == "hard-link":
        os.link(photo, other)
    if how == "link-to-file":
        other.symlink_to(photo)
    elif how == "link-to-folder":
        other.symlink_to(tmp_path / "evidence")
    given = str(other) if how != "dotted" else os.path.join(
        tmp_path, "evidence", ".", "photos", "..", "photos", "photo.jpg")
    result = office("ingest", str(photo), given, "--recursive", "--follow-symlinks",
                    "--case", CASE, "--create-case")
    named = {"folder-and-file": photo, "link-to-folder": other / "photos" / "photo.jpg"}
    second = named.get(how, Path(given))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"evault: {second}: given twice; each file is ingested once per command\n")
    assert _items(office) == []
    assert _blob_files(office) == []


def test_a_file_that_changes_while_read_is_refused(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.service import storing

    (path,) = _files(tmp_path, growing_log=os.urandom(300_000))
    original = storing._pump

    def pump_and_grow(src, writer, hashers, pool, size_hint):  # type: ignore[no-untyped-def]
        with open(path, "ab") as f:
            f.write(b"appended while evault was reading")
        return original(src, writer, hashers, pool, size_hint)

    monkeypatch.setattr(storing, "_pump", pump_and_grow)
    result = office("ingest", str(path), "--case", CASE, "--create-case")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: {path}: changed while being read; nothing of it was stored, "
        "ingest it again when it is stable\n")
    assert _items(office) == [] and _blob_files(office) == []


def _write_manifest(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_csv_and_jsonl(office: Cli, tmp_path: Path) -> None:
    _files(tmp_path, a_txt=b"alpha", b_txt=b"bravo", c_txt=b"charlie")
    csv_path = _write_manifest(
        tmp_path, "batch.csv",
        "path,case,title,collected_at,tags,labels\n"
        "evidence/a.txt,UA-2026-0042,Alpha,2026-01-02T03:04:05Z,k=v;w=x,restricted-icc\n"
        'evidence/b.txt,UA-2026-0043,"Bravo, with comma",,,\n',
    )
    office.ok("ingest", "--manifest", str(csv_path), "--create-case")
    jsonl = _write_manifest(
        tmp_path, "more.jsonl",
        json.dumps({"path": "evidence/c.txt", "case": CASE, "title": "Charlie",
                    "tags": {"source-id": "S-7"}, "labels": ["no-foreign-release"]}) + "\n",
    )
    office.ok("ingest", "--manifest", str(jsonl))
    items = {i["name"]: i for i in _items(office)}
    assert sorted(items) == ["a.txt", "b.txt", "c.txt"]
    a = json.loads(office.ok("items", "show", str(items["a.txt"]["id"]), "--json").stdout)
    assert (a["title"], a["collected_at"], a["tags"], a["labels"]) == (
        "Alpha", "2026-01-02T03:04:05Z", {"k": "v", "w": "x"}, ["restricted-icc"])
    assert items["b.txt"]["case"] == "UA-2026-0043"
    c = json.loads(office.ok("items", "show", str(items["c.txt"]["id"]), "--json").stdout)
    assert (c["tags"], c["labels"]) == ({"source-id": "S-7"}, ["no-foreign-release"])


@SQLITE_ONLY
@pytest.mark.parametrize(
    "name,text,message",
    [
        ("dup.csv", "path,case\nevidence/a.txt,X-1\nevidence/b.txt,X-1\nevidence/a.txt,X-1\n",
         "{m}:4: path {t}/evidence/a.txt is listed twice (first at line 2)"),
        ("bad.csv", "path,case,colour\nevidence/a.txt,X-1,red\n", "{m}:1: unknown column 'colour'"),
        ("date.csv", "path,case,collected_at\nevidence/a.txt,X-1,\nevidence/b.txt,X-1,yesterday\n",
         "{m}:3: collected_at: 'yesterday' is not an ISO 8601 time with a zone, "
         "e.g. 2026-03-14T09:30:00Z"),
        ("missing.jsonl", '{"path": "evidence/a.txt", "case": "X-1"}\n'
         '{"path": "evidence/nope.txt", "case": "X-1"}\n',
         "{m}:2: {t}/evidence/nope.txt: no such file; check the path"),
        ("json.jsonl", '{"path": "evidence/a.txt", "case": "X-1"}\n{"path": \n',
         "{m}:2: not valid JSON (Expecting value)"),
        ("nocase.jsonl", '{"path": "evidence/a.txt"}\n',
         "{m}:1: case is missing (give it in the row or with --case)"),
    ],
)
def test_manifest_is_validated_whole_before_anything_is_written(
    office: Cli, tmp_path: Path, name: str, text: str, message: str
) -> None:
    _files(tmp_path, a_txt=b"alpha", b_txt=b"bravo")
    manifest = _write_manifest(tmp_path, name, text)
    result = office("ingest", "--manifest", str(manifest), "--create-case")
    assert result.exit_code in (1, 2)
    assert result.stderr == "evault: " + message.format(m=manifest, t=tmp_path) + "\n"
    assert _items(office) == [] and _blob_files(office) == []


def test_a_manifest_naming_one_file_by_two_names_is_refused(office: Cli,
                                                             tmp_path: Path) -> None:
    """A hard link (or a followed link) is the file itself under another name: listed beside
    the file, it would be ingested twice."""
    _files(tmp_path, a_txt=b"alpha")
    os.link(tmp_path / "evidence" / "a.txt", tmp_path / "evidence" / "again.txt")
    manifest = _write_manifest(tmp_path, "links.csv",
                               "path,case\nevidence/a.txt,X-1\nevidence/again.txt,X-1\n")
    result = office("ingest", "--manifest", str(manifest), "--create-case")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", (
        f"evault: {manifest}:3: path {tmp_path}/evidence/again.txt is the file listed at "
        "line 2\n"))
    assert _items(office) == [] and _blob_files(office) == []


def test_export_checks_the_digest_and_logs_the_reason(office: Cli, tmp_path: Path) -> None:
    content = os.urandom(200_000)
    (path,) = _files(tmp_path, video_mp4=content)
    office.ok("ingest", str(path), "--case", CASE, "--create-case")
    (item,) = _items(office)
    out = tmp_path / "copy.mp4"
    result = office.ok("items", "export", str(item["id"]), "-o", str(out), "--reason",
                       "forensic examination")
    assert out.read_bytes() == content
    assert result.stderr == (f"evault: exported item {item['id']} to {out}; the export is in "
                             "the custody log\n")
    again = office("items", "export", str(item["id"]), "-o", str(out), "--reason", "again")
    assert (again.exit_code, again.stderr) == (
        1, f"evault: {out}: exists already; choose another path or pass --force\n")
    events = json.loads(office.ok("custody", "show", str(item["id"]), "--json").stdout)["events"]
    # The intent is logged before any plaintext is written, the export before it has its
    # name; one token (never the path) ties them.
    assert [e["action"] for e in events] == [
        "item.ingested", "item.export.started", "item.exported"]
    token = events[1]["details"]["export"]
    assert events[1]["details"] == {"export": token, "reason": "forensic examination"}
    assert events[2]["details"] == {"export": token, "reason": "forensic examination",
                                    "started": events[1]["seq"]}
    assert str(tmp_path) not in json.dumps(events)
    assert list((office.vault / "pending").iterdir()) == []

    # A damaged blob is caught while exporting; nothing is written.
    (blob,) = _blob_files(office)
    data = bytearray(blob.read_bytes())
    data[-100] ^= 1
    blob.write_bytes(bytes(data))
    broken = tmp_path / "broken.mp4"
    result = office("items", "export", str(item["id"]), "-o", str(broken), "--reason", "check")
    # It names the item, not only the chunk (it said "age payload: chunk 3 does not
    # authenticate" alone).
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: item {item['id']}: its blob does not decrypt (age payload: chunk 3 does not "
        "authenticate); nothing was written; report the blob as damaged or replaced and "
        "restore it from a backup\n"))
    assert not broken.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []
    # The failed run closes its intent itself: nothing is left for doctor.
    events = json.loads(office.ok("custody", "show", str(item["id"]), "--json").stdout)["events"]
    assert [e["action"] for e in events][-2:] == ["item.export.started", "item.export.abandoned"]
    assert events[-1]["details"] == {"export": events[-2]["details"]["export"],
                                     "started": events[-2]["seq"], "leftover": False}
    assert list((office.vault / "pending").iterdir()) == []


def test_doctor_repair_removes_leftovers_only(office: Cli, tmp_path: Path) -> None:
    (path,) = _files(tmp_path, a_txt=b"alpha")
    office.ok("ingest", str(path), "--case", CASE, "--create-case")
    shard = office.vault / "blobs" / "ab"
    shard.mkdir(exist_ok=True)
    (shard / (".tmp-" + "ab" * 16)).write_bytes(b"half-written")
    (shard / ("ab" * 16)).write_bytes(b"age-encryption.org/v1\norphan")
    report = json.loads(office.ok("doctor", "--json").stdout)
    assert (report["items"], report["blobs"], report["temporary_files"],
            report["orphaned_blobs"]) == (1, 1, 1, 1)
    repaired = json.loads(office.ok("doctor", "--repair", "--json").stdout)
    # The temporary is removed; the orphan is moved into quarantine, never deleted.
    assert (repaired["blobs_removed"], repaired["orphans_quarantined"]) == (1, 1)
    assert (office.vault / "quarantine" / ("ab" * 16)).read_bytes() == (
        b"age-encryption.org/v1\norphan")
    after = json.loads(office.ok("doctor", "--json").stdout)
    assert (after["temporary_files"], after["orphaned_blobs"], after["blobs_missing"]) == (0, 0, 0)
    assert office.ok("custody", "verify").stdout.startswith("OK: ")
    out = tmp_path / "a.out"
    office.ok("items", "export", str(_items(office)[0]["id"]), "-o", str(out), "--reason", "r")
    assert out.read_bytes() == b"alpha"


def test_kill_during_ingest_leaves_complete_items_or_none(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "vault")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    env = {**os.environ, "EVAULT_KEY_STORAGE": "file", "EVAULT_PASSPHRASE": TEST_PASSPHRASE}
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault", "ingest", str(big), "--case", CASE, "--create-case",
             "--vault", str(cli.vault)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    verified = cli("custody", "verify")
    assert verified.exit_code == 0, verified.stdout
    report = json.loads(cli.ok("doctor", "--repair", "--json").stdout)
    assert report["blobs_missing"] == 0
    # Every item that exists is complete: its content decrypts to the right digest.
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    for item in _items(cli):
        assert item["sha256"] == digest
        out = tmp_path / f"{item['id']}.out"
        cli.ok("items", "export", str(item["id"]), "-o", str(out), "--reason", "check")
        assert out.stat().st_size == big.stat().st_size
    cli.ok("ingest", str(big), "--case", CASE, "--create-case")
    assert len(_items(cli)) >= 1


# -- many small files: worker processes -------------------------------------------------------


def _store_paths_recording(*args: object) -> object:
    """store_paths, noting which process ran it (forked workers inherit the patch)."""
    from vault.service import storing

    with open(os.environ["EVAULT_TEST_WORKER_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return storing.store_paths(*args)  # type: ignore[arg-type]


@pytest.fixture
def small_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Worker processes from 8 files up, 3 files a run, files over 1,000 bytes stay here."""
    from vault.service import intake

    monkeypatch.setattr(intake, "PARALLEL_MIN_FILES", 8)
    monkeypatch.setattr(intake, "WORKER_CHUNK", 3)
    monkeypatch.setattr(intake, "SMALL_FILE", 1000)
    monkeypatch.setattr(intake, "store_paths", _store_paths_recording)
    pids = tmp_path / "worker-pids.txt"
    monkeypatch.setenv("EVAULT_TEST_WORKER_PIDS", str(pids))
    return pids


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are used on Linux only")
def test_many_small_files_are_stored_by_worker_processes(
    office: Cli, tmp_path: Path, small_workers: Path
) -> None:
    contents = {f"f{n:02d}_bin": os.urandom(100 + n) for n in range(20)}
    contents["f10_bin"] = os.urandom(5000)  # a large one in the middle: stored in-process
    paths = _files(tmp_path, **contents)
    result = office.ok("ingest", str(tmp_path / "evidence"), "--recursive", "--case", CASE,
                       "--create-case", "--also-digest", "sha1")
    assert result.stderr == f"evault: ingested 20 file(s), {sum(map(len, contents.values()))} " \
        "bytes\n"
    items = {str(i["name"]): i for i in _items(office)}
    for path in paths:
        data = path.read_bytes()
        assert items[path.name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert items[path.name]["size"] == len(data)
        shown = json.loads(office.ok("items", "show", str(items[path.name]["id"]), "--json").stdout)
        assert shown["digests"]["sha1"] == hashlib.sha1(data).hexdigest()
    assert len(_blob_files(office)) == 20
    workers = set(small_workers.read_text().split())
    assert workers and str(os.getpid()) not in workers
    assert office.ok("custody", "verify").stdout.startswith("OK: 2")
    # The content comes back: export one that a worker stored.
    out = tmp_path / "back.bin"
    office.ok("items", "export", str(items["f03.bin"]["id"]), "-o", str(out), "--reason", "check")
    assert out.read_bytes() == contents["f03_bin"]


def _store_paths_dying(*args: object) -> object:
    """store_paths in a worker that dies at once, as one killed for memory would."""
    os._exit(1)


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are used on Linux only")
def test_a_worker_that_dies_is_one_line(
    office: Cli, tmp_path: Path, small_workers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whether the pool's breakage shows first at a result or at the next hand-out.
    from vault.service import intake

    monkeypatch.setattr(intake, "store_paths", _store_paths_dying)
    _files(tmp_path, **{f"f{n:02d}_bin": os.urandom(200) for n in range(40)})
    result = office("ingest", str(tmp_path / "evidence"), "--recursive", "--case", CASE,
                    "--create-case")
    assert (result.exit_code, result.stderr) == (
        1, "evault: ingest: a worker process stopped unexpectedly (out of memory?); the "
        "unfinished batch was not kept; run `evault doctor --repair`, then the same ingest "
        "again\n")
    assert _items(office) == []


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are used on Linux only")
@pytest.mark.parametrize("batch", [2000, 4])
def test_a_file_failing_in_a_worker_leaves_only_whole_batches(
    office: Cli, tmp_path: Path, small_workers: Path, monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    from vault.errors import VaultError
    from vault.service import intake
    from vault.service.vaults import open_vault

    monkeypatch.setattr(intake, "BATCH_FILES", batch)
    paths = _files(tmp_path, **{f"f{n:02d}_bin": os.urandom(200) for n in range(20)})
    rows = intake.rows_from_paths(paths, intake.IntakeFields(case=CASE))
    paths[9].unlink()  # gone between validation and reading: a worker cannot open it
    vault = open_vault(office.vault)
    with pytest.raises(VaultError) as caught:
        intake.ingest(vault, rows, create_case=True)
    vault.engine.dispose()
    kept = 0 if batch == 2000 else 8  # two whole batches of 4 before file 10
    suffix = f" ({kept} earlier files were ingested)" if kept else ""
    assert str(caught.value) == (
        f"{paths[9]}: cannot open (No such file or directory); nothing was stored{suffix}"
    )
    assert len(_items(office)) == kept
    assert len(_blob_files(office)) == kept  # runs stored ahead of the failure were removed
    assert [p for p in (office.vault / "blobs").rglob(".tmp*")] == []


# -- many files: validated whole, stored and printed a batch at a time -------------------------


def _expected_by_a_set_of_every_file(paths: list[Path], follow: bool) -> str | None:
    """What `ingest PATHS -r` refuses as given twice, found as it was before intake kept
    only folders and files with more names: the first file whose inode was seen."""
    seen: set[tuple[int, int]] = set()

    def files(root: Path) -> list[Path]:
        if not root.is_dir():
            return [root]
        out: list[Path] = []
        for name in sorted(os.listdir(root)):
            out += files(root / name)
        return out

    for path in paths:
        for file in files(path):
            st = os.stat(file)
            if (st.st_dev, st.st_ino) in seen:
                return f"evault: {file}: given twice; each file is ingested once per command\n"
            seen.add((st.st_dev, st.st_ino))
    return None


@SQLITE_ONLY
@pytest.mark.parametrize("given", [
    ["a"], ["a", "b"], ["a", "a"], ["a", "a/sub"], ["a/sub", "a"], ["a/x.txt", "a"],
    ["a", "a/x.txt"], ["a", "a/sub/../x.txt"], ["a/sub", "a/y.txt", "a/sub/z.txt"],
    ["a/empty", "a"], ["a", "a/empty"], ["b", "a/linked.txt"], ["a/linked.txt", "b"],
    ["b"], ["a/sub/z.txt", "a/x.txt", "a/sub/z.txt"],
])
def test_a_file_walked_twice_is_found_without_remembering_every_file(
    office: Cli, tmp_path: Path, given: list[str]
) -> None:
    """Without --follow-symlinks intake remembers the folders it walked and the files with
    more than one name (or named on the command line), not every file: it refuses the same
    files, naming the same path, as a set of every file's inode did."""
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for name in ("x.txt", "y.txt", "sub/z.txt", "sub/w.txt"):
        (a / name).write_bytes(name.encode())
    os.link(a / "y.txt", a / "linked.txt")  # a second name, in the same folder
    os.link(a / "sub" / "w.txt", tmp_path / "b" / "w-again.txt")  # and in another
    paths = [tmp_path / g for g in given]
    expected = _expected_by_a_set_of_every_file(paths, follow=False)
    result = office("ingest", *map(str, paths), "--recursive", "--case", CASE, "--create-case")
    if expected is None:
        assert result.exit_code == 0, result.stderr
    else:
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", expected)
        assert _items(office) == [] and _blob_files(office) == []


def _table_of(office: Cli, stdout: str, columns: tuple[str, ...]) -> str:
    from vault.render import render_table

    items = {str(i["id"]): i for i in _items(office)}
    ids = [line.split()[0] for line in stdout.splitlines()[1:]]
    return render_table([items[i] for i in ids], columns)


def test_many_files_print_one_table_a_batch_at_a_time(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 3 files are printed as they are committed; the table is aligned as if it
    were printed whole (its widest name and size are last), and --json is one array."""
    from vault.service import intake

    monkeypatch.setattr(intake, "BATCH_FILES", 3)
    folder = tmp_path / "evidence"
    folder.mkdir()
    for n in range(10):
        (folder / f"f{n}{'-longer-name' * (n == 9)}.bin").write_bytes(b"x" * (10 ** (n // 3)))
    result = office.ok("ingest", str(folder), "-r", "--case", CASE, "--create-case")
    assert result.stdout == _table_of(office, result.stdout, ("id", "case", "name", "size",
                                                              "sha256"))
    assert len(result.stdout.splitlines()) == 11
    assert result.stderr == "evault: ingested 10 file(s), 1333 bytes\n"
    again = office.ok("ingest", str(folder), "-r", "--case", CASE, "--json")
    rows = json.loads(again.stdout)
    assert [r["name"] for r in rows] == sorted(p.name for p in folder.iterdir())
    from vault.render import to_json

    assert again.stdout == to_json(rows) and again.stderr == ""
    csv_out = office.ok("ingest", str(folder), "-r", "--case", CASE, "--csv").stdout
    assert csv_out.count("id,case,name,size,sha256") == 1 and len(csv_out.splitlines()) == 11


def test_a_failure_after_some_batches_prints_the_items_that_were_ingested(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches committed before a failure stay (as before) and are on stdout: with --json
    one whole array of them; stderr has the one line that says so; exit 1."""
    from vault.errors import VaultError
    from vault.service import intake

    monkeypatch.setattr(intake, "BATCH_FILES", 4)
    paths = _files(tmp_path, **{f"f{n:02d}_bin": bytes([n]) * 10 for n in range(10)})
    original = intake.store_path

    def failing(blobs, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).name == "f06.bin":
            raise VaultError(f"{path}: cannot open (fictional); nothing was stored")
        return original(blobs, path, *args, **kwargs)

    monkeypatch.setattr(intake, "store_path", failing)
    result = office("ingest", str(tmp_path / "evidence"), "-r", "--case", CASE,
                    "--create-case", "--json")
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {paths[6]}: cannot open (fictional); nothing was stored (4 earlier files "
        "were ingested)\n"))
    printed = json.loads(result.stdout)
    assert [r["name"] for r in printed] == [p.name for p in paths[:4]]
    assert sorted(str(i["id"]) for i in _items(office)) == sorted(r["id"] for r in printed)
    assert len(_blob_files(office)) == 4


#: Run in a process of its own (no other test's threads or heap): the Python heap's peak
#: during `evault ingest FOLDER -r` of each folder given, output thrown away, the first run
#: only to import and warm up.
_PEAKS = """
import contextlib, json, os, sys, tracemalloc
from vault.cli import cli
from vault.service import intake

intake.BATCH_FILES = 50
intake.PARALLEL_MIN_FILES = 10**9  # every file in this process, whose heap is measured
vault, folders, peaks = sys.argv[1], sys.argv[2:], []
for folder in folders:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        tracemalloc.start()
        cli.main(["ingest", folder, "-r", "--case", "UA-2026-0042", "--create-case",
                  "--vault", vault], standalone_mode=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
print(json.dumps(peaks[1:]))
"""


def test_ingest_memory_does_not_grow_with_the_number_of_files(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """Rows, results and output a batch at a time: the peak of 4N files is that of N (it
    was ~500 bytes a file more here: every row, every result and the whole table held to
    the end). On SQLite only: what is measured is intake's own heap, not the database's."""
    office = sqlite_cli
    office.ok("identity", "create", "registry-office", "--org", "Fictional Ministry of Justice")
    n = 300
    for count in (n, 4 * n):
        for i in range(count):  # folders of 50 files, as a camera or a phone dump makes
            path = tmp_path / f"files-{count}" / f"d{i // 50:03d}" / f"photo-{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(i.to_bytes(4, "big") * 64)
    folders = [str(tmp_path / f"files-{c}") for c in (n, n, 4 * n)]
    done = subprocess.run([sys.executable, "-c", _PEAKS, str(office.vault), *folders],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "EVAULT_KEY_STORAGE": "file",
                               "EVAULT_PASSPHRASE": TEST_PASSPHRASE})
    assert done.returncode == 0, done.stderr
    small, large = json.loads(done.stdout)
    # Per file beyond N: nothing is kept but a folder's names while it is walked.
    assert (large - small) / (3 * n) < 100, (small, large)


# A local user who can write the tree races the two passes (the hostile review of the
# streamed ingest): what is stored must be what was validated, each file once.

_CHANGED = ("changed while this ingest ran (moved, renamed, linked or rewritten after it "
            "began); nothing of it was stored, ingest it again when it is stable")


def _two_folders(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "a" / "f.txt").write_bytes(b"the file f\n")
    (tree / "b" / "g.txt").write_bytes(b"the file g\n")
    return tree


def _around_store(monkeypatch: pytest.MonkeyPatch, name: str, *,
                  before: Callable[[], object] | None = None,
                  after: Callable[[], object] | None = None) -> None:
    """Run ``before``/``after`` once, around the storing of the file called ``name``."""
    from vault.service import intake

    real = intake.store_file
    done: list[bool] = []

    def store_file(blobs, row, *args, **kwargs):  # type: ignore[no-untyped-def]
        hit = row.path.name == name and not done
        if hit:
            done.append(True)
            if before:
                before()
        out = real(blobs, row, *args, **kwargs)
        if hit and after:
            after()
        return out

    monkeypatch.setattr(intake, "store_file", store_file)


def test_a_file_moved_while_ingest_runs_is_not_stored_twice(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a/f.txt is stored, then moved into b/, which is walked later: before the check of
    # ctime it came out as two items, exit 0.
    tree = _two_folders(tmp_path)
    _around_store(monkeypatch, "f.txt",
                  after=lambda: os.rename(tree / "a" / "f.txt", tree / "b" / "f.txt"))
    result = office("ingest", str(tree), "-r", "--case", CASE, "--create-case")
    assert (result.exit_code, result.stderr) == (1, f"evault: {tree / 'b' / 'f.txt'}: "
                                                    f"{_CHANGED}\n")
    assert _items(office) == [] and _blob_files(office) == []


def test_a_folder_swapped_for_a_link_before_its_file_is_opened_is_refused(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path validated is opened again by name: a folder above it swapped for a link to
    # a private folder holding a file of that name would have stored the private file.
    tree = _two_folders(tmp_path)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "g.txt").write_bytes(b"fictional private notes, never given to ingest\n")

    def swap() -> None:
        os.rename(tree / "b", tmp_path / "b-old")
        os.symlink(private, tree / "b")

    _around_store(monkeypatch, "g.txt", before=swap)
    result = office("ingest", str(tree), "-r", "--case", CASE, "--create-case")
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {tree / 'b' / 'g.txt'}: is not the file that was checked (replaced while "
        "this ingest ran); nothing was stored, ingest it again when it is stable\n"))
    assert _items(office) == [] and _blob_files(office) == []


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_file_swapped_for_a_fifo_or_device_is_refused_without_blocking(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    tree = _two_folders(tmp_path)
    target = tree / "b" / "g.txt"

    def swap() -> None:
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)  # opening it for reading would wait for a writer
        else:
            os.symlink("/dev/zero", target)  # never ends

    _around_store(monkeypatch, "g.txt", before=swap)
    args = ["--follow-symlinks"] if kind == "device" else []
    result = office("ingest", str(tree), "-r", "--case", CASE, "--create-case", *args)
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {target}: is not a regular file any more; nothing was stored, ingest it "
        "again when it is stable\n"))
    assert _items(office) == [] and _blob_files(office) == []


def test_a_file_rewritten_between_the_passes_is_refused_by_the_workers(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_workers: Path
) -> None:
    # Stored by a worker process: the same checks go with each file.
    from vault.service import intake

    paths = _files(tmp_path, **{f"f{n:02d}_bin": bytes([n]) * 10 for n in range(12)})
    real = intake.ingest_batches

    def between(*args, **kwargs):  # type: ignore[no-untyped-def]
        paths[7].write_bytes(bytes([99]) * 10)  # same inode, same size, other content
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "ingest_batches", between)
    result = office("ingest", str(tmp_path / "evidence"), "-r", "--case", CASE,
                    "--create-case")
    assert (result.exit_code, result.stderr) == (1, f"evault: {paths[7]}: {_CHANGED}\n")
    assert _items(office) == [] and _blob_files(office) == []


@SQLITE_ONLY
def test_the_last_batches_shrink_so_little_is_recorded_after_the_workers(
    office: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last batch is recorded alone, once every file is stored: a whole batch of 2,000
    files took ~0.5 s there. Batches now halve towards the end, down to TAIL_FILES; the
    gc.freeze made for the intake is undone after it."""
    import gc

    from vault.service import intake
    from vault.service.vaults import open_vault

    assert [intake._batch_limit(n) for n in (10_000, 4_000, 3_000, 1_000, 400, 10)] == [
        2000, 2000, 1500, 500, 250, 250]
    monkeypatch.setattr(intake, "BATCH_FILES", 8)
    monkeypatch.setattr(intake, "TAIL_FILES", 2)
    paths = _files(tmp_path, **{f"f{n:02d}_bin": bytes([n]) * 50 for n in range(20)})
    rows = intake.rows_from_paths(paths, intake.IntakeFields(case=CASE))
    vault = open_vault(office.vault)
    sizes: list[int] = []
    frozen = gc.get_freeze_count()
    intake.ingest_batches(vault, rows, lambda done: sizes.append(len(done)), create_case=True)
    vault.engine.dispose()
    assert sizes == [8, 6, 3, 2, 1]
    assert gc.get_freeze_count() == 0 and frozen == 0
    assert len(_items(office)) == 20
