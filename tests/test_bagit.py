"""BagIt bags as streamed tars: bagit-python accepts what we write, names and digests come
back unchanged, and every kind of tampering is refused with the right kind of error."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from conftest import require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.errors import UsageError, VaultError, VerificationError
from vault.formats.bagit import (
    BAGIT_TXT,
    BagError,
    BagSummary,
    BagWriter,
    decode_manifest_path,
    encode_manifest_path,
    read_bag,
)
from vault.formats.safetar import Limits, UnsafeArchiveError

BAGGING_DATE = date(2024, 5, 1)
INFO = [("Source-Organization", "Fictional Ministry"), ("External-Identifier", "P-2024-001")]

# Names bagit-python 1.9 validates: CR, LF, spaces, non-ASCII.
INTEROP_PAYLOAD = {
    "Zeugenaussage – Übersicht.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 4,
    "line\nbreak.txt": b"first line\nsecond line\n",
    "carriage\rreturn.txt": b"cr",
    "folder with spaces/nested note.txt": b"nested",
    "empty.bin": b"",
}
# Names with '%', which RFC 8493 encodes as %25 and bagit-python 1.9 does not decode.
PERCENT_PAYLOAD = {
    "résumé 100%.txt": b"percent",
    "already%0Aencoded%25.txt": b"looks encoded but is literal",
}
PAYLOAD = {**INTEROP_PAYLOAD, **PERCENT_PAYLOAD}
ITEMS_JSON = b'[{"item": "I-1"}]'


def make_bag(
    payload: Mapping[str, bytes] = PAYLOAD, *, root: str = "bag"
) -> tuple[bytes, BagSummary]:
    out = io.BytesIO()
    writer = BagWriter(out, root, bagging_date=BAGGING_DATE)
    for name, data in payload.items():
        writer.add_payload(name, io.BytesIO(data), len(data))
    writer.add_tag_file("evault/items.json", ITEMS_JSON)
    summary = writer.finish(INFO)
    statement = f"tagmanifest {summary.tagmanifest_sha256}\n".encode()
    writer.add_tag_file("evault/statement.txt", statement, in_tagmanifest=False)
    writer.close()
    return out.getvalue(), summary


BAG, SUMMARY = make_bag()


def bagit_py() -> str:
    beside = Path(sys.executable).parent / "bagit.py"
    return str(beside) if beside.exists() else require_tool("bagit.py")


def validate_with_bagit_py(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, bagit_py(), "--validate", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def extract_with_tarfile(data: bytes, dest: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="data")
    return dest / "bag"


def rewrite(
    data: bytes,
    *,
    edit: Mapping[str, Callable[[bytes], bytes]] | None = None,
    add: Sequence[tuple[str, bytes]] = (),
    first: Sequence[str] = (),
) -> bytes:
    """The bag tar with members edited (by path in the bag), added, or moved to the front."""
    edit = edit or {}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for info in tf.getmembers():
            rel = info.name.partition("/")[2]
            content = tf.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if content is not None and rel in edit:
                content = edit[rel](content)
                info.size = len(content)
            members.append((info, content))
    for rel, content in add:
        info = tarfile.TarInfo(f"bag/{rel}")
        info.size = len(content)
        members.append((info, content))
    members.sort(key=lambda m: m[0].name.partition("/")[2] not in first)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, content in members:
            tf.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def read(data: bytes, **kwargs: object) -> None:
    read_bag(io.BytesIO(data), root="bag", **kwargs)  # type: ignore[arg-type]


# --- interoperability ------------------------------------------------------------------------


@pytest.mark.interop
def test_bagit_python_validates_the_bag(tmp_path: Path) -> None:
    data, _ = make_bag(INTEROP_PAYLOAD)
    result = validate_with_bagit_py(extract_with_tarfile(data, tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.interop
@pytest.mark.xfail(
    strict=True,
    reason="bagit-python 1.9 does not decode %25 in manifests (LibraryOfCongress/bagit-python#157)",
)
def test_bagit_python_validates_names_with_percent(tmp_path: Path) -> None:
    data, _ = make_bag(PAYLOAD)
    result = validate_with_bagit_py(extract_with_tarfile(data, tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.interop
def test_read_bag_extracts_a_folder_bagit_python_validates(tmp_path: Path) -> None:
    data, _ = make_bag(INTEROP_PAYLOAD)
    read_bag(io.BytesIO(data), root="bag", extract_to=tmp_path)
    result = validate_with_bagit_py(tmp_path)
    assert result.returncode == 0, result.stderr


# --- round trip ------------------------------------------------------------------------------


def test_names_and_digests_come_back_unchanged() -> None:
    contents = read_bag(io.BytesIO(BAG), root="bag")
    expected = {f"data/{name}": hashlib.sha256(data).hexdigest() for name, data in PAYLOAD.items()}
    assert contents.manifest == expected == SUMMARY.manifest
    assert contents.payload_bytes == sum(len(d) for d in PAYLOAD.values())
    assert SUMMARY.payload_oxum == f"{contents.payload_bytes}.{len(PAYLOAD)}"
    assert contents.info == [
        ("Bagging-Date", "2024-05-01"),
        ("Payload-Oxum", SUMMARY.payload_oxum),
        *INFO,
    ]
    assert contents.root == "bag"
    assert contents.tag_files["evault/items.json"] == ITEMS_JSON
    assert contents.tag_files["bagit.txt"] == BAGIT_TXT
    assert contents.tagmanifest_sha256 == SUMMARY.tagmanifest_sha256
    assert hashlib.sha256(contents.tag_files["tagmanifest-sha256.txt"]).hexdigest() == (
        SUMMARY.tagmanifest_sha256
    )
    assert "evault/items.json" in contents.tagmanifest
    assert "evault/statement.txt" not in contents.tagmanifest
    assert "evault/statement.txt" in contents.tag_files


def test_root_is_found_when_not_given() -> None:
    assert read_bag(io.BytesIO(BAG), root=None).root == "bag"


def test_extraction_writes_exact_names_and_bytes(tmp_path: Path) -> None:
    read_bag(io.BytesIO(BAG), root="bag", extract_to=tmp_path)
    for name, data in PAYLOAD.items():
        assert (tmp_path / "data" / name).read_bytes() == data
    assert (tmp_path / "evault" / "items.json").read_bytes() == ITEMS_JSON


def test_manifest_encodes_percent_cr_lf() -> None:
    manifest = read_bag(io.BytesIO(BAG), root="bag").tag_files["manifest-sha256.txt"].decode()
    assert "data/line%0Abreak.txt" in manifest
    assert "data/carriage%0Dreturn.txt" in manifest
    assert "data/résumé 100%25.txt" in manifest
    assert "data/already%250Aencoded%2525.txt" in manifest


def test_output_is_deterministic() -> None:
    assert make_bag()[0] == BAG


def test_members_have_fixed_metadata() -> None:
    midnight = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
    with tarfile.open(fileobj=io.BytesIO(BAG)) as tf:
        members = tf.getmembers()
        assert tf.extractfile("bag/bagit.txt").read() == BAGIT_TXT  # type: ignore[union-attr]
    assert [m.name for m in members[:3]] == ["bag", "bag/bagit.txt", "bag/data"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", midnight)
        assert m.mode == (0o755 if m.isdir() else 0o644)
    assert members[-1].name == "bag/evault/statement.txt"


class _WriteOnly(io.RawIOBase):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        data = bytes(b)
        self.chunks.append(data)
        return len(data)


def test_writer_needs_no_seek_and_leaves_out_open() -> None:
    out = _WriteOnly()
    writer = BagWriter(out, "bag", bagging_date=BAGGING_DATE)  # type: ignore[arg-type]
    writer.add_payload("a.txt", io.BytesIO(b"abc"), 3)
    writer.finish([])
    writer.close()
    assert not out.closed
    read_bag(io.BytesIO(b"".join(out.chunks)), root="bag")


class _Lazy(io.RawIOBase):
    """``size`` bytes made up on demand, in short reads, never held whole."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left, 40_000)
        buffer[:n] = b"\xa5" * n
        self.left -= n
        return n


