"""destinations-sftp against a real OpenSSH sshd on 127.0.0.1 (tests/emulators/sshd.py).

Files are read back straight from the server's disk (the server runs on this machine), not
through the store under test; what the server did is read from its own logs: sshd's
(connections, authentication requests) and sftp-server's (every SFTP request).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

import destinations
from destinations import (
    Destination,
    InvalidDestination,
    ResultFile,
    ResultSet,
    StoreError,
    StoreOptions,
    VerificationFailed,
    deliver,
    open_store,
    parse_destination,
    verify,
)
from destinations._progress import reporting_progress  # what deliver sets around a put
from destinations.api import create_api_key, create_app
from destinations.plugin import MiB
from destinations.testing import StoreConformance, secret_values
from destinations_sftp import SftpStore, parse_host_keys
from tests.emulators.sshd import Sshd, fingerprint_of

ALLOW = "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS"

#: SFTP requests that start or stand alone as a storage operation: a file written (its
#: ``open``; its writes, close and rename belong to it), a file removed, a directory made,
#: and any look-up. Session set-up (``limits``, ``init``) is not one.
_OPERATION_VERBS = frozenset({"open", "remove", "mkdir", "rmdir", "stat", "lstat", "realpath"})


@pytest.fixture(autouse=True)
def _allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # sshd lives on 127.0.0.1: the operator switch core's endpoint guard honours.
    monkeypatch.setenv(ALLOW, "1")


def _owned_dir(sshd: Sshd, path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(sshd.user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def root(sshd: Sshd) -> Path:
    """sftp_root of the tests: a directory the login user owns."""
    return _owned_dir(sshd, sshd.home / f"data-{uuid.uuid4().hex[:8]}")


def sftp_params(sshd: Sshd, root: Path | None, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": "SFTP test",
        "type": "sftp",
        "enabled": True,
        "sftp_host": "127.0.0.1",
        "sftp_port": sshd.port,
        "sftp_username": sshd.user,
        "sftp_password": sshd.password,
        "sftp_host_key": sshd.host_key_line,
        "sftp_path_prefix": "conformance/%COLLECTION_ID%",
    }
    if root is not None:
        params["sftp_root"] = str(root)
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def destination_for(sshd: Sshd, root: Path | None, **overrides: Any) -> Destination:
    return parse_destination(sftp_params(sshd, root, **overrides))


def key_params(sshd: Sshd) -> dict[str, Any]:
    assert sshd.client_key is not None
    return {"sftp_password": None, "sftp_private_key": sshd.client_key.private_text}


class SftpRequestCounter:
    """Storage operations sftp-server logged (see ``_OPERATION_VERBS``)."""

    def __init__(self, sshd: Sshd) -> None:
        self.sshd = sshd
        self.mark = sshd.sftp_log_mark()

    def reset(self) -> None:
        self.mark = self.sshd.sftp_log_mark()

    def count(self) -> int:
        return sum(r.verb in _OPERATION_VERBS for r in self.sshd.sftp_requests(self.mark))


# --- the shared conformance suite ---------------------------------------------------------


class TestSftpConformance(StoreConformance):
    stores_metadata = False  # SFTP keeps bytes only (README: content_type, metadata)

    @pytest.fixture
    def destination(self, sshd: Sshd, root: Path) -> Destination:
        return destination_for(sshd, root)

    @pytest.fixture
    def bad_credentials_destination(self, sshd: Sshd, root: Path) -> Destination:
        return destination_for(sshd, root, sftp_password="not-the-password-7d1e")

    @pytest.fixture
    def missing_bucket_destination(self, sshd: Sshd, root: Path) -> Destination:
        return destination_for(sshd, root / "no-such-dir")

    @pytest.fixture
    def read_object(self, root: Path) -> Callable[[str], bytes | None]:
        def read(key: str) -> bytes | None:
            path = root / key
            return path.read_bytes() if path.is_file() else None

        return read

    @pytest.fixture
    def list_keys(self, root: Path) -> Callable[[str], list[str]]:
        def list_keys(prefix: str) -> list[str]:
            keys = []
            for dirpath, _, names in os.walk(root):
                for name in names:  # temporary dot-files included: none may be left
                    key = os.path.relpath(os.path.join(dirpath, name), root)
                    if key.startswith(prefix):
                        keys.append(key)
            return keys

        return list_keys

    @pytest.fixture
    def request_counter(self, sshd: Sshd) -> SftpRequestCounter:
        return SftpRequestCounter(sshd)


# --- type and fields ----------------------------------------------------------------------


def test_type_is_listed_with_its_fields() -> None:
    dtype = destinations.get_type("sftp")
    assert dtype.required_fields == ("sftp_host", "sftp_username", "sftp_host_key")
    assert set(dtype.optional_fields) == {
        "sftp_port",
        "sftp_password",
        "sftp_private_key",
        "sftp_private_key_passphrase",
        "sftp_path_prefix",
        "sftp_root",
    }
    assert dtype.secret_fields == {
        "sftp_password",
        "sftp_private_key",
        "sftp_private_key_passphrase",
    }
    assert dtype.prefix_field == "sftp_path_prefix"
    assert dtype.reports_progress is True
    for info in dtype.fields.model_fields.values():
        assert info.description
    listing = subprocess.run(
        [sys.executable, "-m", "destinations", "types"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "sftp:" in listing.stdout and "sftp_host_key" in listing.stdout


def field_errors(sshd: Sshd, **overrides: Any) -> dict[str, str]:
    with pytest.raises(InvalidDestination) as info:
        parse_destination(sftp_params(sshd, None, **overrides))
    return info.value.errors


def test_host_key_is_required_and_there_is_no_accept_any(sshd: Sshd) -> None:
    assert field_errors(sshd, sftp_host_key=None) == {"sftp_host_key": "required"}
    for anything in ("", "*", "any", "accept-new", "no"):
        assert list(field_errors(sshd, sftp_host_key=anything)) == ["sftp_host_key"]


def test_host_key_forms(sshd: Sshd) -> None:
    keyscan = f"127.0.0.1 {sshd.host_key_line}"  # ssh-keyscan's output format
    known_hosts = f"[127.0.0.1]:{sshd.port} {sshd.host_key_line} a comment"
    lf = f"256 {sshd.host_key_fingerprint} root@host (ED25519)"  # ssh-keygen -lf
    for value in (sshd.host_key_line, keyscan, known_hosts, sshd.host_key_fingerprint, lf):
        keys = parse_host_keys(value)
        assert [k.fingerprint for k in keys] == [sshd.host_key_fingerprint], value
    both = parse_host_keys(f"# pasted\n{sshd.other_host_key_line}\n\n{keyscan}\n")
    assert [k.fingerprint for k in both] == [
        fingerprint_of(sshd.other_host_key_line),
        sshd.host_key_fingerprint,
    ]
    stored = destination_for(sshd, None, sftp_host_key=keyscan).settings.sftp_host_key
    assert stored == sshd.host_key_line  # normalised: host names and comments dropped


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ssh-ed25519 not/base64!", "not valid base64"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKantASJE6upOit3FlYIg/aiI/xTCYd/QfiopjYlZJVz",
         "not an ssh-rsa key"),
        ("MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", "MD5 fingerprints"),
        ("16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", "MD5 fingerprints"),
        ("@cert-authority *.example.com ssh-ed25519 AAAA", "not supported"),
        ("SHA256:short", "is not a host key"),
        ("hello world", "is not a host key"),
    ],
)  # fmt: skip
def test_bad_host_keys_are_named(sshd: Sshd, value: str, fragment: str) -> None:
    errors = field_errors(sshd, sftp_host_key=value)
    assert list(errors) == ["sftp_host_key"]
    assert fragment in errors["sftp_host_key"]


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"sftp_host": "sftp://example.com"}, "sftp_host", "host name or IP address only"),
        ({"sftp_host": "user@example.com"}, "sftp_host", "host name or IP address only"),
        ({"sftp_host": "example.com:22"}, "sftp_host", "host name or IP address only"),
        ({"sftp_host": "bad_host!"}, "sftp_host", "not a valid host name"),
        ({"sftp_port": "0"}, "sftp_port", "1 to 65535"),
        ({"sftp_port": "70000"}, "sftp_port", "1 to 65535"),
        ({"sftp_port": "ssh"}, "sftp_port", "1 to 65535"),
        ({"sftp_password": None}, "sftp_password", "sftp_private_key"),
        ({"sftp_private_key_passphrase": "x"}, "sftp_private_key_passphrase", "only used"),
        ({"sftp_password": None, "sftp_private_key": "ssh-ed25519 AAAA"},
         "sftp_private_key", "public key"),
        ({"sftp_password": None, "sftp_private_key": "hunter2"},
         "sftp_private_key", "private key file"),
        ({"sftp_username": "a\nb"}, "sftp_username", "control characters"),
        ({"sftp_root": "/up\x00load"}, "sftp_root", "control characters"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(
    sshd: Sshd, overrides: dict[str, Any], field: str, fragment: str
) -> None:
    errors = field_errors(sshd, **overrides)
    assert list(errors) == [field]
    assert fragment in errors[field]
    assert "hunter2" not in json.dumps(errors)


def test_field_normalisation(sshd: Sshd) -> None:
    settings = destination_for(
        sshd, None, sftp_host=" SFTP.Example.COM ", sftp_port="2222", sftp_root="/upload/"
    ).settings
    assert (settings.sftp_host, settings.sftp_port, settings.sftp_root) == (
        "sftp.example.com",
        2222,
        "/upload",
    )
    assert destination_for(sshd, None, sftp_host="[::1]").settings.sftp_host == "::1"
    defaults = parse_destination({**sftp_params(sshd, None), "sftp_port": ""}).settings
    assert defaults.sftp_port == 22 and defaults.sftp_root is None


# --- credentials and host keys --------------------------------------------------------------


def test_private_key_login_and_encrypted_key(sshd: Sshd, root: Path) -> None:
    verify(destination_for(sshd, root, **key_params(sshd)), timeout=30)
    assert sshd.encrypted_client_key is not None
    encrypted = {
        "sftp_password": None,
        "sftp_private_key": sshd.encrypted_client_key.private_text,
        "sftp_private_key_passphrase": sshd.key_passphrase,
    }
    verify(destination_for(sshd, root, **encrypted), timeout=30)
    with pytest.raises(VerificationFailed) as info:
        verify(
            destination_for(sshd, root, **{**encrypted, "sftp_private_key_passphrase": "nope"}),
            timeout=30,
        )
    assert (info.value.step, info.value.code) == ("put", "invalid_credentials")
    assert "passphrase" in info.value.message


def test_wrong_key_is_invalid_credentials_at_put(sshd: Sshd, root: Path) -> None:
    assert sshd.stranger_key is not None
    destination = destination_for(
        sshd, root, sftp_password=None, sftp_private_key=sshd.stranger_key.private_text
    )
    mark = sshd.log_mark()
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    assert (info.value.step, info.value.code) == ("put", "invalid_credentials")
    assert info.value.error.transient is False
    assert (sshd.user, "publickey") in sshd.auth_attempts(mark)  # it did reach the server
    for secret in secret_values(destination):
        assert secret not in f"{info.value} {info.value!r}"


def test_wrong_password_is_invalid_credentials_and_permanent(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_password="wrong-password-1234")
    with open_store(destination) as store, pytest.raises(StoreError) as info:
        store.put("x/y.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert info.value.code == "invalid_credentials"
    assert info.value.transient is False
    assert isinstance(info.value, PermissionError)
    assert "wrong-password-1234" not in f"{info.value} {info.value!r}"


@pytest.mark.parametrize("form", ["line", "fingerprint"])
def test_wrong_host_key_is_refused_before_any_authentication(
    sshd: Sshd, root: Path, form: str
) -> None:
    other = sshd.other_host_key_line
    pinned = other if form == "line" else fingerprint_of(other)
    mark = sshd.log_mark()
    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, root, sftp_host_key=pinned), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "host_key_mismatch")
    assert info.value.error.transient is False
    assert info.value.message.startswith(
        f"host key mismatch: expected {fingerprint_of(other)}, got {sshd.host_key_fingerprint}"
    )
    time.sleep(0.2)  # sshd writes the connection's last lines as it closes
    assert sshd.connections(mark) == 1  # the server was reached…
    assert sshd.auth_attempts(mark) == []  # …and received no authentication request at all
    assert sshd.password not in sshd.log_text()[mark:]
    # The same log shows authentication requests when the key is right (the check works).
    mark = sshd.log_mark()
    verify(destination_for(sshd, root), timeout=30)
    assert (sshd.user, "password") in sshd.auth_attempts(mark)


def test_host_key_of_a_type_the_server_lacks_is_a_mismatch(
    sshd: Sshd, root: Path, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa")],
        check=True,
        timeout=60,
    )
    rsa_line = " ".join((tmp_path / "rsa.pub").read_text().split()[:2])
    mark = sshd.log_mark()
    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, root, sftp_host_key=rsa_line), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "host_key_mismatch")
    assert info.value.message.startswith(f"host key mismatch: expected {fingerprint_of(rsa_line)}")
    assert sshd.auth_attempts(mark) == []


# --- permissions, missing directories -------------------------------------------------------


def test_read_only_directory_is_access_denied(sshd: Sshd, root: Path) -> None:
    locked = _owned_dir(sshd, root / f"locked-{uuid.uuid4().hex[:6]}", 0o555)
    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, locked, sftp_path_prefix=""), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "access_denied")
    assert info.value.error.transient is False
    # A directory that would have to be created inside a read-only one: the same.
    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, locked, sftp_path_prefix="new/dir"), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "access_denied")
    assert os.listdir(locked) == []


def test_missing_directories_are_created_and_counted(sshd: Sshd, root: Path) -> None:
    prefix = f"deep-{uuid.uuid4().hex[:6]}/a/b"
    destination = destination_for(sshd, root, sftp_path_prefix=prefix)
    mark = sshd.sftp_log_mark()
    verify(destination, timeout=30)
    verbs = [r.verb for r in sshd.sftp_requests(mark)]
    assert verbs.count("mkdir") == 3 + 2  # 3 made, 2 that first found no parent
    assert (root / prefix).is_dir() and os.listdir(root / prefix) == []


def test_verify_sftp_requests(sshd: Sshd, root: Path) -> None:
    """Verify is one put and one remove: the SFTP requests the server received."""
    destination = destination_for(sshd, root, sftp_path_prefix="counted")
    verify(destination, timeout=30)  # creates the directory
    mark = sshd.sftp_log_mark()
    verify(destination, timeout=30)
    verbs = [r.verb for r in sshd.sftp_requests(mark)]
    # limits@openssh.com is asked once per new SFTP channel (asyncssh's session set-up).
    assert verbs == ["limits", "open", "write", "close", "posix-rename", "remove"], verbs


# --- uploads --------------------------------------------------------------------------------


class _GatedSource(io.RawIOBase):
    """A stream that gives ``before`` bytes, calls ``at_gate`` once, then the rest."""

    def __init__(self, data: bytes, before: int, at_gate: Callable[[], None]) -> None:
        self._buf = io.BytesIO(data)
        self._before = before
        self._at_gate: Callable[[], None] | None = at_gate

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._at_gate is not None and self._buf.tell() >= self._before:
            gate, self._at_gate = self._at_gate, None
            gate()
        limit = len(b)
        if self._at_gate is not None:
            limit = min(limit, self._before - self._buf.tell())
        chunk = self._buf.read(limit)
        b[: len(chunk)] = chunk
        return len(chunk)


def test_readers_never_see_a_partial_file(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="")
    folder = _owned_dir(sshd, root / f"atomic-{uuid.uuid4().hex[:6]}")
    key = f"{folder.name}/report.csv"
    body = os.urandom(6 * MiB)
    seen: dict[str, Any] = {}

    def look() -> None:
        time.sleep(0.3)  # let the first chunks reach the server
        seen["final"] = (root / key).exists()
        seen["entries"] = os.listdir(folder)

    with open_store(destination) as store:
        (root / key).write_bytes(b"old")
        os.chown(root / key, *_uid_gid(sshd))
        store.put(key, _GatedSource(body, 3 * MiB, look), size=len(body), content_type=None)
    assert (root / key).read_bytes() == body
    assert seen["final"] is True and (root / key).stat().st_size == len(body)
    temps = [n for n in seen["entries"] if n.endswith(".destinations-tmp")]
    assert len(temps) == 1 and temps[0].startswith(".")  # written beside it, hidden
    assert sorted(os.listdir(folder)) == ["report.csv"]


def _uid_gid(sshd: Sshd) -> tuple[int, int]:
    entry = pwd.getpwnam(sshd.user)
    return entry.pw_uid, entry.pw_gid


def test_a_failing_source_removes_its_temporary_file(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="")
    folder = _owned_dir(sshd, root / f"fail-{uuid.uuid4().hex[:6]}")

    def boom() -> None:
        raise OSError("the source broke")

    with open_store(destination) as store:
        with pytest.raises(OSError, match="the source broke") as info:
            store.put(
                f"{folder.name}/x.bin",
                _GatedSource(os.urandom(2 * MiB), MiB, boom),
                size=2 * MiB,
                content_type=None,
            )
        assert not isinstance(info.value, StoreError)  # the source's error, unmapped
        with pytest.raises(StoreError) as short:
            store.put(f"{folder.name}/y.bin", io.BytesIO(b"abc"), size=10, content_type=None)
        assert (short.value.code, short.value.provider_code) == ("provider_error", "IncompleteBody")
    assert os.listdir(folder) == []


def _connection_processes(sshd: Sshd) -> list[int]:
    """Pids of every process below the sshd listener: the per-connection sshd processes
    and their sftp-server."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(sshd.pid or -1, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def test_a_killed_connection_leaves_no_file_under_the_final_name(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="")
    folder = _owned_dir(sshd, root / f"killed-{uuid.uuid4().hex[:6]}")
    key = f"{folder.name}/big.bin"
    killed: list[int] = []

    def kill() -> None:
        for pid in _connection_processes(sshd):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # gone with its parent, killed a moment before
                continue
            killed.append(pid)

    with open_store(destination, StoreOptions(timeout=10)) as store:
        with pytest.raises(StoreError) as info:
            store.put(
                key, _GatedSource(os.urandom(16 * MiB), 4 * MiB, kill), size=16 * MiB,
                content_type=None,
            )  # fmt: skip
        assert killed, "no connection process was found to kill"
        assert info.value.code == "endpoint_unreachable"
        assert info.value.transient is True
        assert not (root / key).exists()
        left = os.listdir(folder)
        assert all(n.endswith(".destinations-tmp") for n in left)  # at most the temporary
        # The store reconnects; the temporary file the lost connection left is removed then.
        store.put(f"{folder.name}/after.txt", io.BytesIO(b"ok"), size=2, content_type=None)
    assert sorted(os.listdir(folder)) == ["after.txt"]


