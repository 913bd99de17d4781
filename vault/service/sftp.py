"""Uploading a package to a body's SFTP drop: host key checked first, verified, resumable.

    >>> upload(SftpOutbox(SftpUrl.parse("sftp://evidence@drop.example/in")),
    ...        Path("PKG-0123456789AB.evpkg"), "PKG-0123456789AB.evpkg", "ab" * 32)
    ... # doctest: +SKIP

The one module that imports the SFTP library (paramiko, chosen and measured in README's
Dependencies); only a delivery to an ``sftp://`` outbox imports this module.

The steps, each refusing with one line: connect and take the server's host key before
logging in, then check it against the fingerprint pinned for the body (found among the
server's keys of every type) or the user's ``known_hosts`` (read here line by line:
``@revoked`` keys refused, ``@cert-authority`` lines skipped; unknown, changed or revoked:
:class:`~vault.errors.VerificationError`, never added); log in with the key file given
(not readable by others) or the keys of the user's ssh-agent (no passwords); upload the
package in 1 MiB writes under a temporary name, ``.evault-partial-<name>`` (created
exclusively; anything there but a regular file, a symbolic link above all, is refused and
left alone), appending to what an interrupted upload left there when its bytes are the
package's own first bytes; ``fsync@openssh.com`` where the server offers it; the remote
size; the remote file's SHA-256, read back and hashed here, against the digest recorded at
build; only then the final name, by a plain SFTP rename (which refuses to replace a file;
never ``posix-rename@openssh.com``), and the final name looked at again (a regular file of
the package's size). A file with the final name and the package's digest is an earlier
delivery of this very package (killed before it was recorded): nothing is uploaded again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from vault.errors import ConfigError, ConflictError, NotFoundError, VaultError, VerificationError
from vault.faults import crash_point
from vault.service.outbox import SftpOutbox, Uploaded

log = logging.getLogger("evault")
# paramiko's transport thread logs a failed key exchange (and other refusals) with its
# traceback; with no handler anywhere, Python's last resort would print it on stderr. Every
# failure reaches the user as one line of evault's instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CHUNK = 1 << 20
"""Bytes read from the package and written per call (paramiko pipelines them as 32 KiB
requests)."""
PARTIAL_PREFIX = ".evault-partial-"
TIMEOUT = 60.0
"""Seconds to wait for the server at any one step before giving up."""
CHECK_EVERY = 8
"""Every this many writes, the answers to them are awaited (a refusal stops the upload)."""
READ_REQUEST = 255 * 1024
"""Bytes asked for per read request when a remote file is hashed (OpenSSH's largest)."""
WINDOW = 64 << 20
MAX_PACKET = 256 << 10
SIGNATURES = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}
"""The host-key algorithms that prove a key of a ``known_hosts`` type other than by the
type's own name: an RSA key (``ssh-rsa``) signs with SHA-2 (paramiko 5 offers no SHA-1)."""
HOST_KEY_FAMILIES = (("ssh-ed25519",), ("ecdsa-sha2-nistp256",), ("ecdsa-sha2-nistp384",),
                     ("ecdsa-sha2-nistp521",), ("rsa-sha2-512", "rsa-sha2-256"))
"""The host-key algorithms by the key they prove: a server holds at most one key of each."""


