"""The age payload (STREAM: ChaCha20-Poly1305 over 64 KiB chunks, counter nonces with a
last-chunk flag) and the file objects that put header and payload together: :class:`AgeWriter`,
:class:`AgeReader`, :func:`encrypt`, :func:`decrypt` (cf. filippo.io/age ``internal/stream``
and ``age.go``).

Its one job is the payload and the public file objects over it. It is the top of the package:
it may import every other module of :mod:`vault.crypto.age`, :mod:`vault.errors` and
``cryptography``; nothing in the package imports it but ``__init__``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vault.crypto.age.armor import _ArmorSink, _open_source
from vault.crypto.age.byteio import _fill_from, _Lookahead, _RawSink, _write_all
from vault.crypto.age.errors import AgeError, AgeHeaderError, AgePayloadError
from vault.crypto.age.header import _encode_header, _parse_header
from vault.crypto.age.keys import AgeIdentity, AgeRecipient, _unwrap_file_key
from vault.crypto.age.primitives import FILE_KEY_SIZE, TAG_SIZE, Rng, _hkdf
from vault.errors import UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


CHUNK_SIZE = 64 * 1024
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
# 16 chunks a round trip to the source or sink: large enough that syscalls and Python
# overhead vanish next to ChaCha20, small enough to stay a bounded ~1 MiB.
_BATCH_CHUNKS = 16
_MAX_COUNTER = 1 << 88
_HAS_INTO = hasattr(ChaCha20Poly1305, "encrypt_into")  # absent from older cryptography


def _stream_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class _PayloadOpener:
    """STREAM decryption: one authenticated chunk at a time, each failure where it is found."""

    def __init__(self, src: _Lookahead, key: bytes) -> None:
        self._src = src
        self._aead = ChaCha20Poly1305(key)
        self._buf = bytearray(_BATCH_CHUNKS * ENC_CHUNK_SIZE + 1)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._counter = 0
        self._last_opened = False
        self._finished = False

    def _fill(self) -> None:
        """Buffer one full chunk plus one byte, or all that is left: enough to spot the end."""
        if self._eof or self._end - self._start > ENC_CHUNK_SIZE:
            return
        if self._start:
            tail = self._end - self._start
            self._buf[:tail] = self._buf[self._start : self._end]
            self._start, self._end = 0, tail
        while self._end - self._start <= ENC_CHUNK_SIZE:
            n = self._src.readinto(self._mv[self._end :])
            if n == 0:
                self._eof = True
                return
            self._end += n

    def _open(self, ct: memoryview, out: memoryview, last: bool) -> bool:
        nonce = _stream_nonce(self._counter, last)
        dst = out[: len(ct) - TAG_SIZE]
        try:
            if _HAS_INTO:
                self._aead.decrypt_into(nonce, ct, None, dst)
            else:
                dst[:] = self._aead.decrypt(nonce, ct, None)
        except InvalidTag:
            # decrypt_into leaves unauthenticated plaintext behind; nobody may see it
            dst[:] = bytes(len(dst))
            return False
        return True

    def next_chunk(self, out: memoryview) -> int:
        """Decrypt the next chunk into ``out`` (at least 64 KiB); 0 at a verified end."""
        while True:
            if self._finished:
                return 0
            self._fill()
            avail = self._end - self._start
            if self._last_opened:
                if avail:
                    raise AgePayloadError("age payload: data after the final chunk")
                self._finished = True
                return 0
            if avail == 0:
                raise AgePayloadError("age payload: truncated, the final chunk is missing")
            if self._counter == _MAX_COUNTER:
                raise AgePayloadError("age payload: more chunks than the nonce can count")
            size = min(avail, ENC_CHUNK_SIZE)
            ct = self._mv[self._start : self._start + size]
            if size < ENC_CHUNK_SIZE:
                if size < TAG_SIZE:
                    raise AgePayloadError("age payload: final chunk shorter than its tag")
                if size == TAG_SIZE and self._counter:
                    raise AgePayloadError("age payload: final chunk is empty")
                last = True
                ok = self._open(ct, out, last=True)
            else:
                # a full chunk may still be the final one; only its tag can tell
                last = False
                ok = self._open(ct, out, last=False)
                if not ok:
                    last = True
                    ok = self._open(ct, out, last=True)
            if not ok:
                raise AgePayloadError(f"age payload: chunk {self._counter} does not authenticate")
            self._start += size
            self._counter += 1
            self._last_opened = last
            if size > TAG_SIZE:
                return size - TAG_SIZE
            # an empty payload: go round once more to check that nothing follows it


class AgeWriter(io.BufferedIOBase):
    """A writable binary file that encrypts to ``recipients`` into ``dst``.

    The header goes out on construction. ``close()`` (or leaving the ``with`` block normally)
    seals the final chunk and flushes ``dst`` without closing it. Leaving the ``with`` block
    by an exception, or dropping the writer unclosed, leaves the final chunk out on purpose,
    so no reader can mistake the truncated output for a complete file.
    """

    def __init__(
        self,
        dst: BinaryIO,
        recipients: Sequence[AgeRecipient],
        *,
        armor: bool = False,
        rng: Rng = os.urandom,
    ) -> None:
        super().__init__()
        self._sealed = True  # until the header is out, there is nothing to finish
        if not recipients:
            raise UsageError("age: at least one recipient is required")
        self._dst = dst
        self._sink: _RawSink | _ArmorSink = _ArmorSink(dst) if armor else _RawSink(dst)
        file_key = rng(FILE_KEY_SIZE)
        header = _encode_header(file_key, (r._wrap(file_key, rng) for r in recipients))
        nonce = rng(NONCE_SIZE)
        self._sink.write(memoryview(header + nonce))
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._pt = bytearray(CHUNK_SIZE)
        self._pt_fill = 0
        self._pt_used = 0  # high-water mark of _pt: what _wipe must clear
        # The output batch is allocated on the first seal, and a file sealed in a single
        # chunk gets a buffer of just its size: a megabyte zeroed and freed per file was
        # most of the cost of ingesting many small files.
        self._out = bytearray()
        self._out_mv = memoryview(self._out)
        self._out_fill = 0
        # Two batches taken in turn: ``dst`` may go on reading a batch it was handed (on a
        # helper thread, say) until its next write() returns; this refills the other one.
        self._spare = bytearray()
        self._spare_mv = memoryview(self._spare)
        self._counter = 0
        self._written = 0
        self._sealed = False

    def writable(self) -> bool:
        """Always true: this is a write-only stream."""
        return True

    def tell(self) -> int:
        """Plaintext bytes accepted so far."""
        return self._written

    def _seal(self, pt: memoryview, last: bool) -> None:
        if self._counter == _MAX_COUNTER:
            raise UsageError("age: plaintext too long for one file")
        need = len(pt) + TAG_SIZE
        if self._out_fill + need > len(self._out):
            self._drain()
            if need > len(self._out):
                self._out_mv.release()
                self._out = bytearray(need if last else _BATCH_CHUNKS * ENC_CHUNK_SIZE)
                self._out_mv = memoryview(self._out)
        nonce = _stream_nonce(self._counter, last)
        end = self._out_fill + need
        if _HAS_INTO:
            self._aead.encrypt_into(nonce, pt, None, self._out_mv[self._out_fill : end])
        else:
            self._out_mv[self._out_fill : end] = self._aead.encrypt(nonce, pt, None)
        self._out_fill = end
        self._counter += 1

    def _drain(self) -> None:
        if self._out_fill:
            self._sink.write(self._out_mv[: self._out_fill])
            self._out_fill = 0
            self._out, self._spare = self._spare, self._out
            self._out_mv, self._spare_mv = self._spare_mv, self._out_mv

    def write(self, data: ReadableBuffer, /) -> int:
        """Encrypt and buffer ``data`` (bytes-like); returns its full length."""
        if self.closed:
            raise ValueError("write to a closed AgeWriter")
        if self._sealed:
            raise ValueError("write to an AgeWriter that has been finished")
        # released on the way out, even by an exception, so the caller may resize ``data``
        with memoryview(data) as view, view.cast("B") as mv:
            return self._write(mv)

    def _write(self, mv: memoryview) -> int:
        total = len(mv)
        pos = 0
        while pos < total:
            # a full chunk is sealed as non-final only once more data proves it is not last
            if self._pt_fill == CHUNK_SIZE:
                self._seal(memoryview(self._pt), last=False)
                self._pt_fill = 0
            if self._pt_fill == 0 and total - pos > CHUNK_SIZE:
                self._seal(mv[pos : pos + CHUNK_SIZE], last=False)
                pos += CHUNK_SIZE
                continue
            take = min(CHUNK_SIZE - self._pt_fill, total - pos)
            self._pt[self._pt_fill : self._pt_fill + take] = mv[pos : pos + take]
            self._pt_fill += take
            self._pt_used = max(self._pt_used, self._pt_fill)
            pos += take
        self._written += total
        return total

    def flush(self) -> None:
        """Write out every sealed chunk and flush ``dst``; the open chunk stays buffered."""
        if self.closed:
            return
        if not self._sealed:
            self._drain()
        flush = getattr(getattr(self, "_dst", None), "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Seal the final chunk, flush ``dst`` and leave it open. Idempotent."""
        if self.closed:
            return
        try:
            if not self._sealed:
                self._seal(memoryview(self._pt)[: self._pt_fill], last=True)
                self._sealed = True
                self._drain()
                self._sink.close()
                self.flush()
        finally:
            self._wipe()
            super().close()

    def _abandon(self) -> None:
        if not self._sealed:
            self._sealed = True
            self._wipe()

    def _wipe(self) -> None:
        if hasattr(self, "_pt"):
            # Only the bytes ever filled can hold plaintext.
            self._pt[: self._pt_used] = bytes(self._pt_used)
            self._pt_fill = 0
            self._out_fill = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abandon()
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_sealed"):
            self._abandon()
        super().__del__()


