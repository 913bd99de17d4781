"""Progress lines: drawn on a terminal only, throttled, ending at the total with a newline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Cli

from vault.progress import ProgressLine


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_is_throttled_shows_time_left_and_ends_at_the_total() -> None:
    clock, out = Clock(), io.StringIO()
    line = ProgressLine("open", stream=out, clock=clock)
    clock.now += 1.0
    line.update(1, 4, nbytes=(2_000_000, 8_000_000), what="ITEM-1")  # drawn: the first
    clock.now += 0.05
    line.update(2, 4, nbytes=(3_000_000, 8_000_000))  # not drawn: 50 ms after the last
    clock.now += 1.0
    line.update(3, 4, nbytes=(4_000_000, 8_000_000))  # drawn: 2 MB/s, 2 s left
    clock.now += 0.01
    line.update(4, 4, nbytes=(8_000_000, 8_000_000))  # drawn at once: the last figures
    line.finish()
    first = "evault: open 1/4 ITEM-1, 2.0 MB of 8.0 MB, 2.0 MB/s, ~3 s left"
    third = "evault: open 3/4, 4.0 MB of 8.0 MB, 2.0 MB/s, ~2 s left"
    last = "evault: open 4/4, 8.0 MB of 8.0 MB, 3.9 MB/s"
    # Each drawing covers what was longer before it with spaces.
    assert out.getvalue() == (
        f"\r{first}\r{third.ljust(len(first))}\r{last.ljust(len(third))}\n"
    )


def test_counts_alone_show_time_left_by_the_pace_so_far() -> None:
    clock, out = Clock(), io.StringIO()
    line = ProgressLine("custody verify", stream=out, clock=clock)
    clock.now += 2.0
    line.update(250, 1000)
    line.finish()
    line.finish()  # a second finish adds nothing
    assert out.getvalue() == "\revault: custody verify 250/1000, ~6 s left\n"


def test_nothing_is_written_when_nothing_was_drawn() -> None:
    out = io.StringIO()
    ProgressLine("export", stream=out, clock=Clock()).finish()
    assert out.getvalue() == ""


EVAULT = [sys.executable, "-c", "from vault.__main__ import main; main()"]


def _run(args: list[str], *, terminal: bool) -> tuple[bytes, bytes, int]:
    """Run evault with stderr on a pseudo-terminal (or a pipe) and stdout on a pipe."""
    if not terminal:
        done = subprocess.run([*EVAULT, *args], capture_output=True, check=False)
        return done.stdout, done.stderr, done.returncode
    leader, follower = os.openpty()
    with subprocess.Popen([*EVAULT, *args], stdout=subprocess.PIPE, stderr=follower,
                          stdin=subprocess.DEVNULL) as proc:
        os.close(follower)
        err = _read_terminal(leader)
        out = proc.stdout.read() if proc.stdout else b""
    os.close(leader)
    return out, err.replace(b"\r\n", b"\n"), proc.returncode


def _read_terminal(leader: int) -> bytes:
    """Everything a command wrote to the terminal whose leader side is ``leader``, until it
    ended."""
    data = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


def _files(cli: Cli, folder: Path, n: int) -> Path:
    cli.ok("identity", "create", "registry-office")
    folder.mkdir()
    for i in range(n):
        (folder / f"note-{i:02}.txt").write_bytes(b"fictional note %d\n" % i)
    return folder


def test_ingest_on_a_terminal_shows_files_stored_up_to_all_then_a_newline(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    folder = _files(sqlite_cli, tmp_path / "in", 12)
    args = ["ingest", str(folder), "--recursive", "--case", "UA-2026-0042", "--create-case",
            "--vault", str(sqlite_cli.vault)]
    out, err, code = _run(args, terminal=True)
    assert code == 0, err
    size = sum(len(b"fictional note %d\n" % i) for i in range(12))
    line, summary, end = err.decode().split("\n")
    assert line.startswith("\revault: ingest ")
    assert line.split("\r")[-1].rstrip(" ").startswith(
        f"evault: ingest 12/12, {size / 1e6:.1f} MB of {size / 1e6:.1f} MB, ")
    assert (summary, end) == (f"evault: ingested 12 file(s), {size} bytes", "")
    assert out.count(b"note-") == 12


def test_ingest_rows_on_the_same_terminal_start_below_the_progress_line(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """Rows are printed as each batch is committed, while the line may be on screen: on
    one terminal for both, the line ends first, as it did when the table came at the end."""
    folder = _files(sqlite_cli, tmp_path / "in", 12)
    leader, follower = os.openpty()
    with subprocess.Popen([*EVAULT, "ingest", str(folder), "--recursive", "--case",
                           "UA-2026-0042", "--create-case", "--vault", str(sqlite_cli.vault)],
                          stdout=follower, stderr=follower, stdin=subprocess.DEVNULL) as proc:
        os.close(follower)
        both = _read_terminal(leader)
    os.close(leader)
    assert proc.returncode == 0, both
    lines = both.decode().replace("\r\n", "\n").split("\n")
    assert lines[0].split("\r")[-1].startswith("evault: ingest 12/12, ")
    assert lines[1].split() == ["id", "case", "name", "size", "sha256"]
    assert [line.split()[2] for line in lines[2:14]] == [f"note-{i:02}.txt" for i in range(12)]
    assert lines[14:] == ["evault: ingested 12 file(s), 206 bytes", ""]


def test_ingest_of_one_large_file_shows_its_bytes_as_they_are_read(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    scan = tmp_path / "scan.bin"
    scan.write_bytes(b"fictional scan " * 1_000_000)  # 15 MB: several chunks of one file
    args = ["ingest", str(scan), "--case", "UA-2026-0042", "--create-case",
            "--vault", str(sqlite_cli.vault)]
    _, err, code = _run(args, terminal=True)
    assert code == 0, err
    line = err.decode().split("\n")[0]
    drawings = [d.rstrip(" ") for d in line.split("\r")[1:]]
    # Drawn while the one file is read (0 of 1 files, some MB), then at the end.
    assert drawings[0].startswith("evault: ingest 0/1, ")
    assert " of 15.0 MB, " in drawings[0]
    assert drawings[-1].startswith("evault: ingest 1/1, 15.0 MB of 15.0 MB, ")


def test_ingest_off_a_terminal_writes_no_progress_at_all(sqlite_cli: Cli, tmp_path: Path) -> None:
    folder = _files(sqlite_cli, tmp_path / "in", 12)
    args = ["ingest", str(folder), "--recursive", "--case", "UA-2026-0042", "--create-case",
            "--vault", str(sqlite_cli.vault)]
    _, err, code = _run(args, terminal=False)
    assert code == 0, err
    size = sum(len(b"fictional note %d\n" % i) for i in range(12))
    assert err == f"evault: ingested 12 file(s), {size} bytes\n".encode()


def test_custody_verify_on_a_terminal_counts_events_up_to_all(sqlite_cli: Cli,
                                                               tmp_path: Path) -> None:
    folder = _files(sqlite_cli, tmp_path / "in", 3)
    sqlite_cli.ok("ingest", str(folder), "--recursive", "--case", "UA-2026-0042",
                  "--create-case")
    events = int(sqlite_cli.ok("custody", "verify").stdout.split()[1])
    out, err, code = _run(["custody", "verify", "--vault", str(sqlite_cli.vault)],
                          terminal=True)
    assert code == 0, err
    assert err.decode().split("\r")[-1].rstrip(" ") == (
        f"evault: custody verify {events}/{events}\n")
    assert out.decode().startswith(f"OK: {events} events")
    _, err, code = _run(["custody", "verify", "--vault", str(sqlite_cli.vault)], terminal=False)
    assert (err, code) == (b"", 0)


def test_items_export_on_a_terminal_shows_bytes_written_up_to_the_size(sqlite_cli: Cli,
                                                                       tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    evidence = tmp_path / "scan.bin"
    evidence.write_bytes(b"fictional scan " * 200_000)  # 3.0 MB: three chunks
    out = sqlite_cli.ok("ingest", str(evidence), "--case", "UA-2026-0042", "--create-case",
                        "--json").stdout
    item_id = json.loads(out)[0]["id"]
    args = ["items", "export", item_id, "-o", str(tmp_path / "copy.bin"), "--reason",
            "fictional examination", "--vault", str(sqlite_cli.vault)]
    _, err, code = _run(args, terminal=True)
    assert code == 0, err
    line, message, end = err.decode().split("\n")
    assert line.split("\r")[-1].startswith("evault: items export, 3.0 MB of 3.0 MB, ")
    assert message == f"evault: exported item {item_id} to {tmp_path / 'copy.bin'}; " \
        "the export is in the custody log"
    assert end == ""
    _, err, code = _run([*args, "--force"], terminal=False)
    assert (code, err) == (0, (message + "\n").encode())


def _package(tmp_path: Path) -> tuple[Cli, Path, int, int]:
    """An ICC-OTP vault and a package for it: (its Cli, the package, payload size, item bytes)."""
    from test_ack_forgeries import opening_world

    from vault.formats.package import read_package

    world = opening_world(tmp_path)
    items = len(b"fictional statement\n") + 256 * 300
    return world.icc, world.package, read_package(world.package).payload_size, items


def test_open_on_a_terminal_shows_verifying_then_storing_up_to_all(tmp_path: Path) -> None:
    icc, package, _, items = _package(tmp_path)
    args = ["open", str(package), "--out", str(tmp_path / "received"), "--vault", str(icc.vault)]
    out, err, code = _run(args, terminal=True)
    assert code == 0, err
    line, message, end = err.decode().split("\n")
    drawings = [d.rstrip(" ") for d in line.split("\r")[1:]]
    # The first drawing is the payload's first read; the last is the stored total at once.
    assert drawings[0].startswith("evault: open 1/2 verifying, ")
    assert drawings[-1].startswith(f"evault: open 2/2 storing, {items / 1e6:.1f} MB of "
                                   f"{items / 1e6:.1f} MB, ")
    assert message.startswith("evault: opened package PKG-")
    assert end == ""
    assert out.count(b"statement W-1.txt") == 1


def test_verify_as_on_a_terminal_shows_the_payload_read_then_the_findings(tmp_path: Path) -> None:
    icc, package, payload, _ = _package(tmp_path)
    args = ["verify", str(package), "--as", "icc-officer", "--vault", str(icc.vault)]
    out, err, code = _run(args, terminal=True)
    assert code == 0, err
    line, end = err.decode().split("\n")
    # The payload is read twice: for its digest, then (only if it matched) to decrypt it.
    assert line.split("\r")[-1].rstrip(" ").startswith(
        f"evault: verify 1/1, {2 * payload / 1e6:.1f} MB of {2 * payload / 1e6:.1f} MB, ")
    assert end == ""
    assert out.decode().startswith(f"OK: {package} (package PKG-")
    _, err, code = _run(args, terminal=False)
    assert (err, code) == (b"", 0)