@dataclass
class KnownHosts:
    """What ``known_hosts`` says of one host: its keys by type, and every key marked
    ``@revoked`` (for any host: a revoked key is never accepted) with its line."""

    where: str
    keys: dict[str, list[paramiko.PKey]] = field(default_factory=dict)
    revoked: list[tuple[paramiko.PKey, int]] = field(default_factory=list)


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def upload(target: SftpOutbox, source: Path, name: str, expected: str) -> Uploaded:
    """Deliver ``source`` (whose SHA-256 as built is ``expected``) as ``name`` in the drop."""
    url = str(target.url)
    with _session(target) as (sftp, host_key):
        final = target.url.remote(name)
        partial = target.url.remote(PARTIAL_PREFIX + name)
        try:
            folder = sftp.stat(target.url.path)
        except OSError:
            raise NotFoundError(f"outbox {url}: no such folder on the server; ask the body "
                                "for the right path") from None
        if not stat.S_ISDIR(folder.st_mode or 0):
            raise NotFoundError(f"outbox {url}: is not a folder on the server")
        existing = _stat(sftp, final)
        if existing is not None:
            if not stat.S_ISREG(existing.st_mode or 0):
                raise ConflictError(f"{url}/{name}: exists on the server as {_kind(existing)}, "
                                    "not a file; ask the body to remove it, or use another "
                                    "outbox")
            if _remote_digest(sftp, final) != expected:
                raise ConflictError(f"{url}/{name}: exists on the server with other content; "
                                    "ask the body to remove it, or use another outbox")
            return Uploaded(url, final, host_key, 0, already=True)
        size = source.stat().st_size
        offset = _resumable(sftp, f"{url}/{PARTIAL_PREFIX}{name}", partial, source, size)
        try:
            _write(sftp, partial, source, offset, size)
            crash_point("send.sftp_uploaded")
            got = sftp.stat(partial).st_size
            if got != size:
                raise VaultError(f"{url}/{name}: the server holds {got} of {size} bytes after "
                                 "the upload; nothing was named there; try again")
            if _remote_digest(sftp, partial) != expected:
                raise VerificationError(
                    f"{url}/{name}: the uploaded file does not match the package as built "
                    "(changed on the server, or the package file changed here); nothing was "
                    "named there; check the package with `evault verify` and send it again")
            _rename(sftp, f"{url}/{name}", partial, final, size)
        except VerificationError:
            _remove(sftp, partial)
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            if not _alive(sftp) or isinstance(e, TimeoutError):
                raise VaultError(
                    f"{url}/{name}: the connection was lost during the upload ({_reason(e)}); "
                    "nothing was named there; run the same command again: it resumes the "
                    "upload") from None
            _remove(sftp, partial)  # the server refused a write: its disk may be full
            raise VaultError(f"{url}/{name}: the server refused the upload ({_reason(e)}); "
                             "nothing was named there; the drop may be full: ask the body, "
                             "then send again") from None
        crash_point("send.sftp_renamed")
        if offset:
            log.warning(f"{url}/{name}: resumed an interrupted upload at byte {offset} of "
                        f"{size}")
        return Uploaded(url, final, host_key, offset, already=False)


# ----------------------------------------------------------------------------- connecting


@contextlib.contextmanager
def _session(target: SftpOutbox) -> Iterator[tuple[paramiko.SFTPClient, str]]:
    """An SFTP session with the server, its host key checked before logging in; the
    connection dropping at any point is one line naming the URL (exit 1)."""
    url = target.url
    known = _known_keys(target)
    with contextlib.ExitStack() as stack:
        try:
            transport = stack.enter_context(_handshake(target, known, None))
            key = transport.get_remote_server_key()
            if target.host_key is not None and fingerprint(key) != target.host_key:
                pinned = _pinned_of_another_type(target, transport, stack)
                if pinned is not None:
                    transport, key = pinned, pinned.get_remote_server_key()
            host_key = fingerprint(key)
            _check_host_key(target, key, host_key, known)
            _log_in(transport, target)
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise VaultError(f"outbox {url}: the server offers no SFTP")
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(TIMEOUT)
            yield sftp, host_key
        except (TimeoutError, EOFError, paramiko.SSHException, ConnectionError) as e:
            raise VaultError(f"outbox {url}: the connection was lost ({_reason(e)}); run the "
                             "same command again: it resumes the upload") from None


