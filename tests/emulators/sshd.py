"""A real OpenSSH ``sshd`` (Debian's ``openssh-server``) on a loopback port, for the SFTP tests
and benchmark.

Plain Python (no pytest import), like :mod:`tests.emulators.servers`. :class:`Sshd` builds
everything in a temporary directory: its own ed25519 host key, config, pid file, an
authorized_keys file and a client key pair. It logs in as a dedicated system user it creates
(``dest-sftp-<random>``, with a random password; the machine runs as root) and deletes again
on :meth:`Sshd.stop`. ``sshd -D -e`` runs in the foreground, logging to a file at
``LogLevel DEBUG1`` with ``internal-sftp -l VERBOSE``, so tests can read what the server saw:
authentication attempts (:meth:`Sshd.auth_attempts`) and SFTP file operations
(:meth:`Sshd.sftp_operations`). It is stopped by its own pid.

Needs root (``useradd``, ``chpasswd``) and ``/usr/sbin/sshd``
(``apt-get install -y openssh-server``).

Also a pytest plugin (listed in ``tests/conftest.py``): the session fixture ``sshd`` starts
one server on first use and stops it at the end; a server that cannot start fails the tests
that use it, never skips them. Each file operation the server carries out is logged by
OpenSSH's own ``sftp-server`` (the program ``internal-sftp`` runs in-process) into a file of
its own, because ``internal-sftp`` can log only to syslog or to the client.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import pytest

from tests.emulators.servers import LOOPBACK, ServerStartError, free_port

__all__ = ["SSHD_BIN", "ClientKey", "SftpRequest", "Sshd", "fingerprint_of", "sshd"]

SSHD_BIN = Path("/usr/sbin/sshd")
SFTP_SERVER_BIN = Path("/usr/lib/openssh/sftp-server")
_INSTALL_HINT = "install it with `apt-get install -y openssh-server`"

_LIVE: set[Sshd] = set()


@atexit.register
def _stop_leftovers() -> None:  # last resort if a caller forgot stop()
    for server in list(_LIVE):
        server.stop()


class ClientKey(NamedTuple):
    """A client key pair: the private key file's text and the public key line."""

    private_text: str
    public_line: str


class SftpRequest(NamedTuple):
    """One SFTP request as sftp-server logged it: ``verb`` (``open``, ``write``, ``close``,
    ``posix-rename``, ``remove``, ``mkdir``, ``stat``…) and the rest of the line."""

    verb: str
    detail: str


# sftp-server at DEBUG3 logs each request once as "request N: <verb> …" (and its answer as
# "request N: sent …"), e.g. "debug3: request 1: open flags 26".
_REQUEST_LINE = re.compile(r"^debug\d: request \d+: (\S+)(.*)$", re.MULTILINE)
_AUTH_LINE = re.compile(r"userauth-request for user (\S+) service (\S+) method (\S+)")
_CONNECTION_LINE = re.compile(r"Connection from (\S+) port (\d+) on")


def _run(argv: list[str], *, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ServerStartError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _keygen(path: Path, comment: str, *, passphrase: str = "") -> ClientKey:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)])
    return ClientKey(path.read_text(), path.with_suffix(".pub").read_text().strip())


def fingerprint_of(public_line: str) -> str:
    """``SHA256:…`` of a public key line, as ``ssh-keygen -lf`` prints it."""
    out = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], stdin=public_line + "\n")
    return out.split()[1]


