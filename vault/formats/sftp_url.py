"""``sftp://user@host[:port]/path``: a body's SFTP drop, parsed strictly.

    >>> url = SftpUrl.parse("sftp://evidence@drop.icc-cpi.example:2222/incoming/ua")
    >>> (url.user, url.host, url.port, url.path)
    ('evidence', 'drop.icc-cpi.example', 2222, '/incoming/ua')
    >>> str(url)
    'sftp://evidence@drop.icc-cpi.example:2222/incoming/ua'

A user, a host (a name, an IPv4 address or a bracketed IPv6 address), an optional port and
an absolute path; nothing else: no password (refused with a message that does not repeat
it), no query, no fragment, no percent-encoding, no ``..`` or empty path segments. The URL is
written into custody events and sharing receipts as :meth:`SftpUrl.__str__` gives it, so it
carries no secret by construction.

Imports :mod:`vault.errors` only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from vault.errors import UsageError

SCHEME = "sftp://"
MAX_URL = 1024

_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_SEGMENT = re.compile(r"[A-Za-z0-9._~+=,@-]+")
_PLAIN_TAIL = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
                         r"(/[A-Za-z0-9._~+=,-]*)*")
"""What may follow the ``@`` of a URL refused for its password and be repeated: a host, a
port and a path without ``@``."""


def is_sftp_url(text: str) -> bool:
    """Whether ``text`` asks for an SFTP outbox (rather than a folder)."""
    return text[:7].lower() == SCHEME


@dataclass(frozen=True)
class SftpUrl:
    """A parsed ``sftp://`` outbox; valid by construction."""

    user: str
    host: str
    port: int
    path: str

    def __post_init__(self) -> None:
        if not _USER.fullmatch(self.user):
            raise UsageError(f"outbox {self}: user {self.user!r} is not a plain user name")
        _check_host(self.host, str(self))
        if not 1 <= self.port <= 65535:
            raise UsageError(f"outbox {self}: port {self.port} is not between 1 and 65535")
        _check_path(self.path, str(self))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 22 else f":{self.port}"
        return f"{SCHEME}{self.user}@{host}{port}{self.path}"

    @property
    def known_hosts_name(self) -> str:
        """The host as ``known_hosts`` names it: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def remote(self, name: str) -> str:
        """The remote path of a file ``name`` in this drop."""
        return f"{self.path.rstrip('/')}/{name}"

    @classmethod
    def parse(cls, text: str) -> SftpUrl:
        """Parse ``sftp://user@host[:port]/path`` strictly; raise UsageError naming the rule."""
        if len(text) > MAX_URL or not text.isprintable() or not text.isascii():
            raise UsageError(f"outbox: an sftp:// URL is printable ASCII of at most {MAX_URL} "
                             "characters")
        if not is_sftp_url(text):
            raise UsageError(f"outbox {text}: not an sftp://user@host[:port]/path URL")
        rest = text[len(SCHEME):]
        _refuse_password(rest)
        authority, slash, path = rest.partition("/")
        userinfo, at, hostport = authority.rpartition("@")
        if not at or not userinfo:
            raise UsageError(f"outbox {text}: name the user, as in sftp://user@host/path")
        if not slash:
            raise UsageError(f"outbox {text}: give the drop's absolute path, as in "
                             "sftp://user@host/incoming")
        if any(c in text for c in "?#%\\"):
            raise UsageError(f"outbox {text}: no query, fragment, percent-encoding or "
                             "backslash in an sftp:// URL")
        host, port = _split_port(hostport, text)
        return cls(user=userinfo, host=host, port=port, path="/" + path.rstrip("/"))


def _refuse_password(rest: str) -> None:
    """Refuse ``user:password@`` before the URL is split on ``/``: a password may hold ``/``,
    ``@``, ``?`` or ``#``, so the authority cannot be told apart from the path, and only the
    user and what follows the last ``@`` are repeated, each only when plain. A user name holds
    no ``:``, so a ``:`` before the first ``@`` is a password (or, in a URL without a user,
    which is refused anyway, a port: refused as a password without harm)."""
    first = rest.find("@")
    if first < 0 or ":" not in rest[:first]:
        return
    user = rest.partition(":")[0]
    if not _USER.fullmatch(user):
        user = "..."
    tail = rest.rpartition("@")[2]
    if not _PLAIN_TAIL.fullmatch(tail):
        tail = "..."
    raise UsageError(f"outbox {SCHEME}{user}:***@{tail}: a password in the URL is refused; "
                     "load the key into ssh-agent or give --identity-file")


def _split_port(hostport: str, text: str) -> tuple[str, int]:
    if hostport.startswith("["):
        host, close, tail = hostport[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise UsageError(f"outbox {text}: a bracketed IPv6 host is [address] or "
                             "[address]:port")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    if port_text is None:
        return host, 22
    if not port_text.isdigit() or len(port_text) > 5:
        raise UsageError(f"outbox {text}: port {port_text!r} is not a number")
    return host, int(port_text)


def _check_host(host: str, url: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"outbox {url}: {host!r} is not an IPv6 address") from None
        return
    if not _HOSTNAME.fullmatch(host):
        raise UsageError(f"outbox {url}: {host!r} is not a host name or IPv4 address")


def _check_path(path: str, url: str) -> None:
    if not path.startswith("/"):
        raise UsageError(f"outbox {url}: the path must be absolute")
    segments = path.strip("/").split("/") if path != "/" else []
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise UsageError(f"outbox {url}: path segment {segment!r} is not allowed (letters, "
                             "digits and ._~+=,@- only; no empty, . or .. segments)")