@contextlib.contextmanager
def _handshake(
    target: SftpOutbox, known: KnownHosts, key_types: tuple[str, ...] | None
) -> Iterator[paramiko.Transport]:
    """A transport with the key exchange done (nobody logged in), offering the host-key
    algorithms ``key_types`` (else those known for the host, else paramiko's)."""
    url = target.url
    try:
        sock = socket.create_connection((url.host, url.port), timeout=TIMEOUT)
    except OSError as e:
        raise VaultError(f"outbox {url}: cannot connect to {url.known_hosts_name} "
                         f"({_reason(e)}); check the address and the network") from None
    # A large receive window and packets: reading the upload back (to hash it) is paramiko's
    # slow direction, about 4x faster so than with its 2 MiB / 32 KiB defaults.
    transport = paramiko.Transport(sock, default_window_size=WINDOW,
                                   default_max_packet_size=MAX_PACKET)
    try:
        transport.banner_timeout = transport.auth_timeout = TIMEOUT
        if key_types is not None:
            transport.get_security_options().key_types = key_types
        elif known.keys:
            _offer_known_types(transport, target, known)
        try:
            transport.start_client(timeout=TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise VaultError(f"outbox {url}: no SSH session with {url.known_hosts_name} "
                             f"({_reason(e)})") from None
        yield transport
    finally:
        transport.close()


def _pinned_of_another_type(
    target: SftpOutbox, first: paramiko.Transport, stack: contextlib.ExitStack
) -> paramiko.Transport | None:
    """A transport whose host key is the pinned one, negotiated anew with each other
    host-key type the server may have; None if no key of the server is the pinned one.

    A fingerprint does not say its key's type, and a server with an ed25519 and an ECDSA
    key shows the ed25519 one first: a pin of the ECDSA key would be refused as changed.
    Accepting the key whose fingerprint is the pin, of whatever type, accepts nothing but
    the pinned key (the server proves it holds it in each key exchange); a server that
    has no such key costs a refused handshake per type, on the way to the refusal."""
    supported = first.get_security_options().key_types
    used = first.host_key_type
    for family in HOST_KEY_FAMILIES:
        offer = tuple(a for a in family if a in supported)
        if not offer or used in family:
            continue
        try:
            transport = stack.enter_context(_handshake(target, KnownHosts(""), offer))
        except VaultError:
            continue  # the server has no key of this type (or refused): try the next
        if fingerprint(transport.get_remote_server_key()) == target.host_key:
            return transport
    return None


def _offer_known_types(
    transport: paramiko.Transport, target: SftpOutbox, known: KnownHosts
) -> None:
    """Offer only the host-key algorithms of the key types known for this host, as OpenSSH
    does: a server that also has a key of another type must not get to use that one."""
    options = transport.get_security_options()
    wanted = {a for t in known.keys for a in SIGNATURES.get(t, (t,))}
    offered = [a for a in options.key_types if a in wanted]
    if not offered:
        raise ConfigError(
            f"outbox {target.url}: {known.where} holds for {target.url.known_hosts_name} only "
            f"keys of type {', '.join(sorted(known.keys))}, which evault cannot check; ask the "
            "body for the fingerprint of its ed25519 or ECDSA key and pin it with --host-key")
    try:
        options.key_types = offered
    except ValueError as e:
        raise ConfigError(f"outbox {target.url}: the host-key types of {known.where} for "
                          f"{target.url.known_hosts_name} cannot be offered ({_reason(e)}); "
                          "pin the host's key with --host-key instead") from None


def _known_keys(target: SftpOutbox) -> KnownHosts:
    """What ``known_hosts`` holds for the target's host (nothing with a pin).

    Read line by line here: ``@cert-authority`` lines are skipped (evault does not check
    host certificates), ``@revoked`` keys are kept to refuse; a line paramiko cannot parse
    at all is one error naming the file and the line; a key of a type paramiko does not
    know is skipped (as paramiko's own reading does)."""
    path = target.known_hosts or Path.home() / ".ssh" / "known_hosts"
    known = KnownHosts(str(target.known_hosts or "~/.ssh/known_hosts"))
    if target.host_key is not None:
        return known
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if target.known_hosts is not None:
            raise NotFoundError(f"--known-hosts {path}: no such file") from None
        return known
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read as known_hosts ({_reason(e)})") from None
    name = target.url.known_hosts_name
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker == "@cert-authority":
            continue
        if marker not in (None, "@revoked"):
            raise ConfigError(f"{path}: line {number} has a marker evault does not know "
                              "(only @revoked and @cert-authority); fix or remove the line")
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields), number)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as e:
            cause = getattr(e, "exc", None) or e
            raise ConfigError(f"{path}: line {number} is not a known_hosts entry "
                              f"({_reason(cause)}); fix or remove the line") from None
        if entry is None or entry.key is None:
            continue
        if marker == "@revoked":
            known.revoked.append((entry.key, number))
        elif any(_host_matches(pattern, name) for pattern in entry.hostnames):
            known.keys.setdefault(entry.key.get_name(), []).append(entry.key)
    return known


def _host_matches(pattern: str, name: str) -> bool:
    """Whether a ``known_hosts`` host field names ``name`` (as is, or hashed ``|1|``)."""
    if pattern.startswith("|1|"):
        return hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern), pattern)
    return pattern == name


def _check_host_key(
    target: SftpOutbox, key: paramiko.PKey, seen: str, known: KnownHosts
) -> None:
    """Refuse a server whose host key is not the one pinned or known (never add it)."""
    url, name = target.url, target.url.known_hosts_name
    if target.host_key is not None:
        if seen != target.host_key:
            raise VerificationError(
                f"outbox {url}: host key of {name} is {seen}, not the pinned {target.host_key}; "
                "refused (a changed key may be an attack): confirm the new key with the body "
                "by another channel, then pin it with --host-key")
        return
    where = known.where
    for revoked, number in known.revoked:
        if revoked == key:
            raise VerificationError(
                f"outbox {url}: host key of {name} is {seen}, marked @revoked in {where} "
                f"(line {number}); refused (a revoked key is never accepted): ask the body for "
                "its new key by another channel")
    if not known.keys:
        raise VerificationError(
            f"outbox {url}: host {name} is unknown (not in {where}); its key is {seen}: "
            f"confirm it with the body by another channel, then pin it with --host-key {seen} "
            "or add it to known_hosts")
    if key not in known.keys.get(key.get_name(), []):
        listed = ", ".join(fingerprint(k) for keys in known.keys.values() for k in keys)
        raise VerificationError(
            f"outbox {url}: host key of {name} changed: it is {seen}, {where} has {listed}; "
            "refused (a changed key may be an attack): confirm the new key with the body by "
            "another channel before you change known_hosts")


