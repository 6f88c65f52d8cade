"""The plugin toolkit: transport-error classification against real loopback sockets, the
size-limited reader, and the annotated field types."""

from __future__ import annotations

import io
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import botocore.config
import botocore.exceptions
import botocore.session
import pytest
import requests
import urllib3
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from destinations.plugin import (
    AccessKeyId,
    DestinationType,
    EndpointNotAllowed,
    InvalidDestination,
    LimitedReader,
    PathPrefix,
    Secret,
    SecretStr,
    SourceTooLarge,
    StoreError,
    classify_transport_error,
    progress_granule,
)

# --------------------------------------------------------------------------------------------
# loopback servers


def _free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def _silent_listener() -> Iterator[int]:
    """Accepts connections (kernel backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@contextmanager
def _serving(handle: object) -> Iterator[int]:
    """A listener whose accepted connections are handed to ``handle(conn)`` in a thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                handle(conn)  # type: ignore[operator]

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _plain_http(conn: socket.socket) -> None:
    """Answers anything with a plain-text HTTP response (not TLS)."""
    conn.settimeout(2)
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass


def _reset(conn: socket.socket) -> None:
    """Reads the request, then resets the connection (RST: SO_LINGER 0)."""
    conn.settimeout(2)
    with suppress(OSError):
        conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _raised(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("the call did not fail")


def _classify(exc: BaseException, **kwargs: object) -> StoreError:
    error = classify_transport_error(exc, host="the test server", check="test_endpoint", **kwargs)  # type: ignore[arg-type]
    assert error is not None, f"{type(exc).__name__} was not classified"
    return error


# --------------------------------------------------------------------------------------------
# refused


def test_refused_port_raw_socket() -> None:
    port = _free_port()
    exc = _raised(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
    error = _classify(exc)
    assert (error.code, error.transient, error.provider_code) == (
        "endpoint_unreachable",
        True,
        "ConnectionRefusedError",
    )
    assert isinstance(error, ConnectionError)
    assert "refused the connection" in error.message
    assert "test_endpoint" in error.message


def test_refused_port_through_requests_and_urllib3() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/x"
    via_requests = _raised(lambda: requests.get(url, timeout=2))
    pool = urllib3.PoolManager(retries=False)
    via_urllib3 = _raised(lambda: pool.request("GET", url, timeout=2))
    for exc in (via_requests, via_urllib3):
        error = _classify(exc)
        assert (error.code, error.transient) == ("endpoint_unreachable", True), type(exc)
        assert "refused" in error.message


def test_refused_port_through_botocore() -> None:
    port = _free_port()
    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    exc = _raised(lambda: client.delete_object(Bucket="b", Key="k"))
    assert isinstance(exc, botocore.exceptions.EndpointConnectionError)
    error = _classify(exc)
    assert (error.code, error.transient) == ("endpoint_unreachable", True)
    # botocore's own class decided first (outermost), the refusal underneath says why
    assert "refused" in error.message


# --------------------------------------------------------------------------------------------
# timeouts


def test_silent_listener_is_read_timeout() -> None:
    with _silent_listener() as port:
        url = f"http://127.0.0.1:{port}/x"
        via_requests = _raised(lambda: requests.get(url, timeout=0.3))
        pool = urllib3.PoolManager(retries=False)
        via_urllib3 = _raised(lambda: pool.request("GET", url, timeout=0.3))
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
            raw = _raised(lambda: s.recv(1))
    for exc in (via_requests, via_urllib3, raw):
        error = _classify(exc, timeout=0.3)
        assert (error.code, error.transient) == ("timeout", True), type(exc)
        assert isinstance(error, TimeoutError)
        assert "within 0.3 s" in error.message
    assert "(read timeout)" in _classify(via_requests).message
    assert _classify(via_requests).provider_code == "ReadTimeout"


def test_tls_handshake_with_a_silent_listener_is_a_timeout() -> None:
    with _silent_listener() as port:
        exc = _raised(lambda: requests.get(f"https://127.0.0.1:{port}/", timeout=0.3))
    error = _classify(exc)
    assert (error.code, error.transient) == ("timeout", True)


# --------------------------------------------------------------------------------------------
# TLS


def test_tls_handshake_against_a_plain_listener() -> None:
    with _serving(_plain_http) as port:
        url = f"https://127.0.0.1:{port}/x"
        via_requests = _raised(lambda: requests.get(url, timeout=2))
        pool = urllib3.PoolManager(retries=False)
        via_urllib3 = _raised(lambda: pool.request("GET", url, timeout=2))
    for exc in (via_requests, via_urllib3):
        error = _classify(exc)
        assert (error.code, error.transient) == ("tls_error", False), type(exc)
        assert "TLS" in error.message
        assert error.provider_code == "SSLError"


def test_tls_failure_raw_ssl_socket() -> None:
    with _serving(_plain_http) as port:
        context = ssl_context()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            exc = _raised(lambda: context.wrap_socket(sock, server_hostname="localhost"))
    error = _classify(exc)
    assert (error.code, error.transient) == ("tls_error", False)


def ssl_context() -> object:
    import ssl

    return ssl.create_default_context()


# --------------------------------------------------------------------------------------------
# reset, DNS, precedence, nothing to classify


def test_connection_reset_by_the_server() -> None:
    with _serving(_reset) as port:
        exc = _raised(lambda: requests.get(f"http://127.0.0.1:{port}/x", timeout=2))
    error = _classify(exc)
    assert (error.code, error.transient) == ("endpoint_unreachable", True)
    assert isinstance(error, ConnectionError)


def test_dns_failures() -> None:
    # Built by hand: a real lookup could leave loopback.
    missing = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    for gai, transient in ((missing, False), (again, True)):
        try:
            try:
                raise gai
            except socket.gaierror as inner:
                raise requests.exceptions.ConnectionError("wrapped") from inner
        except requests.exceptions.ConnectionError as outer:
            error = _classify(outer)
        assert (error.code, error.transient) == ("endpoint_unreachable", transient)
        assert "could not be resolved" in error.message


def test_refusal_takes_precedence() -> None:
    refusal = EndpointNotAllowed("refused by the guard", address="10.0.0.1", rule="a private")
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as inner:
            raise requests.exceptions.ConnectionError(refusal) from inner
    except requests.exceptions.ConnectionError as outer:
        assert classify_transport_error(outer, host="h") is refusal


def test_nothing_to_classify() -> None:
    assert classify_transport_error(ValueError("x"), host="h") is None
    assert classify_transport_error(FileNotFoundError(2, "no such file"), host="h") is None
    # an already-mapped StoreError is not a network failure in itself
    mapped = StoreError("timeout", "earlier")
    assert classify_transport_error(RuntimeError(mapped), host="h") is None


def test_messages_never_echo_the_exception() -> None:
    exc = ConnectionRefusedError(111, "secret-token-in-url")
    error = _classify(exc)
    assert "secret-token-in-url" not in f"{error} {error!r} {error.message}"


# --------------------------------------------------------------------------------------------
# LimitedReader


def test_limited_reader_passes_up_to_the_limit() -> None:
    reader = LimitedReader(io.BytesIO(b"abcdef"), 6)
    assert reader.read(4) == b"abcd"
    assert reader.read(4) == b"ef"
    assert reader.read(4) == b""
    assert reader.tell() == 6
    assert LimitedReader(io.BytesIO(b"abcdef"), 6).read() == b"abcdef"
    assert io.BufferedReader(LimitedReader(io.BytesIO(b"xyz"), 10)).read() == b"xyz"


def test_limited_reader_refuses_more() -> None:
    reader = LimitedReader(io.BytesIO(b"abcdefg"), 6, what="the download")
    assert reader.read(6) == b"abcdef"
    with pytest.raises(SourceTooLarge) as info:
        reader.read(10)
    error = info.value
    assert (error.code, error.provider_code, error.transient) == (
        "provider_error",
        "IncompleteBody",
        False,
    )
    assert "the download gave more than the 6 bytes" in error.message
    with pytest.raises(SourceTooLarge):
        LimitedReader(io.BytesIO(b"abcdefg"), 6).read()
    with pytest.raises(SourceTooLarge):
        io.BufferedReader(LimitedReader(io.BytesIO(b"a" * 100_000), 99_999)).read()


def test_limited_reader_exact_refuses_less() -> None:
    reader = LimitedReader(io.BytesIO(b"abc"), 5, exact=True)
    assert reader.read(10) == b"abc"
    with pytest.raises(StoreError) as info:
        reader.read(10)
    assert "only 3 of the 5 bytes" in info.value.message
    assert LimitedReader(io.BytesIO(b""), 0, exact=True).read() == b""


def test_limited_reader_does_not_close_the_stream() -> None:
    stream = io.BytesIO(b"abc")
    LimitedReader(stream, 3).close()
    assert not stream.closed


# --------------------------------------------------------------------------------------------
# annotated field types


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    my_key: AccessKeyId
    my_secret: Secret
    my_prefix: PathPrefix = ""
    my_other_secret: Secret | None = Field(None, description="An optional secret.")


def _field_error(**data: object) -> dict[str, str]:
    base: dict[str, object] = {"my_key": "AKID", "my_secret": "s3cr3t"}
    base.update(data)
    with pytest.raises(ValidationError) as info:
        _Fields.model_validate(base)
    out: dict[str, str] = {}
    for err in info.value.errors():
        cause = (err.get("ctx") or {}).get("error")
        assert isinstance(cause, InvalidDestination), err
        out.update(cause.errors)
    return out


def test_field_types_accept_and_strip() -> None:
    fields = _Fields.model_validate(
        {"my_key": " AKIDEXAMPLE ", "my_secret": " abc+/def ", "my_prefix": "x/%DATE%"}
    )
    assert fields.my_key == "AKIDEXAMPLE"
    assert fields.my_secret.get_secret_value() == "abc+/def"
    assert fields.my_prefix == "x/%DATE%"
    assert fields.my_other_secret is None


def test_access_key_id_limits() -> None:
    assert _field_error(my_key="") == {"my_key": "required"}
    assert "128 printable ASCII" in _field_error(my_key="A" * 129)["my_key"]
    assert "no spaces" in _field_error(my_key="AK ID")["my_key"]
    assert "my_key" in _field_error(my_key="AKÏD")


def test_secret_limits_never_echo_the_value() -> None:
    assert _field_error(my_secret="   ") == {"my_secret": "required"}
    spaced = _field_error(my_secret="abc def-hunter2")["my_secret"]
    # The '+'-arrives-as-a-space hint is the HTTP API's, for form bodies only.
    assert spaced == "must not contain spaces" and "hunter2" not in spaced
    assert "printable ASCII" in _field_error(my_secret="abc\x01hunter2")["my_secret"]
    assert "at most 1024" in _field_error(my_secret="x" * 1025)["my_secret"]
    assert _field_error(my_other_secret="a b-hunter2") == {"my_other_secret": spaced}
    with pytest.raises(ValidationError) as info:
        _Fields.model_validate({"my_key": "AKID", "my_secret": "abc def-hunter2"})
    # what core reads (parse_destination): errors without the input
    assert "hunter2" not in str(info.value.errors(include_input=False))


def test_path_prefix_limit_is_in_utf8_bytes() -> None:
    _Fields.model_validate({"my_key": "K", "my_secret": "s", "my_prefix": "é" * 512})
    message = _field_error(my_prefix="é" * 513)["my_prefix"]
    assert "1026 UTF-8 bytes" in message and "1024" in message


def test_field_types_document_themselves() -> None:
    schema = _Fields.model_json_schema()["properties"]
    assert schema["my_key"]["description"].startswith("Access key id")
    assert schema["my_key"]["maxLength"] == 128
    assert schema["my_secret"]["writeOnly"] is True
    assert schema["my_secret"]["maxLength"] == 1024
    assert schema["my_prefix"]["maxLength"] == 1024
    assert "%COLLECTION_ID%" in schema["my_prefix"]["description"]
    assert _Fields.model_fields["my_other_secret"].description == "An optional secret."


def test_secret_fields_are_found_by_destination_type() -> None:
    dtype = DestinationType(name="toolkitcheck", fields=_Fields, open_store=lambda f, o: None)  # type: ignore[arg-type, return-value]
    assert dtype.secret_fields == {"my_secret", "my_other_secret"}
    assert isinstance(
        _Fields.model_validate({"my_key": "K", "my_secret": "s"}).my_secret, SecretStr
    )


def test_progress_granule() -> None:
    assert progress_granule(20 * 1024 * 1024) == 20 * 1024 * 1024 // 100
    assert progress_granule(10 * 1024**3) == 8 * 1024 * 1024
    assert progress_granule(50) == 1
    assert progress_granule(0) == 1
    assert progress_granule(None) == 256 * 1024


# -- read_exactly / read_file_exactly ----------------------------------------------------------


@pytest.mark.parametrize("announced", [0, 5, 6, 7])
def test_read_file_exactly_gives_the_file_only_at_its_announced_size(
    tmp_path: Path, announced: int
) -> None:
    from destinations.plugin import StoreError, read_exactly, read_file_exactly

    path = tmp_path / "six.bin"
    path.write_bytes(b"abcdef")
    if announced == 6:
        assert read_file_exactly(path, 6) == b"abcdef" == read_exactly(io.BytesIO(b"abcdef"), 6)
        return
    with pytest.raises(StoreError) as from_path:
        read_file_exactly(path, announced)
    with pytest.raises(StoreError) as from_stream:
        read_exactly(io.BytesIO(b"abcdef"), announced)
    assert from_path.value.provider_code == from_stream.value.provider_code == "IncompleteBody"
    assert from_path.value.message == from_stream.value.message
    more = "more than" if announced < 6 else "only 6 of"
    assert f"the source gave {more} the {announced} bytes announced" in from_path.value.message


def test_read_file_exactly_names_a_missing_file_as_the_os_does(tmp_path: Path) -> None:
    from destinations.plugin import read_file_exactly

    with pytest.raises(FileNotFoundError):
        read_file_exactly(tmp_path / "gone.bin", 1)