def test_large_payload_streams_in_flat_memory(tmp_path: Path) -> None:
    size = 48 << 20
    path = tmp_path / "bag.tar"
    tracemalloc.start()
    try:
        with path.open("wb") as out:
            writer = BagWriter(out, "bag", bagging_date=BAGGING_DATE)
            writer.add_payload("disk.img", _Lazy(size), size)  # type: ignore[arg-type]
            writer.finish([])
            writer.close()
        with path.open("rb") as src:
            contents = read_bag(src, root="bag")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert contents.payload_bytes == size
    assert peak < 4 << 20, f"peak {peak} bytes"


# --- writer refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["", "/abs", "a//b", "./a", "a/./b", "../a", "a/..", "a\x00b", "a/", "lone\udce9"]
)
def test_writer_refuses_bad_payload_paths(path: str) -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    with pytest.raises(UsageError):
        writer.add_payload(path, io.BytesIO(b"x"), 1)


def test_writer_refuses_duplicates_and_file_folder_clashes() -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    writer.add_payload("a/b", io.BytesIO(b"x"), 1)
    for path in ("a/b", "a", "a/b/c"):
        with pytest.raises(UsageError):
            writer.add_payload(path, io.BytesIO(b"x"), 1)


@pytest.mark.parametrize("source", [b"short", b"much too long"])
def test_writer_refuses_a_source_of_the_wrong_size(source: bytes) -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    with pytest.raises(VerificationError):
        writer.add_payload("a.txt", io.BytesIO(source), 8)
    with pytest.raises(RuntimeError):
        writer.finish([])