def _log_in(transport: paramiko.Transport, target: SftpOutbox) -> None:
    """Log in with the key file given, else with each key of the user's ssh-agent."""
    url = target.url
    if target.identity_file is not None:
        _check_private(target.identity_file)
        try:
            keys: list[paramiko.PKey] = [paramiko.PKey.from_path(target.identity_file)]
        except FileNotFoundError:
            raise NotFoundError(f"--identity-file {target.identity_file}: no such file") from None
        except paramiko.PasswordRequiredException:
            raise ConfigError(f"{target.identity_file}: the key has a passphrase; load it "
                              "into ssh-agent (ssh-add) and leave out --identity-file") from None
        except (paramiko.SSHException, OSError, ValueError) as e:
            raise ConfigError(f"{target.identity_file}: not an SSH private key "
                              f"({_reason(e)})") from None
        where = str(target.identity_file)
    else:
        if not os.environ.get("SSH_AUTH_SOCK"):
            raise ConfigError(f"outbox {url}: no client key: start ssh-agent and add the key "
                              "(ssh-add), or give --identity-file")
        keys = list(paramiko.Agent().get_keys())
        where = "ssh-agent"
        if not keys:
            raise ConfigError(f"outbox {url}: ssh-agent holds no key; add one with ssh-add, "
                              "or give --identity-file")
    for key in keys:
        try:
            transport.auth_publickey(url.user, key)
        except paramiko.AuthenticationException:
            continue
        if transport.is_authenticated():
            return
    raise ConfigError(f"outbox {url}: the server refused the key(s) of {where} for user "
                      f"{url.user}; ask the body to authorise your public key")


def _check_private(path: Path) -> None:
    """Refuse a key file that other users may read or write, as ssh does."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NotFoundError(f"--identity-file {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--identity-file {path}: cannot be read ({_reason(e)})") from None
    if mode & 0o077:
        raise ConfigError(f"--identity-file {path}: mode {stat.S_IMODE(mode):04o} gives "
                          "other users access to the private key; refused, as ssh refuses it: "
                          "run chmod 600 "
                          f"{path}")


# ----------------------------------------------------------------------------- transferring


def _stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    """The remote file's own attributes (a symbolic link is not followed), None if absent."""
    try:
        return sftp.lstat(path)
    except FileNotFoundError:
        return None


def _kind(found: paramiko.SFTPAttributes) -> str:
    mode = found.st_mode or 0
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a folder" if stat.S_ISDIR(mode) else "something other than a file"


def _resumable(
    sftp: paramiko.SFTPClient, shown: str, partial: str, source: Path, size: int
) -> int:
    """Bytes of an interrupted upload to keep: all of the temporary file if they are the
    package's first bytes (hashed on both sides), else none (it is removed). Anything there
    but a regular file was not left by evault, and is refused and left alone: a symbolic
    link would carry the upload elsewhere on the server, or the final name would become it."""
    found = _stat(sftp, partial)
    if found is None:
        return 0
    if stat.S_ISLNK(found.st_mode or 0):
        raise VerificationError(
            f"{shown}: is a symbolic link on the server, not an upload evault left; refused (it "
            "would carry the package elsewhere); ask the body to remove it, then send again")
    if not stat.S_ISREG(found.st_mode or 0):
        raise ConflictError(f"{shown}: is {_kind(found)} on the server, not an upload evault "
                            "left; ask the body to remove it, then send again")
    have = found.st_size or 0
    if 0 < have <= size:
        local = hashlib.sha256()
        with open(source, "rb") as f:
            left = have
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                local.update(chunk)
                left -= len(chunk)
        if _remote_digest(sftp, partial, length=have) == local.hexdigest():
            return have
    _remove(sftp, partial)
    return 0