def test_a_lost_sftp_channel_is_replaced(sshd: Sshd, root: Path) -> None:
    """sftp-server dies but the SSH connection lives: the next put opens a new channel."""
    destination = destination_for(sshd, root, sftp_path_prefix="")
    folder = _owned_dir(sshd, root / f"channel-{uuid.uuid4().hex[:6]}")
    killed: list[int] = []

    def kill_sftp_server() -> None:
        for pid in _connection_processes(sshd):
            if b"sftp-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    mark = sshd.log_mark()
    with open_store(destination, StoreOptions(timeout=10)) as store:
        with pytest.raises(StoreError) as info:
            store.put(
                f"{folder.name}/big.bin",
                _GatedSource(os.urandom(8 * MiB), 2 * MiB, kill_sftp_server),
                size=8 * MiB,
                content_type=None,
            )
        assert killed and (info.value.code, info.value.transient) == ("endpoint_unreachable", True)
        store.put(f"{folder.name}/after.txt", io.BytesIO(b"ok"), size=2, content_type=None)
    assert sshd.connections(mark) == 1  # the same connection, a new channel
    assert sorted(os.listdir(folder)) == ["after.txt"]  # the temporary file was removed


def test_overwrite_without_posix_rename(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="plain-rename")
    with open_store(destination) as store:
        assert isinstance(store, SftpStore)
        store._posix_rename = False  # a server without posix-rename@openssh.com
        for body in (b"first", b"second"):
            store.put("plain-rename/f.txt", io.BytesIO(body), size=len(body), content_type=None)
    assert (root / "plain-rename/f.txt").read_bytes() == b"second"


