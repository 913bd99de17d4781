"""Hostile tar streams: every one is refused with UnsafeArchiveError and writes nothing outside
the extraction folder (nor leaves anything inside it)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from vault.errors import VaultError, VerificationError
from vault.formats.safetar import (
    Extraction,
    Limits,
    UnsafeArchiveError,
    extract_all,
    iter_safe_members,
    open_tar_stream,
    safe_join,
)

Member = tuple[tarfile.TarInfo, "bytes | None"]


def regular(name: str, data: bytes = b"evidence") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def folder(name: str) -> Member:
    return special(name, tarfile.DIRTYPE)


def tar_of(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def snapshot(top: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(top.rglob("*"))
    }


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """tmp/outer/extract, next to a file that must stay untouched."""
    outer = tmp_path / "outer"
    target = outer / "extract"
    target.mkdir(parents=True)
    (outer / "x").write_bytes(b"original")
    return target


def refuse(
    data: bytes, dest: Path, *, root: str | None = None, limits: Limits | None = None
) -> None:
    """Extraction must fail with UnsafeArchiveError and change nothing on disk."""
    top = dest.parent.parent
    before = snapshot(top)
    with pytest.raises(UnsafeArchiveError):
        extract_all(io.BytesIO(data), dest, root=root, limits=limits or Limits())
    assert snapshot(top) == before
    assert list(dest.iterdir()) == []


HOSTILE: dict[str, Callable[[], bytes]] = {
    "parent component": lambda: tar_of(regular("../x")),
    "absolute name": lambda: tar_of(regular("/etc/x")),
    "escape after normalising": lambda: tar_of(regular("data/../../x")),
    "parent inside name": lambda: tar_of(regular("bag/data/..")),
    "symlink": lambda: tar_of(special("link", tarfile.SYMTYPE, "/etc/passwd")),
    "symlink then write through it": lambda: tar_of(
        special("link", tarfile.SYMTYPE, ".."), regular("link/x")
    ),
    "hardlink": lambda: tar_of(regular("a"), special("b", tarfile.LNKTYPE, "a")),
    "hardlink outside": lambda: tar_of(special("b", tarfile.LNKTYPE, "/etc/passwd")),
    "char device": lambda: tar_of(special("tty", tarfile.CHRTYPE)),
    "block device": lambda: tar_of(special("sda", tarfile.BLKTYPE)),
    "fifo": lambda: tar_of(special("pipe", tarfile.FIFOTYPE)),
    "duplicate name": lambda: tar_of(regular("a.txt"), regular("a.txt", b"other")),
    "duplicate after normalising": lambda: tar_of(regular("d/a.txt"), regular("./d//a.txt")),
    "file under a file": lambda: tar_of(regular("a"), regular("a/b")),
    "file named like a folder": lambda: tar_of(folder("a"), regular("a")),
    "folder named like a file": lambda: tar_of(regular("a"), folder("a")),
    "non-utf-8 name (gnu)": lambda: tar_of(regular("caf\udce9.txt"), fmt=tarfile.GNU_FORMAT),
    "non-utf-8 name (pax)": lambda: tar_of(regular("caf\udce9.txt")),
    "nul in name": lambda: _with_pax(regular("placeholder"), {"path": "a\x00b"}),
    "oversized pax header": lambda: _with_pax(regular("a"), {"comment": "x" * 70_000}),
    "gnu sparse member": lambda: tar_of(
        special("sparse", tarfile.GNUTYPE_SPARSE), fmt=tarfile.GNU_FORMAT
    ),
    "data after the end": lambda: tar_of(regular("a")) + b"trailing garbage",
    "truncated member": lambda: tar_of(regular("a", b"z" * 5000))[:2048],
    "no end-of-archive marker": lambda: tar_of(regular("a"))[:1024],
    "corrupt header mid-stream": lambda: _corrupt_second_header(),
    "chain of extension headers": lambda: _pax_chain(2000),
    "empty stream": lambda: b"",
    "not a tar": lambda: b"PK\x03\x04 this is a zip" * 40,
}


def _with_pax(member: Member, records: dict[str, str]) -> bytes:
    info, data = member
    info.pax_headers = records
    return tar_of((info, data))


def _corrupt_second_header() -> bytes:
    data = bytearray(tar_of(regular("a", b"1" * 10), regular("b", b"2" * 10)))
    data[1024 + 10] ^= 0xFF  # inside b's header: its checksum no longer matches
    return bytes(data)


def _pax_chain(count: int) -> bytes:
    info, _ = regular("a")
    one = info.tobuf(tarfile.PAX_FORMAT)
    header = tarfile.TarInfo("pad")
    header.pax_headers = {"comment": "x"}
    pax = header.tobuf(tarfile.PAX_FORMAT)[:1024]  # just the extended header and its data
    return pax * count + one + b"evidence".ljust(512, b"\0") + b"\0" * 1024


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(case: str, dest: Path) -> None:
    refuse(HOSTILE[case](), dest)


def test_member_outside_root_is_refused(dest: Path) -> None:
    refuse(tar_of(regular("bag/a"), regular("other/b")), dest, root="bag")


def test_file_named_as_root_is_refused(dest: Path) -> None:
    refuse(tar_of(regular("bag")), dest, root="bag")


def test_member_larger_than_limit_is_refused(dest: Path) -> None:
    refuse(tar_of(regular("big", b"x" * 2000)), dest, limits=Limits(max_member_size=1000))


def test_total_larger_than_limit_is_refused(dest: Path) -> None:
    data = tar_of(regular("a", b"x" * 60), regular("b", b"y" * 60))
    refuse(data, dest, limits=Limits(max_total_size=100))


def test_too_many_members_are_refused(dest: Path) -> None:
    data = tar_of(*(regular(f"f{i}") for i in range(4)))
    refuse(data, dest, limits=Limits(max_members=3))


def test_long_names_are_refused(dest: Path) -> None:
    refuse(
        tar_of(regular("a/" * 300 + "b")),
        dest,
        limits=Limits(max_name_length=512, max_header_size=4096),
    )
    refuse(tar_of(regular("n" * 300)), dest)


class _Bomb(io.RawIOBase):
    """A header declaring a huge member, then endless zeros; reading far into it is a failure."""

    def __init__(self, header: bytes) -> None:
        self._header = header
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = len(buffer)
        if self.consumed > (1 << 20):
            raise AssertionError("the declared size was not refused before reading the data")
        chunk = self._header[self.consumed : self.consumed + n].ljust(n, b"\0")
        buffer[:n] = chunk
        self.consumed += n
        return n


def test_declared_size_is_refused_before_reading(dest: Path) -> None:
    info = tarfile.TarInfo("bomb")
    info.size = 1 << 50
    bomb = _Bomb(info.tobuf(tarfile.PAX_FORMAT))
    with pytest.raises(UnsafeArchiveError):
        extract_all(bomb, dest, root=None, limits=Limits())  # type: ignore[arg-type]
    assert list(dest.iterdir()) == []


def test_refusal_removes_what_was_already_written(dest: Path) -> None:
    data = tar_of(regular("ok/first.txt"), regular("ok/second.txt"), regular("../escape"))
    refuse(data, dest)


def test_existing_files_are_never_overwritten(dest: Path) -> None:
    (dest / "a.txt").write_bytes(b"keep me")
    with pytest.raises(UnsafeArchiveError):
        extract_all(io.BytesIO(tar_of(regular("a.txt"))), dest, root=None, limits=Limits())
    assert (dest / "a.txt").read_bytes() == b"keep me"


def test_symlink_planted_in_destination_is_not_followed(dest: Path) -> None:
    outside = dest.parent / "elsewhere"
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(UnsafeArchiveError):
        extract_all(io.BytesIO(tar_of(regular("link/x"))), dest, root=None, limits=Limits())
    assert list(outside.iterdir()) == []


def test_valid_archive_extracts_names_unchanged(dest: Path) -> None:
    names = ["bag/data/Zeugenaussage – Übersicht.pdf", "bag/data/line\nbreak 100%.txt", "bag/a b/c"]
    data = tar_of(folder("bag"), *(regular(name, name.encode()) for name in names))
    written = extract_all(io.BytesIO(data), dest, root="bag", limits=Limits())
    assert written == [name.removeprefix("bag/") for name in names]
    for rel in written:
        assert (dest / rel).read_bytes() == f"bag/{rel}".encode()


@pytest.mark.skipif(os.name != "posix", reason="posix permission bits")
def test_extracted_files_and_folders_are_private(dest: Path) -> None:
    extract_all(io.BytesIO(tar_of(regular("sub/a.txt"))), dest, root=None, limits=Limits())
    assert stat.S_IMODE((dest / "sub").stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "sub" / "a.txt").stat().st_mode) == 0o600


def test_iter_safe_members_yields_files_with_normalised_paths() -> None:
    data = tar_of(folder("bag"), folder("bag/data"), regular("bag/./data//x"), regular("bag/y"))
    with open_tar_stream(io.BytesIO(data), limits=Limits()) as tf:
        paths = [path for _, path in iter_safe_members(tf, root="bag", limits=Limits())]
    assert paths == ["data/x", "y"]


def test_iter_safe_members_needs_the_guarded_opener() -> None:
    with (
        tarfile.open(fileobj=io.BytesIO(tar_of(regular("a"))), mode="r|") as tf,
        pytest.raises(ValueError),
    ):
        list(iter_safe_members(tf, root=None, limits=Limits()))


@pytest.mark.parametrize(
    "rel", ["", "../x", "a/../../x", "/abs", "a//b", "./a", "a/.", "a\x00b", "a/"]
)
def test_safe_join_refuses_escapes(rel: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        safe_join(tmp_path, rel)


def test_safe_join_keeps_ordinary_paths(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a b/résumé 100%.txt") == tmp_path / "a b" / "résumé 100%.txt"


def test_extraction_needs_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(VaultError) as caught:
        Extraction(tmp_path / "missing")
    assert not isinstance(caught.value, VerificationError)


@pytest.mark.parametrize("field", ["max_members", "max_member_size", "max_header_size"])
def test_limits_validate_on_construction(field: str) -> None:
    with pytest.raises(ValueError):
        Limits(**{field: 0})