def _write(
    sftp: paramiko.SFTPClient, partial: str, source: Path, offset: int, size: int
) -> None:
    """Write ``source`` from ``offset`` on into ``partial`` (created if ``offset`` is 0, and
    only if nothing has that name: ``SSH_FXF_EXCL``, so a link planted since the check is not
    followed)."""
    with open(source, "rb") as src, sftp.open(partial, "r+" if offset else "wx") as dst:
        dst.set_pipelined(True)
        src.seek(offset)
        dst.seek(offset)
        first = True
        written, count = offset, 0
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            written += len(chunk)
            count += 1
            if count % CHECK_EVERY == 0 or first:
                _drain(sftp, dst)
            if first and written < size:
                first = False
                crash_point("send.sftp_partial")
        dst.flush()
        _drain(sftp, dst)
        _fsync(sftp, dst)


def _drain(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile) -> None:
    """Wait for the server's answers to the pipelined writes sent so far; a refused one (a
    full disk: ``Failure``) raises OSError here.

    paramiko waits for them only now and then and, answered meanwhile by another request's
    wait, drops them, a refusal among them; its own record of the writes in flight
    (``_reqs``) is the one to wait on, or a later wait of its own hangs for an answer
    already taken. Pinned to paramiko's 3.4-5.x internals (setup.cfg), which tests/
    test_sftp.py exercises (a full disk, 16 MiB uploads).
    """
    requests = handle._reqs  # type: ignore[attr-defined]
    read_response = sftp._read_response  # type: ignore[attr-defined]
    while requests:
        read_response(requests.popleft())


def _fsync(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile) -> None:
    """``fsync@openssh.com`` on the open file, where the server offers it."""
    # paramiko has no call for it: the extended request is sent as its own calls send theirs.
    # Not offered (an OSError): the server's own durability is all there is.
    request = sftp._request  # type: ignore[attr-defined]
    with contextlib.suppress(OSError):
        request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", handle.handle)


def _remote_digest(sftp: paramiko.SFTPClient, path: str, *, length: int = 0) -> str:
    """The SHA-256 (hex) of the remote file (its first ``length`` bytes if given), read back
    and hashed here. Never the ``check-file`` extension: that is the server's word for the
    hash, where reading back at least makes the server serve the bytes (OpenSSH does not
    offer it anyway)."""
    with sftp.open(path, "r") as f:
        size = length or (f.stat().st_size or 0)
        # One read request at a time, each as large as OpenSSH serves (a server that serves
        # less answers short, and paramiko asks again): memory stays flat, where paramiko's
        # prefetch keeps what it fetched ahead and grew with the file.
        f.MAX_REQUEST_SIZE = READ_REQUEST
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        return digest.hexdigest()


def _rename(sftp: paramiko.SFTPClient, shown: str, partial: str, final: str, size: int) -> None:
    """Give the checked file its final name; a file there already is never replaced.

    A plain SFTP rename (``SSH_FXP_RENAME``), never ``posix-rename@openssh.com`` (rename(2),
    which replaces a file that appeared since the check): the SFTP protocol makes a rename
    onto an existing name an error, and OpenSSH's server does it as link(2) then unlink(2),
    so a file that appears after the check below makes it fail. Then the final name is
    looked at (not followed): it must be a regular file of the package's size."""
    appeared = ConflictError(f"{shown}: appeared on the server during the upload; nothing was "
                             "replaced; ask the body what it is")
    if _stat(sftp, final) is not None:
        raise appeared
    try:
        sftp.rename(partial, final)
    except OSError as e:
        if _stat(sftp, final) is not None:
            raise appeared from None
        raise VaultError(f"{shown}: the server refused to give the upload its final name "
                         f"({_reason(e)}); nothing was named there; ask the body, then send "
                         "again") from None
    named = _stat(sftp, final)
    if named is None or not stat.S_ISREG(named.st_mode or 0) or named.st_size != size:
        found = "nothing" if named is None else (
            f"{named.st_size} bytes" if stat.S_ISREG(named.st_mode or 0) else _kind(named))
        raise VerificationError(f"{shown}: after the rename the server shows {found} under the "
                                f"final name, not the {size} bytes uploaded; ask the body what "
                                "it is, then send again")


def _alive(sftp: paramiko.SFTPClient) -> bool:
    """Whether the SSH connection under ``sftp`` still stands."""
    channel = sftp.get_channel()
    transport = channel.get_transport() if channel is not None else None
    return bool(channel is not None and not channel.closed and transport is not None
                and transport.is_active())


def _remove(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sftp.remove(path)


def _reason(e: BaseException) -> str:
    """An exception's own words, for the end of a one-line message."""
    text: Any = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).strip().rstrip(".")
