"""Loopback HTTP test double for Alibaba Cloud OSS (no official emulator exists).

Checked on every request, before any state is touched (every request is recorded, even rejected):
  * an ``Authorization`` header: ``OSS ak:sig`` (oss2.Auth, V1) or ``OSS4-HMAC-SHA256 ...``
    (oss2.AuthV4); none/other -> 403 AccessDenied. Unknown key id -> 403 InvalidAccessKeyId;
  * the signature, RECOMPUTED by oss2's own signing code (oss2.auth) from the received method,
    bucket, key, query and headers -> else 403 SignatureDoesNotMatch. V4 is recomputed with the
    double's region, so a client configured for another region is rejected too;
  * Date / x-oss-date within 15 minutes (403 RequestTimeTooSkewed); Content-MD5 if sent
    (400 InvalidDigest); multipart part order, ETags and the 100 KiB minimum for non-final
    parts (InvalidPartOrder / InvalidPart / EntityTooSmall).
Responses carry OSS-style ETags ("MD5", "MD5-of-part-MD5s-N"), x-oss-hash-crc64ecma (so oss2's
CRC checks really run) and OSS error XML with x-oss-request-id (x-oss-err for HEAD).

NOT checked / not emulated: bucket ACLs, policies, RAM, STS tokens, presigned URLs (query
signatures -> AccessDenied), AuthV2, x-oss-content-sha256 payload hashes, versioning, storage
classes, copy/append/bucket management (-> 501 NotImplemented), persistence.

Addressing: path style ``/<bucket>/<key>`` (what oss2 uses for an IP endpoint such as
``double.endpoint``) and virtual-host style (``Host: <bucket>.<domain>``, e.g. oss2 given a
real-looking endpoint plus ``proxies={"http": double.endpoint}``).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import oss2  # type: ignore[import-untyped]
import oss2.http  # type: ignore[import-untyped]
import oss2.utils  # type: ignore[import-untyped]
from requests.structures import CaseInsensitiveDict

MIN_PART_SIZE = 100 * 1024
MAX_SKEW_SECONDS = 15 * 60
_OBJECT_PARAMS = {"uploads", "uploadId", "partNumber", "objectMeta", "max-parts", "encoding-type"}
_OBJECT_PARAMS |= {"part-number-marker"}
_LIST_PARAMS = {"prefix", "marker", "delimiter", "max-keys", "encoding-type", "list-type"}
_LIST_PARAMS |= {"continuation-token", "start-after", "fetch-owner"}
_KEEP = {"content-type", "content-disposition", "content-encoding", "cache-control", "expires"}
_V4_RE = re.compile(
    r"OSS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/[^/]+/[^/]+/aliyun_v4_request,"
    r"\s*Signature=([0-9a-f]+)(?:,\s*AdditionalHeaders=([^,\s]*))?$"
)
Reply = tuple[int, dict[str, str], bytes]
Headers = CaseInsensitiveDict[str]
Params = dict[str, str]


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Meta:
    etag: str
    crc: int
    mtime: float
    headers: dict[str, str]
    object_type: str


@dataclass
class _Upload:
    bucket: str
    key: str
    headers: dict[str, str]
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (etag, data)


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def _crc64(data: bytes) -> int:
    c = oss2.utils.Crc64(0)
    c.update(data)
    return int(c.crc)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _keep(headers: Headers) -> dict[str, str]:
    """Headers stored with an object and returned on GET/HEAD."""
    items = ((k.lower(), v) for k, v in headers.items())
    return {k: v for k, v in items if k in _KEEP or k.startswith("x-oss-meta-")}


def _xml(root: str, _raw: str = "", **children: str) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in children.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}{_raw}</{root}>'.encode()


class _Server(ThreadingHTTPServer):
    double: OssDouble

    def server_bind(self) -> None:  # skip HTTPServer's socket.getfqdn(): a slow reverse lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients closing keep-alives
            super().handle_error(request, client_address)


class OssDouble:
    """In-memory OSS speaking real HTTP on 127.0.0.1; verifies every request's signature."""

    def __init__(self, credentials: dict[str, str], buckets: Iterable[str] = (),
                 region: str = "cn-hangzhou") -> None:
        self.credentials = dict(credentials)
        self.buckets: set[str] = set(buckets)
        self.region = region
        self.objects: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, unquoted path, raw query)
        self._meta: dict[tuple[str, str], _Meta] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.RLock()
        self._server: _Server | None = None

    def start(self) -> OssDouble:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self
        kwargs = {"poll_interval": 0.01}  # stop() waits at most one poll
        threading.Thread(target=self._server.serve_forever, kwargs=kwargs, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OssDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "OssDouble is not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def get(self, bucket: str, key: str) -> bytes | None:
        with self._lock:
            return self.objects.get((bucket, key))

    def add_bucket(self, name: str) -> None:
        with self._lock:
            self.buckets.add(name)

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- authentication: oss2 recomputes the signature ---------------------------------------
    def verify(self, method: str, bucket: str, key: str, params: Params, hdrs: Headers) -> None:
        auth = hdrs.get("authorization", "")
        signed = CaseInsensitiveDict(hdrs)  # the headers as the client had them when signing
        signed.pop("authorization", None)
        req = oss2.http.Request(method, "http://unused/", params=params, headers=signed,
                                region=self.region, product="oss")
        if auth.startswith("OSS "):
            ak, _, sig = auth[4:].partition(":")
            signer = oss2.Auth(ak, self._secret(ak))
            try:
                date = hdrs.get("x-oss-date") or hdrs.get("date") or ""
                when = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                raise OssError(403, "AccessDenied", "Date header is missing or invalid") from None
            creds = signer.credentials_provider.get_credentials()
            expected = signer._ProviderAuth__make_signature(req, bucket, key, creds)
        elif m := _V4_RE.match(auth):
            ak, scope_date, sig, extra = m.groups()
            signer = oss2.AuthV4(ak, self._secret(ak))
            stamp = hdrs.get("x-oss-date", "")
            try:
                when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
            except ValueError:
                raise OssError(403, "AccessDenied", "x-oss-date is missing or invalid") from None
            if stamp[:8] != scope_date:
                raise OssError(403, "SignatureDoesNotMatch", "credential date != x-oss-date")
            creds = signer.credentials_provider.get_credentials()
            additional = extra.split(";") if extra else None
            expected = signer._ProviderAuthV4__make_signature(req, bucket, key, additional,
                                                              creds, stamp)
        else:
            raise OssError(403, "AccessDenied", "anonymous/unsupported authorization is refused")
        if not hmac.compare_digest(str(expected), sig):
            msg = "The request signature we calculated does not match the signature you provided."
            raise OssError(403, "SignatureDoesNotMatch", msg)
        if abs(time.time() - when) > MAX_SKEW_SECONDS:
            msg = "The difference between the request time and the current time is too large."
            raise OssError(403, "RequestTimeTooSkewed", msg)

    def _secret(self, ak: str) -> str:
        if ak not in self.credentials:
            msg = "The OSS Access Key Id you provided does not exist in our records."
            raise OssError(403, "InvalidAccessKeyId", msg)
        return self.credentials[ak]

    # -- operations ---------------------------------------------------------------------------
    def handle(self, method: str, bucket: str, key: str, params: Params, hdrs: Headers,
               body: bytes) -> Reply:
        if not bucket:
            raise OssError(501, "NotImplemented", "service-level operations are not emulated")
        with self._lock:
            if bucket not in self.buckets:
                raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
            if not key:
                if method == "GET" and not set(params) - _LIST_PARAMS:
                    return self._list(bucket, params)
                raise OssError(501, "NotImplemented", "bucket operations are not emulated")
            extra = {p for p in params if not p.startswith("response-")} - _OBJECT_PARAMS
            if extra or "x-oss-copy-source" in hdrs:
                raise OssError(501, "NotImplemented", f"not emulated: {sorted(extra) or 'copy'}")
            if method == "POST" and "uploads" in params:
                uid = uuid.uuid4().hex.upper()
                self._uploads[uid] = _Upload(bucket, key, _keep(hdrs))
                return 200, {}, _xml("InitiateMultipartUploadResult", Bucket=bucket, UploadId=uid)
            if "uploadId" in params:
                return self._multipart(method, bucket, key, params, hdrs, body)
            if method == "PUT":
                return self._store(bucket, key, body, _keep(hdrs), _md5_hex(body), "Normal")
            if method in ("GET", "HEAD"):
                return self._get(bucket, key, params, hdrs)
            if method == "DELETE":  # OSS answers 204 whether or not the key existed
                self.objects.pop((bucket, key), None)
                self._meta.pop((bucket, key), None)
                return 204, {}, b""
        raise OssError(501, "NotImplemented", f"{method} is not emulated")

    def _store(self, bucket: str, key: str, data: bytes, hdrs: dict[str, str], etag: str,
               kind: str) -> Reply:
        meta = _Meta(etag, _crc64(data), time.time(), hdrs, kind)
        self.objects[(bucket, key)], self._meta[(bucket, key)] = data, meta
        return 200, {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": str(meta.crc)}, b""

    def _get(self, bucket: str, key: str, params: Params, hdrs: Headers) -> Reply:
        if (bucket, key) not in self.objects:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.")
        data, meta = self.objects[(bucket, key)], self._meta[(bucket, key)]
        out = {"ETag": f'"{meta.etag}"', "x-oss-hash-crc64ecma": str(meta.crc),
               "x-oss-object-type": meta.object_type,
               "Last-Modified": email.utils.formatdate(meta.mtime, usegmt=True), **meta.headers}
        # One Content-Type: the stored one (lower-case key), else OSS's default.
        out.setdefault("content-type", "application/octet-stream")
        out.update({k[9:]: v for k, v in params.items() if k.startswith("response-")})
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", hdrs.get("range", "").strip())
        if not rng or rng.groups() == ("", ""):
            return 200, out, data
        size, (first, last) = len(data), rng.groups()
        start = int(first) if first else max(size - int(last), 0)
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size or start > end:
            raise OssError(416, "InvalidRange", "The requested range is not satisfiable")
        out["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, out, data[start : end + 1]

    def _multipart(self, method: str, bucket: str, key: str, params: Params, hdrs: Headers,
                   body: bytes) -> Reply:
        uid = params["uploadId"]
        up = self._uploads.get(uid)
        if up is None or (up.bucket, up.key) != (bucket, key):
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.")
        if method == "PUT":  # UploadPart
            number = int(params.get("partNumber") or 0)
            if not 1 <= number <= 10000:
                raise OssError(400, "InvalidArgument", "partNumber must be in 1..10000")
            up.parts[number] = (_md5_hex(body), body)
            out = {"ETag": f'"{up.parts[number][0]}"', "x-oss-hash-crc64ecma": str(_crc64(body))}
            return 200, out, b""
        if method == "DELETE":  # AbortMultipartUpload
            del self._uploads[uid]
            return 204, {}, b""
        if method == "GET":  # ListParts
            after = int(params.get("part-number-marker") or 0)
            limit = int(params.get("max-parts") or 1000)
            todo = [(n, p) for n, p in sorted(up.parts.items()) if n > after]
            parts = "".join(f"<Part><PartNumber>{n}</PartNumber><LastModified>{_iso(time.time())}"
                            f'</LastModified><ETag>"{e}"</ETag><Size>{len(d)}</Size></Part>'
                            for n, (e, d) in todo[:limit])
            nxt = str(todo[:limit][-1][0] if todo else after)
            truncated = str(len(todo) > limit).lower()
            xml = _xml("ListPartsResult", Bucket=bucket, Key=key, UploadId=uid,
                       IsTruncated=truncated, NextPartNumberMarker=nxt, _raw=parts)
            return 200, {}, xml
        if method != "POST":
            raise OssError(501, "NotImplemented", f"{method} with uploadId is not emulated")
        if hdrs.get("x-oss-complete-all", "").lower() == "yes":  # CompleteMultipartUpload
            wanted = [(n, e) for n, (e, _) in sorted(up.parts.items())]
        else:
            try:
                nodes = ElementTree.fromstring(body).findall("Part")
                wanted = [(int(p.findtext("PartNumber", 0)), p.findtext("ETag", "")) for p in nodes]
            except (ElementTree.ParseError, ValueError):
                raise OssError(400, "MalformedXML", "The XML was not well-formed") from None
        numbers = [n for n, _ in wanted]
        if not wanted or numbers != sorted(set(numbers)):
            raise OssError(400, "InvalidPartOrder", "Parts must be listed in ascending order.")
        for i, (n, etag) in enumerate(wanted):
            if n not in up.parts or up.parts[n][0] != etag.strip('"').upper():
                raise OssError(400, "InvalidPart", f"part {n} was not uploaded or ETag differs")
            if i < len(wanted) - 1 and len(up.parts[n][1]) < MIN_PART_SIZE:
                raise OssError(400, "EntityTooSmall", f"part {n} is below {MIN_PART_SIZE} bytes")
        digest = hashlib.md5(b"".join(bytes.fromhex(up.parts[n][0]) for n in numbers))
        etag = f"{digest.hexdigest().upper()}-{len(numbers)}"
        del self._uploads[uid]
        data = b"".join(up.parts[n][1] for n in numbers)
        _, out, _ = self._store(bucket, key, data, up.headers, etag, "Multipart")
        return 200, out, _xml("CompleteMultipartUploadResult", Bucket=bucket, Key=key, ETag=etag)

    def _list(self, bucket: str, params: Params) -> Reply:  # ListObjects (V1 and V2)
        v2, url_enc = params.get("list-type") == "2", params.get("encoding-type") == "url"
        prefix, delim = params.get("prefix", ""), params.get("delimiter", "")
        marker = params.get("continuation-token" if v2 else "marker") or params.get("start-after")
        marker = marker or ""
        max_keys = int(params.get("max-keys") or 100)

        def q(s: str) -> str:  # _xml() escapes its children; raw entries escape themselves
            return quote(s, safe="") if url_enc else s

        entries: list[str] = []
        seen: set[str] = {marker}  # NextMarker may be a common prefix: skip its keys
        last, truncated = "", False
        for k in sorted(k for b, k in self.objects if b == bucket and k > marker):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix) :]
            cp = prefix + rest.split(delim, 1)[0] + delim if delim and delim in rest else ""
            if cp and cp in seen:
                continue
            if len(entries) >= max_keys:
                truncated = True
                break
            if cp:
                entries.append(f"<CommonPrefixes><Prefix>{escape(q(cp))}</Prefix></CommonPrefixes>")
                seen.add(cp)
            else:
                m = self._meta[(bucket, k)]
                size = len(self.objects[(bucket, k)])
                entries.append(f"<Contents><Key>{escape(q(k))}</Key><LastModified>{_iso(m.mtime)}"
                               f'</LastModified><ETag>"{m.etag}"</ETag><Type>{m.object_type}</Type>'
                               f"<Size>{size}</Size><StorageClass>Standard</StorageClass></Contents>")
            last = cp or k
        head = {"Name": bucket, "Prefix": q(prefix), "Delimiter": q(delim)}
        head |= {"MaxKeys": str(max_keys), "IsTruncated": str(truncated).lower()}
        if url_enc:
            head["EncodingType"] = "url"
        if truncated:
            head["NextContinuationToken" if v2 else "NextMarker"] = q(last)
        if v2:
            head["KeyCount"] = str(len(entries))
        return 200, {}, _xml("ListBucketResult", _raw="".join(entries), **head)


class _BodyCutShort(Exception):
    """The connection ended before the announced Content-Length arrived."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if len(data) < length:  # the client went away mid-body: OSS stores nothing
                raise _BodyCutShort
            return data
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _handle(self) -> None:
        double, rid, method = self.server.double, uuid.uuid4().hex[:24].upper(), self.command
        url = urlsplit(self.path)  # absolute-form when a client uses the double as its proxy
        with double._lock:
            double.requests.append((method, unquote(url.path), url.query))
        host = (self.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
        if oss2.utils.is_ip_or_localhost(host):  # path style
            bucket, _, raw_key = url.path.lstrip("/").partition("/")
        else:  # virtual-host style
            bucket, raw_key = host.split(".", 1)[0], url.path.lstrip("/")
        bucket, key = unquote(bucket), unquote(raw_key)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        hdrs: Headers = CaseInsensitiveDict(dict(self.headers.items()))
        try:
            body = self._body()
        except _BodyCutShort:
            self.close_connection = True
            return
        try:
            double.verify(method, bucket, key, params, hdrs)
            md5 = hdrs.get("content-md5")
            if md5 and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
                raise OssError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            status, out, payload = double.handle(method, bucket, key, params, hdrs, body)
        except Exception as e:  # every failure becomes an OSS error reply
            err = e if isinstance(e, OssError) else OssError(500, "InternalError", repr(e))
            status, out = err.status, {"Content-Type": "application/xml"}
            payload = _xml("Error", Code=err.code, Message=err.message, RequestId=rid,
                           HostId="127.0.0.1")
            if method == "HEAD":
                out["x-oss-err"] = base64.b64encode(payload).decode()
        self.send_response(status)
        for k, v in {"x-oss-request-id": rid, "Content-Length": str(len(payload)), **out}.items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