@pytest.mark.parametrize(
    "info",
    [
        [("Label", "two\nlines")],
        [("Label", "carriage\rreturn")],
        [("Bad:Label", "x")],
        [(" Padded", "x")],
        [("", "x")],
        [("Payload-Oxum", "1.1")],
        [("bagging-date", "2024-01-01")],
    ],
)
def test_writer_refuses_bad_bag_info(info: list[tuple[str, str]]) -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    with pytest.raises(UsageError):
        writer.finish(info)


@pytest.mark.parametrize(
    "path",
    [
        "bagit.txt",
        "bag-info.txt",
        "manifest-md5.txt",
        "tagmanifest-sha256.txt",
        "fetch.txt",
        "data/x",
        "data",
        " leading.txt",
    ],
)
def test_writer_refuses_reserved_tag_names(path: str) -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    with pytest.raises(UsageError):
        writer.add_tag_file(path, b"x")


def test_writer_enforces_the_call_order() -> None:
    writer = BagWriter(io.BytesIO(), "bag", bagging_date=BAGGING_DATE)
    with pytest.raises(RuntimeError):
        writer.close()
    writer.finish([])
    with pytest.raises(RuntimeError):
        writer.add_payload("late.txt", io.BytesIO(b"x"), 1)
    with pytest.raises(RuntimeError):
        writer.add_tag_file("evault/late.json", b"{}")
    with pytest.raises(RuntimeError):
        writer.finish([])
    writer.add_tag_file("evault/statement.txt", b"ok", in_tagmanifest=False)
    writer.close()


# --- tampering -------------------------------------------------------------------------------