class AgeReader(io.BufferedIOBase):
    """A readable binary file of the plaintext of the age file in ``src``.

    Construction reads the header, finds the file key with ``identities`` and verifies the
    header MAC, raising the matching :class:`AgeError`. Reads then release plaintext one
    authenticated chunk at a time. When a read meets a failure after it already gathered
    plaintext, it returns that plaintext and the next read raises (``read()`` with no size,
    which promises everything, raises at once). ``close()`` leaves ``src`` open.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[AgeIdentity]) -> None:
        super().__init__()
        source = _open_source(src)
        header = _parse_header(source)
        file_key = _unwrap_file_key(header, identities)
        nonce = source.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise AgeHeaderError("age header: payload nonce is truncated")
        self._opener = _PayloadOpener(source, _hkdf(file_key, nonce, b"payload"))
        self._pt = bytearray(CHUNK_SIZE)
        self._pt_mv = memoryview(self._pt)
        self._pos = 0
        self._end = 0
        self._at_eof = False
        self._error: AgeError | None = None

    def readable(self) -> bool:
        """Always true: this is a read-only stream."""
        return True

    def _refill(self) -> bool:
        """Load the next chunk; False at the verified end of the file."""
        if self._at_eof:
            return False
        if self._error is not None:
            raise self._error.with_traceback(None)
        try:
            n = self._opener.next_chunk(self._pt_mv)
        except AgeError as e:
            self._error = e
            raise
        self._pos, self._end = 0, n
        self._at_eof = n == 0
        return not self._at_eof

    def _readinto(self, buffer: WriteableBuffer, one_chunk: bool) -> int:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        # released on the way out: a stored error's traceback must not pin ``buffer``
        with memoryview(buffer) as view, view.cast("B") as mv:
            return self._fill_view(mv, one_chunk)

    def _fill_view(self, mv: memoryview, one_chunk: bool) -> int:
        n = 0
        while n < len(mv):
            if self._pos == self._end:
                if n and (one_chunk or self._error is not None):
                    break
                try:
                    if not self._refill():
                        break
                except AgeError:
                    if n:
                        break
                    raise
            k = min(self._end - self._pos, len(mv) - n)
            mv[n : n + k] = self._pt_mv[self._pos : self._pos + k]
            self._pos += k
            n += k
        return n

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill ``buffer`` with plaintext; fewer bytes only at the end or before an error."""
        return self._readinto(buffer, one_chunk=False)

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        """Like :meth:`readinto`, but decrypt at most one more chunk."""
        return self._readinto(buffer, one_chunk=True)

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` plaintext bytes; all of it (or the error) when ``size`` is -1."""
        if size is None or size < 0:
            parts = []
            while chunk := self.read1(CHUNK_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def read1(self, size: int = -1, /) -> bytes:
        """Up to ``size`` plaintext bytes, decrypting at most one more chunk."""
        buf = bytearray(CHUNK_SIZE if size < 0 else size)
        n = self.readinto1(buf)
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        """Forget the buffered plaintext; ``src`` stays open."""
        if hasattr(self, "_pt"):
            self._pt[:] = bytes(len(self._pt))
            self._pos = self._end = 0
        super().close()

    def _copy_to(self, dst: BinaryIO) -> int:
        """Decrypt everything left into ``dst``, writing each batch once it authenticated."""
        out = bytearray(_BATCH_CHUNKS * CHUNK_SIZE)
        mv = memoryview(out)
        total = 0
        fill = 0
        try:
            while True:
                if fill + CHUNK_SIZE > len(out):
                    _write_all(dst, mv[:fill])
                    total += fill
                    fill = 0
                n = self._opener.next_chunk(mv[fill : fill + CHUNK_SIZE])
                if n == 0:
                    break
                fill += n
        except AgeError:
            # what authenticated goes out first, as a chunk-at-a-time reader would see it
            _write_all(dst, mv[:fill])
            raise
        else:
            _write_all(dst, mv[:fill])
        finally:
            out[:] = bytes(len(out))
        return total + fill


def encrypted_size(recipients: Sequence[AgeRecipient], plaintext_size: int) -> int:
    """The size of what :class:`AgeWriter` writes for ``plaintext_size`` bytes to
    ``recipients`` (not armored), known before any of it is written.

    Header, nonce, then each 64 KiB chunk with its 16-byte tag; the last chunk may be full,
    and an empty plaintext is one empty chunk. Every stanza of a recipient has the same
    length whatever the file key, so the header is measured by making one for a
    throwaway key (which is then dropped).
    """
    if not recipients:
        raise UsageError("age: at least one recipient is required")
    if isinstance(plaintext_size, bool) or not isinstance(plaintext_size, int) or (
            plaintext_size < 0):
        raise UsageError("age: the plaintext size must be a non-negative integer")
    file_key = os.urandom(FILE_KEY_SIZE)
    header = _encode_header(file_key, (r._wrap(file_key, os.urandom) for r in recipients))
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return len(header) + NONCE_SIZE + plaintext_size + chunks * TAG_SIZE


def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[AgeRecipient],
    *,
    armor: bool = False,
) -> int:
    """Encrypt all of ``src`` to ``recipients`` into ``dst``; returns the plaintext size."""
    buf = bytearray(_BATCH_CHUNKS * CHUNK_SIZE)
    mv = memoryview(buf)
    fill = _fill_from(src)
    total = 0
    try:
        with AgeWriter(dst, recipients, armor=armor) as writer:
            while n := fill(mv):
                writer.write(mv[:n])
                total += n
    finally:
        buf[:] = bytes(len(buf))
    return total


def decrypt(src: BinaryIO, dst: BinaryIO, identities: Sequence[AgeIdentity]) -> int:
    """Decrypt the age file in ``src`` into ``dst``; returns the plaintext size.

    On an :class:`AgeError`, ``dst`` holds the plaintext that authenticated before it and
    must be discarded.
    """
    return AgeReader(src, identities)._copy_to(dst)
