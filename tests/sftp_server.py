"""A real OpenSSH SFTP server on 127.0.0.1 for the tests and the benchmarks.

    with SftpServer() as server:
        drop = server.drop("icc")                    # a folder the SFTP user may write
        print(server.url(drop), server.known_hosts, server.client_key)

Nothing here is a mock: ``/usr/sbin/sshd -D -e -f CONFIG`` (Debian's ``openssh-server``)
listens on a free port with a throwaway ed25519 host key made by ``ssh-keygen`` for this
server alone, ``PidFile`` and ``AuthorizedKeysFile`` in its own folder, ``StrictModes no``
and ``Subsystem sftp internal-sftp``. The one account that may log in is the system's
``nobody``, matched by ``Match User nobody`` with a ``ChrootDirectory`` and ``ForceCommand
internal-sftp``: it sees only the drop folders, as a body's SFTP drop would show a sender.

Why ``nobody`` and not a user made with ``useradd``: it exists on every Debian system, so
nothing is added to ``/etc/passwd`` of a developer's machine or CI's, two pytest workers do
not race to create it, and its password field is ``*`` (not ``!``), which sshd without PAM
does not count as a locked account. Only the key in this server's ``AuthorizedKeysFile``
logs in as it, and only on this port, only here.

Why the folder is under ``/srv`` and not the temporary folder: sshd refuses a chroot any of
whose path components is writable by group or others (``/tmp`` is 1777), so each server
makes ``/srv/evault-test-sftp/<random>`` (root-owned, 0755) and removes it when it stops.
Chroot needs root: :func:`sftp_unavailable` says why a machine cannot run the server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from local_tsa import free_port

SSHD = "/usr/sbin/sshd"
USER = "nobody"
BASE = Path(os.environ.get("EVAULT_TEST_SFTP_BASE", "/srv/evault-test-sftp"))

_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {etc}/ssh_host_ed25519_key
PidFile {etc}/sshd.pid
AuthorizedKeysFile {auth}/%u
StrictModes no
UsePAM no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers {user}
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
Subsystem sftp internal-sftp
Match User {user}
    ChrootDirectory {chroot}
    ForceCommand internal-sftp
"""


def sftp_unavailable() -> str | None:
    """Why this machine cannot run the test server (None if it can)."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (Debian openssh-server; .ci/run installs it)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (Debian openssh-client)"
    if os.geteuid() != 0:
        return "the SFTP server's ChrootDirectory needs root"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no system account {USER!r} to log in as"
    return None


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, stdin=subprocess.DEVNULL)


class SftpServer:
    """One sshd serving SFTP to ``nobody``, chrooted; stopped and removed on exit."""

    def __init__(self) -> None:
        reason = sftp_unavailable()
        if reason:
            raise RuntimeError(reason)
        BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(BASE, 0o755)
        self.root = Path(tempfile.mkdtemp(prefix="sshd-", dir=BASE))
        os.chmod(self.root, 0o755)
        self.etc = self.root / "etc"  # host key, config, pid, log: root only
        self.etc.mkdir(mode=0o700)
        self.auth = self.root / "auth"  # read by sshd as the user: world-readable
        self.auth.mkdir(mode=0o755)
        self.chroot = self.root / "chroot"  # root-owned, 0755, as ChrootDirectory requires
        self.chroot.mkdir(mode=0o755)
        self.client = self.root / "client"  # the throwaway client key (root only)
        self.client.mkdir(mode=0o700)
        _keygen(self.etc / "ssh_host_ed25519_key", "evault-test-host")
        _keygen(self.client / "id_ed25519", "evault-test-client")
        self.client_key = self.client / "id_ed25519"
        authorized = self.auth / USER
        shutil.copyfile(self.client / "id_ed25519.pub", authorized)
        os.chmod(authorized, 0o644)
        self.port = free_port()
        self.config = self.etc / "sshd_config"
        self.config.write_text(_CONFIG.format(port=self.port, etc=self.etc, auth=self.auth,
                                              chroot=self.chroot, user=USER))
        host_pub = (self.etc / "ssh_host_ed25519_key.pub").read_text().split()
        self.host_key_line = f"{host_pub[0]} {host_pub[1]}"
        self.known_hosts = self.client / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
        self.fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.etc / "ssh_host_ed25519_key")],
            check=True, capture_output=True, text=True).stdout.split()[1]
        self.log = self.etc / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start sshd and wait until it listens."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
        log = open(self.log, "ab")  # noqa: SIM115 (sshd writes to it while it runs)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text(errors='replace')}")
            if b"Server listening" in self.log.read_bytes():
                return
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        """Stop sshd and every session it serves."""
        if self.proc is None:
            return
        self.kill_sessions()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop and remove every file of this server (unmounting what :meth:`mount` did)."""
        self.stop()
        for mounted in getattr(self, "_mounts", []):
            subprocess.run(["umount", "-l", str(mounted)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SftpServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- sessions --------------------------------------------------------------------------

    def sessions(self) -> list[int]:
        """The pids of the processes serving connections: the listener's children (each
        connection's privileged monitor) and their children (the unprivileged process that
        holds the connection and runs internal-sftp), deepest first."""
        if self.proc is None:
            return []
        parents: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry))
        found: list[int] = []
        level = parents.get(self.proc.pid, [])
        while level:
            found[:0] = level
            level = [c for pid in level for c in parents.get(pid, [])]
        return found

    def kill_sessions(self) -> int:
        """Kill every session being served (the connection drops mid-transfer, as a network
        or server failure would drop it); how many processes there were."""
        pids = self.sessions()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    # -- drops -----------------------------------------------------------------------------

    def drop(self, name: str) -> str:
        """A folder the SFTP user may write, made inside the chroot; its path as the client
        sees it (``/name``)."""
        folder = self.chroot / name
        folder.mkdir(mode=0o755)
        user = pwd.getpwnam(USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
        return f"/{name}"

    def mount(self, name: str, size_kib: int) -> str:
        """A drop on a small tmpfs of its own (a server-side disk that fills up); raises
        RuntimeError if this machine cannot mount one."""
        folder = self.chroot / name
        folder.mkdir(mode=0o755)
        user = pwd.getpwnam(USER)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o",
             f"size={size_kib}k,mode=0755,uid={user.pw_uid},gid={user.pw_gid}", "tmpfs",
             str(folder)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        self._mounts = [*getattr(self, "_mounts", []), folder]
        return f"/{name}"

    def path(self, drop: str) -> Path:
        """The drop's folder on this machine."""
        return self.chroot / drop.lstrip("/")

    def url(self, drop: str) -> str:
        """The drop's ``sftp://`` URL."""
        return f"sftp://{USER}@127.0.0.1:{self.port}{drop}"
