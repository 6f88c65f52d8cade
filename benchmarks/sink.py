"""A client-cost sink: an HTTP server that speaks just enough S3 to accept uploads, and
DISCARDS every byte. It is NOT a store: nothing can be read back, nothing is checked (no
signature, no bucket). It exists to measure what an S3 client costs per request and per GiB
when the server costs almost nothing.

It answers PutObject (200 + ETag), CreateMultipartUpload / UploadPart /
CompleteMultipartUpload, DeleteObject (204), and 200 to anything else (HEAD/GET bucket).
Bodies framed by Content-Length or chunked are read and dropped. ``GET /__stats`` returns
``{"objects": completed objects, "bytes": object bytes received, "requests": n}`` (for
``aws-chunked`` bodies the decoded length is counted), ``POST /__reset`` zeroes them: the
benchmark checks the counts after every run, so a run that uploaded less than everything
is caught.

Run: ``python benchmarks/sink.py PORT`` (one process, asyncio, 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

_XML = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class Stats:
    objects = 0
    bytes = 0
    requests = 0


class SinkProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0  # body bytes still to drop
        self.chunked = False
        self.request: tuple[str, str, dict[str, str]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self.request is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[: end + 4]
            method, target, _ = head[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.request = (method, target, headers)
            self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            self.need = 0 if self.chunked else int(headers.get("content-length") or 0)
            if headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.chunked:
            return self._chunk()
        take = min(self.need, len(self.buf))
        del self.buf[:take]
        self.need -= take
        if self.need:
            return False
        self._answer()
        return True

    def _chunk(self) -> bool:
        while True:
            if self.need:
                take = min(self.need, len(self.buf))
                del self.buf[:take]
                self.need -= take
                if self.need:
                    return False
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(self.buf[:end])
            del self.buf[: end + 2]
            if not line:
                continue
            size = int(line.split(b";")[0], 16)
            if size == 0:
                end = self.buf.find(b"\r\n")  # trailers end with an empty line
                if end < 0:
                    return False
                del self.buf[: end + 2]
                self._answer()
                return True
            self.need = size + 2

    def _answer(self) -> None:
        assert self.request is not None and self.transport is not None
        method, target, headers = self.request
        self.request = None
        Stats.requests += 1
        path, _, query = target.partition("?")
        length = int(
            headers.get("x-amz-decoded-content-length") or headers.get("content-length") or 0
        )
        status, extra, body = "200 OK", "", b""
        if path == "/__stats":
            body = json.dumps(
                {"objects": Stats.objects, "bytes": Stats.bytes, "requests": Stats.requests}
            ).encode()
        elif path == "/__reset":
            Stats.objects = Stats.bytes = Stats.requests = 0
        elif method == "PUT":
            Stats.bytes += length
            if "uploadId=" not in query:
                Stats.objects += 1
            extra = f'ETag: "{uuid.uuid4().hex}"\r\n'
        elif method == "POST" and (query.startswith("uploads") or "&uploads" in query):
            upload = uuid.uuid4().hex
            body = (
                _XML + b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                b"<UploadId>" + upload.encode() + b"</UploadId></InitiateMultipartUploadResult>"
            )
        elif method == "POST" and "uploadId=" in query:
            Stats.objects += 1
            body = (
                _XML + b"<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                b'<ETag>"done"</ETag></CompleteMultipartUploadResult>'
            )
        elif method == "DELETE":
            status = "204 No Content"
        kind = "application/xml" if body.startswith(b"<") else "application/json"
        self.transport.write(
            (
                f"HTTP/1.1 {status}\r\n{extra}Content-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: sink\r\n\r\n"
            ).encode()
            + body
        )


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