def test_progress_is_reported_in_steps(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="progress")
    for size in (3 * MiB, 40 * MiB):
        steps: list[int] = []
        with open_store(destination) as store, reporting_progress(steps.append):
            store.put("progress/p.bin", io.BytesIO(os.urandom(size)), size=size, content_type=None)
        assert sum(steps) == size
        assert max(steps) <= max(min(8 * MiB, size // 100), 32 * 1024), (size, max(steps))


def test_one_connection_many_parallel_puts(sshd: Sshd, root: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="parallel")
    bodies = {f"parallel/{i:03}.txt": os.urandom(10 * 1024) for i in range(60)}
    mark = sshd.log_mark()
    with open_store(destination, StoreOptions(max_connections=8)) as store:
        threads = [
            threading.Thread(
                target=store.put,
                args=(k, io.BytesIO(v)),
                kwargs={"size": len(v), "content_type": None},
            )
            for k, v in bodies.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sshd.connections(mark) == 1
    for key, body in bodies.items():
        assert (root / key).read_bytes() == body


def test_deliver_a_result_set(sshd: Sshd, root: Path, tmp_path: Path) -> None:
    destination = destination_for(sshd, root, sftp_path_prefix="results/%COLLECTION_ID%")
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"n": 1}\n' * 50_000)
    result = ResultSet(
        collection_id="c42",
        collection_name="shoes",
        result_set_id="r1",
        files=[
            ResultFile("items.jsonl", path),
            ResultFile("meta.json", stream=io.BytesIO(b"{}"), metadata={"origin": "x"}),
        ],
    )
    events: list[Any] = []
    report = deliver(result, [destination], on_progress=events.append)
    assert [(s.status, s.error) for s in report.statuses] == [("success", None)]
    assert (root / "results/c42/items.jsonl").read_bytes() == path.read_bytes()
    assert (root / "results/c42/meta.json").read_bytes() == b"{}"
    sent = [e.bytes_sent for e in events if e.file_name == "items.jsonl"]
    assert sent and sent[-1] == path.stat().st_size


# --- the endpoint guard ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_refused_unless_allowed(
    sshd: Sshd, root: Path, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW)
    mark = sshd.log_mark()
    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, root, sftp_host=host), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "endpoint_not_allowed")
    assert "sftp_host" in info.value.message
    assert ("loopback" if host == "127.0.0.1" else "not public") in info.value.message
    time.sleep(0.1)
    assert sshd.connections(mark) == 0  # refused before any connect