class Sshd:
    """sshd on 127.0.0.1 with its own keys and a throwaway login user."""

    name = "sshd"
    start_timeout = 20.0

    def __init__(self, *, sftp_log_level: str = "DEBUG3") -> None:
        self.sftp_log_level = sftp_log_level
        self.host = LOOPBACK
        self.port = 0
        self.user = f"dest-sftp-{secrets.token_hex(4)}"
        self.password = "pw-" + secrets.token_urlsafe(18)
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self.log_path: Path | None = None
        self._user_created = False
        self.host_key_line = ""
        self.host_key_fingerprint = ""
        self.client_key: ClientKey | None = None
        self.encrypted_client_key: ClientKey | None = None
        self.key_passphrase = "kp-" + secrets.token_urlsafe(12)
        #: A key pair sshd does not accept, and a host key that is not the server's.
        self.stranger_key: ClientKey | None = None
        self.other_host_key_line = ""

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def home(self) -> Path:
        """The login user's home directory (the SFTP login directory)."""
        assert self.dir is not None, "call start() first"
        return self.dir / "home"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        if self.is_running():
            return self
        if not SSHD_BIN.exists():
            raise ServerStartError(f"{SSHD_BIN} is missing; {_INSTALL_HINT}")
        if os.geteuid() != 0:
            raise ServerStartError("the sshd fixture creates a login user and needs root")
        try:
            self._prepare()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-"))
        self.dir.chmod(0o755)  # the login user must reach its home inside
        _LIVE.add(self)
        host_key = self.dir / "ssh_host_ed25519_key"
        self.host_key_line = " ".join(_keygen(host_key, "").public_line.split()[:2])
        self.host_key_fingerprint = fingerprint_of(self.host_key_line)
        other = _keygen(self.dir / "other_host_key", "")
        self.other_host_key_line = " ".join(other.public_line.split()[:2])
        self.client_key = _keygen(self.dir / "client_key", "destinations-test")
        self.encrypted_client_key = _keygen(
            self.dir / "client_key_enc", "destinations-test-enc", passphrase=self.key_passphrase
        )
        self.stranger_key = _keygen(self.dir / "stranger_key", "not-authorized")
        (self.dir / "authorized_keys").write_text(
            f"{self.client_key.public_line}\n{self.encrypted_client_key.public_line}\n"
        )
        self.home.mkdir()
        sftp_log = self.dir / "sftp.log"
        sftp_log.touch()
        _run(["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell",
              "/bin/sh", "--user-group", self.user])  # fmt: skip
        self._user_created = True
        _run(["chpasswd"], stdin=f"{self.user}:{self.password}\n")
        entry = pwd.getpwnam(self.user)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        os.chown(sftp_log, entry.pw_uid, entry.pw_gid)  # sftp-server runs as the user

    def _config(self, port: int) -> Path:
        assert self.dir is not None
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.dir / 'ssh_host_ed25519_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin no\n"
            f"AllowUsers {self.user}\n"
            "LogLevel DEBUG1\n"
            "MaxSessions 32\n"
            "MaxStartups 64:30:128\n"
            "MaxAuthTries 10\n"
            "X11Forwarding no\n"
            "AllowTcpForwarding no\n"
            "AllowAgentForwarding no\n"
            "PermitTTY no\n"
            "PrintMotd no\n"
            # OpenSSH's sftp-server (what internal-sftp runs in-process), logging each
            # request to a file: internal-sftp could only log to syslog or the client.
            f"Subsystem sftp {SFTP_SERVER_BIN} -e -l {self.sftp_log_level}"
            f" 2>>{self.dir / 'sftp.log'}\n"
        )
        return config

    def _launch(self) -> None:
        assert self.dir is not None
        last = ""
        for _ in range(3):  # a new port each time, in case another process took ours
            port = free_port(self.host)
            config = self._config(port)
            check = subprocess.run(
                [str(SSHD_BIN), "-t", "-f", str(config)], capture_output=True, text=True
            )
            if check.returncode != 0:
                raise ServerStartError(f"sshd -t rejected the config: {check.stderr.strip()}")
            self.log_path = self.dir / "sshd.log"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [str(SSHD_BIN), "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.port = port
            if self._wait_ready():
                return
            last = self.log_tail()
            self._terminate()
        raise ServerStartError(f"sshd did not start; log tail:\n{last}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the sshd this object started (by its pid), delete its user and its files."""
        self._terminate()
        _LIVE.discard(self)
        if self._user_created:
            self._user_created = False
            # Session processes of the user may still be exiting; userdel refuses until then.
            for _ in range(50):
                done = subprocess.run(["userdel", self.user], capture_output=True, timeout=30)
                if done.returncode in (0, 6):  # 6: no such user
                    break
                time.sleep(0.1)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port} pid={self.pid}" if self.is_running() else "stopped"
        return f"<Sshd {state}>"

    # -- what the server saw -----------------------------------------------------------------
    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text("utf-8", "replace")

    def log_tail(self, max_chars: int = 4000) -> str:
        return self.log_text()[-max_chars:].strip() or "(empty)"

    def log_mark(self) -> int:
        """sshd's log's current length, for ``auth_attempts``/``connections(since=...)``."""
        return len(self.log_text())

    def sftp_log_mark(self) -> int:
        """The sftp-server log's current length, for ``sftp_requests(since=...)``."""
        return len(self._sftp_log())

    def _sftp_log(self) -> str:
        if self.dir is None or not (self.dir / "sftp.log").exists():
            return ""
        return (self.dir / "sftp.log").read_text("utf-8", "replace")

    def sftp_requests(self, since: int = 0) -> list[SftpRequest]:
        """Every SFTP request the server received after ``since`` (a :meth:`sftp_log_mark`)."""
        return [
            SftpRequest(m.group(1), m.group(2).strip())
            for m in _REQUEST_LINE.finditer(self._sftp_log()[since:])
            if m.group(1) != "sent"
        ]

    def auth_attempts(self, since: int = 0) -> list[tuple[str, str]]:
        """``(user, method)`` of every authentication request sshd received after ``since``."""
        return [(m.group(1), m.group(3)) for m in _AUTH_LINE.finditer(self.log_text()[since:])]

    def connections(self, since: int = 0) -> int:
        """How many TCP connections sshd accepted after ``since``."""
        return len(_CONNECTION_LINE.findall(self.log_text()[since:]))


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """A running :class:`Sshd` for the whole session."""
    server = Sshd()
    try:
        server.start()
    except ServerStartError as exc:
        server.stop()
        pytest.fail(f"sshd could not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