def _flip_payload_byte(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        member = tf.getmember("bag/data/Zeugenaussage – Übersicht.pdf")
    flipped = bytearray(data)
    flipped[member.offset_data + 100] ^= 0x01
    return bytes(flipped)


def _drop_line(name: str) -> Callable[[bytes], bytes]:
    encoded = encode_manifest_path(name).encode()
    return lambda text: b"".join(
        line for line in text.splitlines(keepends=True) if not line.rstrip(b"\n").endswith(encoded)
    )


TAMPERED: dict[str, tuple[Callable[[], bytes], type[VaultError], str]] = {
    "flipped payload byte": (
        lambda: _flip_payload_byte(BAG),
        BagError,
        "data/Zeugenaussage – Übersicht.pdf",
    ),
    "manifest line removed": (
        lambda: rewrite(BAG, edit={"manifest-sha256.txt": _drop_line("data/empty.bin")}),
        BagError,
        "data/empty.bin",
    ),
    "extra payload file": (
        lambda: rewrite(BAG, add=[("data/planted.exe", b"MZ")]),
        BagError,
        "data/planted.exe",
    ),
    "payload-oxum lower than actual": (
        lambda: rewrite(
            BAG,
            edit={
                "bag-info.txt": lambda t: t.replace(
                    f"Payload-Oxum: {SUMMARY.payload_oxum}".encode(),
                    f"Payload-Oxum: {int(SUMMARY.payload_oxum.split('.')[0]) - 1}."
                    f"{len(PAYLOAD)}".encode(),
                )
            },
        ),
        BagError,
        "Payload-Oxum",
    ),
    "bagit.txt version 0.97": (
        lambda: rewrite(BAG, edit={"bagit.txt": lambda t: t.replace(b"1.0", b"0.97")}),
        BagError,
        "bagit.txt",
    ),
    "tagmanifest mismatch": (
        lambda: rewrite(BAG, edit={"evault/items.json": lambda t: t.replace(b"I-1", b"I-2")}),
        BagError,
        "evault/items.json",
    ),
    "tagmanifest missing": (
        lambda: _without(BAG, "bag/tagmanifest-sha256.txt"),
        BagError,
        "tagmanifest-sha256.txt",
    ),
    "tagmanifest does not cover the manifest": (
        lambda: rewrite(BAG, edit={"tagmanifest-sha256.txt": _drop_line("manifest-sha256.txt")}),
        BagError,
        "manifest-sha256.txt",
    ),
    "payload member outside the bag folder": (
        lambda: rewrite(BAG, add=[("../escape", b"x")]),
        UnsafeArchiveError,
        "",
    ),
    "truncated stream": (lambda: BAG[: len(BAG) // 2], UnsafeArchiveError, ""),
}


def _without(data: bytes, name: str) -> bytes:
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for info in src.getmembers():
            if info.name != name:
                dst.addfile(info, src.extractfile(info) if info.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampering_is_refused(case: str, tmp_path: Path) -> None:
    make, kind, mentioned = TAMPERED[case]
    with pytest.raises(VerificationError) as caught:
        read(make(), extract_to=tmp_path)
    assert type(caught.value) is kind
    if isinstance(caught.value, BagError):
        assert any(mentioned in problem for problem in caught.value.problems)
    assert list(tmp_path.iterdir()) == []


def test_every_problem_is_listed() -> None:
    tampered = rewrite(
        _flip_payload_byte(BAG),
        edit={
            "manifest-sha256.txt": _drop_line("data/empty.bin"),
            "bagit.txt": lambda t: t.replace(b"1.0", b"0.97"),
        },
        add=[("data/planted.exe", b"MZ")],
        # ahead of bag-info.txt, or the early Payload-Oxum bound would stop the read there
        first=["data/planted.exe"],
    )
    with pytest.raises(BagError) as caught:
        read(tampered)
    problems = "\n".join(caught.value.problems)
    for mentioned in (
        "bagit.txt",
        "data/Zeugenaussage – Übersicht.pdf",
        "data/empty.bin",
        "data/planted.exe",
        "Payload-Oxum",
        "manifest-sha256.txt",
    ):
        assert mentioned in problems
    assert "\n" not in str(caught.value)


class _StopAfter(io.RawIOBase):
    """The bytes of a bag, after which reading more is a test failure."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.src = io.BytesIO(data)
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.src.tell() >= self.limit:
            raise AssertionError("read past the point where Payload-Oxum was exceeded")
        return self.src.readinto(buffer)


def test_payload_beyond_an_early_payload_oxum_is_refused_at_once() -> None:
    lowered = rewrite(
        BAG,
        edit={"bag-info.txt": lambda t: t.replace(SUMMARY.payload_oxum.encode(), b"10.1")},
        first=["bagit.txt", "bag-info.txt"],
    )
    with tarfile.open(fileobj=io.BytesIO(lowered)) as tf:
        payload = [m for m in tf.getmembers() if m.name.startswith("bag/data/") and m.isfile()]
    # Bigger than Oxum's 10 bytes already; the data after its header must not be needed.
    assert payload[0].size > 10
    stop = payload[0].offset_data + 20 * 512
    with pytest.raises(BagError):
        read_bag(_StopAfter(lowered, stop), root="bag")  # type: ignore[arg-type]


def test_unsupported_manifest_algorithms_are_reported() -> None:
    tampered = rewrite(BAG, add=[("manifest-md5.txt", b"")])
    with pytest.raises(BagError) as caught:
        read(tampered)
    assert any("manifest-md5.txt" in p for p in caught.value.problems)


def test_wrong_root_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError):
        read_bag(io.BytesIO(BAG), root="other")


def test_oversized_tag_file_is_refused() -> None:
    tampered = rewrite(BAG, add=[("evault/huge.json", b" " * ((16 << 20) + 1))])
    with pytest.raises(BagError):
        read(tampered)


def test_limits_apply_to_bags() -> None:
    with pytest.raises(UnsafeArchiveError):
        read(BAG, limits=Limits(max_members=5))


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_manifest_path_encoding_round_trips(path: str) -> None:
    encoded = encode_manifest_path(path)
    assert decode_manifest_path(encoded) == path
    assert "\n" not in encoded and "\r" not in encoded
    if not any(c in path for c in "%\r\n"):
        assert encoded == path


def test_decoding_accepts_lowercase_and_leaves_other_escapes() -> None:
    assert decode_manifest_path("a%0ab%0dc%25d%20e%") == "a\nb\rc%d%20e%"


_NAME_PART = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(_NAME_PART, min_size=1, max_size=3).map("/".join), max_size=4, unique=True)
)
def test_any_payload_names_round_trip(names: list[str]) -> None:
    leaves = [n for n in names if not any(o.startswith(n + "/") for o in names)]
    payload = {name: name.encode() for name in leaves}
    data, summary = make_bag(payload)
    contents = read_bag(io.BytesIO(data), root="bag")
    assert contents.manifest == summary.manifest
    assert set(contents.manifest) == {f"data/{n}" for n in payload}


SMALL_BAG, _ = make_bag({"a.txt": b"alpha", "b dir/%b\n.txt": b"beta"})


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.integers(0, len(SMALL_BAG) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.one_of(st.none(), st.integers(0, len(SMALL_BAG))),
)
def test_mutated_bags_fail_only_with_vault_errors(
    mutations: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(SMALL_BAG)
    for position, value in mutations:
        data[position] = value
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as folder:
        dest = Path(folder)
        try:
            read_bag(io.BytesIO(bytes(data)), root=None, extract_to=dest)
        except VaultError:
            assert list(dest.iterdir()) == []


SIZED_NAMES = {
    "note.txt": b"hello",
    "empty.bin": b"",
    "a/b/c/deep.txt": b"x" * 513,
    "Фото з місця події.jpg": b"\xff\xd8" * 300,  # non-ASCII: a pax path record
    ("long-" * 30) + ".bin": b"y" * 1024,  # over 100 bytes: a pax path record
    "100% sure\nline.txt": b"z" * 511,
}


def test_a_sizing_writer_counts_what_the_real_bag_writes() -> None:
    # A package states its payload's size before the payload: the bag is sized first by
    # the same calls on a writer that counts, then written.
    def calls(bag: BagWriter, sizing: bool) -> int:
        for name, data in SIZED_NAMES.items():
            if sizing:
                bag.count_payload(name, len(data))
            else:
                bag.add_payload(name, io.BytesIO(data), len(data))
        bag.add_tag_file("evault/items.json", b"[" + b" " * 3000 + b"]")
        summary = bag.finish([("Source-Organization", "Registry Office"),
                              ("EVault-Purpose", "Fictional test, with ü")])
        bag.add_tag_file("evault/statement.json", summary.tagmanifest_sha256.encode(),
                         in_tagmanifest=False)
        bag.close()
        return bag.size

    out = io.BytesIO()
    written = calls(BagWriter(out, "PKG-0123456789AB", bagging_date=date(2026, 12, 7)), False)
    sized = calls(BagWriter.sizing("PKG-0123456789AB", bagging_date=date(2026, 12, 7)), True)
    assert written == len(out.getvalue()) == sized


def test_a_sizing_writer_and_a_real_one_do_not_mix() -> None:
    sizer = BagWriter.sizing("bag", bagging_date=date(2026, 12, 7))
    with pytest.raises(RuntimeError, match="sizing"):
        sizer.add_payload("a.txt", io.BytesIO(b"a"), 1)
    real = BagWriter(io.BytesIO(), "bag", bagging_date=date(2026, 12, 7))
    with pytest.raises(RuntimeError, match="sizing"):
        real.count_payload("a.txt", 1)
    with pytest.raises(UsageError, match="absolute"):
        sizer.count_payload("/etc/passwd", 1)
    with pytest.raises(UsageError, match="size"):
        sizer.count_payload("a.txt", -1)