def test_unreachable_port_is_endpoint_unreachable(sshd: Sshd, root: Path) -> None:
    from tests.emulators.servers import free_port

    with pytest.raises(VerificationFailed) as info:
        verify(destination_for(sshd, root, sftp_port=free_port()), timeout=10)
    assert (info.value.step, info.value.code) == ("put", "endpoint_unreachable")
    assert info.value.error.transient is True


# --- secrets --------------------------------------------------------------------------------


def test_secrets_never_in_reprs_logs_or_messages(
    sshd: Sshd, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert sshd.encrypted_client_key is not None
    good = destination_for(
        sshd,
        root,
        sftp_private_key=sshd.encrypted_client_key.private_text,
        sftp_private_key_passphrase=sshd.key_passphrase,
    )
    bad = destination_for(sshd, root, sftp_password="wrong-Pa55word-xyz")
    secrets = [*secret_values(good), *secret_values(bad)]
    assert len(secrets) == 4
    caplog.set_level(logging.DEBUG)
    texts = [repr(good), str(good), repr(good.settings), json.dumps(good.to_params(), default=str)]
    verify(good, timeout=30)
    for destination in (bad, destination_for(sshd, root, sftp_host_key=sshd.other_host_key_line)):
        with pytest.raises(VerificationFailed) as info:
            verify(destination, timeout=30)
        texts += [str(info.value), repr(info.value), info.value.message, repr(info.value.error)]
    with open_store(good) as store:
        texts.append(repr(store))
    texts.append(caplog.text)
    assert any("asyncssh" in r.name for r in caplog.records)  # the SDK's own logs were seen
    blob = "\n".join(texts)
    for secret in secrets:
        for piece in secret.strip().splitlines():
            if len(piece) > 12:
                assert piece not in blob


# --- the API ------------------------------------------------------------------------------


def test_api_creates_an_sftp_destination_with_secrets_masked_and_encrypted(
    sshd: Sshd, root: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'api.db'}"
    app = create_app(
        database_url=database_url,
        local_root=_local_root(tmp_path),
        encryption_keys=[Fernet.generate_key().decode()],
    )
    try:
        api_key = create_api_key("sftp", database_url=database_url)
        client = TestClient(app)
        assert sshd.client_key is not None
        form = {
            **sftp_params(sshd, root, sftp_path_prefix="api/%COLLECTION_ID%"),
            "enabled": "true",
            "sftp_port": str(sshd.port),
            "sftp_private_key": sshd.client_key.private_text,
        }
        response = client.post(f"/destinations?api_key={api_key}", data=form)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["request_info"] == {"success": True}
        shown = body["destination"]
        assert shown["type"] == "sftp" and shown["last_verified_at"] is not None
        assert shown["sftp_host_key"] == sshd.host_key_line
        for secret_field in ("sftp_password", "sftp_private_key"):
            assert secret_field not in shown
        listed = client.get(f"/destinations/{shown['id']}?api_key={api_key}").text
        for text in (response.text, listed):
            assert sshd.password not in text
            assert "PRIVATE KEY" not in text
        with app.state.engine.connect() as connection:
            rows = [
                dict(r._mapping) for r in connection.execute(sa.text("SELECT * FROM destinations"))
            ]
        assert len(rows) == 1
        stored = json.dumps(rows, default=str)
        assert sshd.password not in stored and "PRIVATE KEY" not in stored
        params = rows[0]["params"]
        params = json.loads(params) if isinstance(params, str) else params
        assert "sftp_password" not in params and params["sftp_username"] == sshd.user
        assert rows[0]["secrets"].startswith("gAAAA")  # a Fernet token
        app.state.engine.dispose()
        raw = (tmp_path / "api.db").read_bytes()
        assert sshd.password.encode() not in raw and b"PRIVATE KEY" not in raw
        # A wrong host key is a connectivity problem with its own code; nothing is stored.
        response = client.post(
            f"/destinations?api_key={api_key}",
            data={**form, "sftp_host_key": sshd.other_host_key_line},
        )
        assert response.status_code == 400
        info = response.json()["request_info"]
        assert (info["step"], info["code"]) == ("put", "host_key_mismatch")
        assert "PRIVATE KEY" not in response.text
    finally:
        app.state.engine.dispose()
    assert [p for p in (root / "api").rglob("*") if p.is_file()] == []
    assert stat.S_ISDIR((root / "api").stat().st_mode)


def _local_root(tmp_path: Path) -> Path:
    (tmp_path / "local").mkdir()
    return tmp_path / "local"


def test_asyncssh_is_imported_only_when_a_store_opens() -> None:
    script = """
import sys
import destinations
from destinations import open_store
destinations.available_types()
d = destinations.parse_destination({
    "name": "x", "type": "sftp", "enabled": True, "sftp_host": "sftp.example.com",
    "sftp_username": "u", "sftp_password": "p", "sftp_host_key": "SHA256:" + "A" * 43,
})
before = "asyncssh" in sys.modules
open_store(d).close()  # connects lazily: nothing is sent here
print(before, "asyncssh" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("name", ["SFTPConnectionLost", "SFTPNoConnection", "ConnectionLost"])
def test_a_lost_connection_in_any_of_its_forms_is_transient(
    sshd: Sshd, root: Path, name: str
) -> None:
    """Killing a connection mid-upload shows as ConnectionLost, SFTPConnectionLost or, a step
    later, SFTPNoConnection ("Connection not open"): all are the same loss, worth a retry."""
    import asyncssh

    from destinations_sftp._store import map_error

    fields = destination_for(sshd, root).settings
    error = map_error(getattr(asyncssh, name)("gone"), fields=fields)  # type: ignore[arg-type]
    assert (error.code, error.transient) == ("endpoint_unreachable", True)
