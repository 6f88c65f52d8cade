"""Drive OssDouble with the real oss2 SDK over loopback HTTP (V1 and V4 signatures)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import oss2  # type: ignore[import-untyped]
import oss2.http  # type: ignore[import-untyped]
import pytest
import requests
from oss2.models import PartInfo  # type: ignore[import-untyped]

from tests.emulators.oss_double import OssDouble

AK, SK, BUCKET, REGION = "test-ak", "test-secret", "bkt", "cn-hangzhou"
MIB = 1024 * 1024


@pytest.fixture
def double() -> Iterator[OssDouble]:
    with OssDouble({AK: SK}, buckets=[BUCKET], region=REGION) as d:
        yield d


def make_auth(version: str, ak: str = AK, sk: str = SK) -> oss2.Auth | oss2.AuthV4:
    return oss2.AuthV4(ak, sk) if version == "v4" else oss2.Auth(ak, sk)


def make_bucket(double: OssDouble, version: str = "v1", ak: str = AK, sk: str = SK,
                name: str = BUCKET) -> oss2.Bucket:
    region = REGION if version == "v4" else None
    return oss2.Bucket(make_auth(version, ak, sk), double.endpoint, name, region=region)


VERSIONS = pytest.mark.parametrize("version", ["v1", "v4"])


def test_startup_is_fast_and_endpoint_is_loopback() -> None:
    t0 = time.perf_counter()
    d = OssDouble({AK: SK}).start()
    elapsed = time.perf_counter() - t0
    try:
        assert d.endpoint.startswith("http://127.0.0.1:")
        assert elapsed < 0.05
    finally:
        d.stop()


@VERSIONS
def test_put_get_head_delete_round_trip(double: OssDouble, version: str) -> None:
    b = make_bucket(double, version)
    key = "dir/sub dir/ünï+code?.txt"
    res = b.put_object(key, b"hello world", headers={"x-oss-meta-color": "blue"})
    assert res.etag == "5EB63BBBE01EEED093CB22BB8F5ACDC3"
    assert double.get(BUCKET, key) == b"hello world"
    assert double.objects[(BUCKET, key)] == b"hello world"

    assert b.get_object(key).read() == b"hello world"  # oss2 also verifies the CRC64 header
    assert b.get_object(key, byte_range=(6, 10)).read() == b"world"
    head = b.head_object(key)
    assert head.content_length == 11
    assert head.etag == res.etag
    assert head.headers["x-oss-meta-color"] == "blue"
    assert b.object_exists(key)

    b.delete_object(key)
    assert double.get(BUCKET, key) is None
    assert not b.object_exists(key)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        b.get_object(key)
    with pytest.raises(oss2.exceptions.NoSuchKey):  # HEAD: error arrives in x-oss-err
        b.head_object(key)


@VERSIONS
def test_delete_missing_key_succeeds(double: OssDouble, version: str) -> None:
    assert make_bucket(double, version).delete_object("never-existed").status == 204


@VERSIONS
def test_content_headers_and_user_metadata_are_kept(double: OssDouble, version: str) -> None:
    b = make_bucket(double, version)
    headers = {"Content-Type": "text/csv", "Content-Encoding": "gzip",
               "x-oss-meta-Origin": "Conformance run 1"}
    b.put_object("one.csv", b"x", headers=headers)
    upload = b.init_multipart_upload("parts.csv", headers=headers).upload_id
    part = b.upload_part("parts.csv", upload, 1, b"y")
    b.complete_multipart_upload("parts.csv", upload, [PartInfo(1, part.etag)])
    b.put_object("plain.bin", b"z")
    for key in ("one.csv", "parts.csv"):
        got = b.head_object(key).headers
        assert got["Content-Type"] == "text/csv"  # one value: not joined with a default
        assert got["Content-Encoding"] == "gzip"
        metas = {k: v for k, v in got.items() if k.lower().startswith("x-oss-meta-")}
        assert metas == {"x-oss-meta-origin": "Conformance run 1"}  # names lower-cased
    plain = b.head_object("plain.bin").headers
    assert plain["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in plain
    assert not [k for k in plain if k.lower().startswith("x-oss-meta-")]


def test_chunked_upload(double: OssDouble) -> None:
    b = make_bucket(double)
    b.put_object("chunked", iter([b"abc", b"def" * 1000, b"g"]))
    assert double.get(BUCKET, "chunked") == b"abc" + b"def" * 1000 + b"g"


@VERSIONS
def test_resumable_upload_multipart(double: OssDouble, version: str, tmp_path: Path) -> None:
    payload = os.urandom(3 * MIB + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    b = make_bucket(double, version)
    double.reset_requests()
    store = oss2.ResumableStore(root=str(tmp_path))  # keep resume records out of $HOME
    result = oss2.resumable_upload(b, "big/file.bin", str(src), store=store, num_threads=2,
                                   multipart_threshold=MIB, part_size=MIB)
    assert double.get(BUCKET, "big/file.bin") == payload
    assert result.etag.endswith("-4")
    # InitiateMultipartUpload, ListParts (resume check), 4x UploadPart, CompleteMultipartUpload
    calls = [(m, sorted(dict(parse_qsl(q, keep_blank_values=True)))) for m, _, q in double.requests]
    assert calls == [
        ("POST", ["uploads"]),
        ("GET", ["max-parts", "part-number-marker", "uploadId"]),
        *[("PUT", ["partNumber", "uploadId"])] * 4,
        ("POST", ["uploadId"]),
    ]
    assert b.get_object("big/file.bin").read() == payload
    assert b.head_object("big/file.bin").object_type == "Multipart"


def test_multipart_rejects_bad_complete(double: OssDouble) -> None:
    b = make_bucket(double)
    uid = b.init_multipart_upload("k").upload_id
    p1 = b.upload_part("k", uid, 1, b"x" * 200_000)
    p2 = b.upload_part("k", uid, 2, b"y" * 10)
    with pytest.raises(oss2.exceptions.ServerError) as e:
        b.complete_multipart_upload("k", uid, [PartInfo(1, "0" * 32), PartInfo(2, p2.etag)])
    assert e.value.code == "InvalidPart"
    b.complete_multipart_upload("k", uid, [PartInfo(1, p1.etag), PartInfo(2, p2.etag)])
    assert double.get(BUCKET, "k") == b"x" * 200_000 + b"y" * 10

    uid = b.init_multipart_upload("k2").upload_id
    b.upload_part("k2", uid, 1, b"a")
    b.abort_multipart_upload("k2", uid)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        b.upload_part("k2", uid, 2, b"b")


def test_list_objects(double: OssDouble) -> None:
    b = make_bucket(double, "v4")
    for k in ["a/1", "a/2", "b/x y", "c"]:
        b.put_object(k, k.encode())
    assert [o.key for o in oss2.ObjectIterator(b, max_keys=1)] == ["a/1", "a/2", "b/x y", "c"]
    assert [o.key for o in oss2.ObjectIteratorV2(b, prefix="b/")] == ["b/x y"]
    listed = b.list_objects(delimiter="/")
    assert listed.prefix_list == ["a/", "b/"]
    assert [o.key for o in listed.object_list] == ["c"]


@VERSIONS
def test_wrong_secret_is_rejected(double: OssDouble, version: str) -> None:
    with pytest.raises(oss2.exceptions.ServerError) as e:
        make_bucket(double, version, sk="wrong").put_object("k", b"data")
    assert (e.value.status, e.value.code) == (403, "SignatureDoesNotMatch")
    assert e.value.request_id
    assert double.get(BUCKET, "k") is None
    assert double.requests[-1][:2] == ("PUT", f"/{BUCKET}/k")


def test_v4_wrong_region_is_rejected(double: OssDouble) -> None:
    b = oss2.Bucket(oss2.AuthV4(AK, SK), double.endpoint, BUCKET, region="cn-beijing")
    with pytest.raises(oss2.exceptions.ServerError) as e:
        b.put_object("k", b"data")
    assert e.value.code == "SignatureDoesNotMatch"


@VERSIONS
def test_unknown_access_key_is_rejected(double: OssDouble, version: str) -> None:
    with pytest.raises(oss2.exceptions.ServerError) as e:
        make_bucket(double, version, ak="nobody").get_object("k")
    assert (e.value.status, e.value.code) == (403, "InvalidAccessKeyId")


@VERSIONS
def test_missing_bucket(double: OssDouble, version: str) -> None:
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        make_bucket(double, version, name="nope").put_object("k", b"data")


def _signed_request(
    version: str, method: str, url: str, key: str, data: bytes = b""
) -> oss2.http.Request:
    req = oss2.http.Request(method, url, data=data, region=REGION, product="oss")
    make_auth(version)._sign_request(req, BUCKET, key)
    return req


@VERSIONS
def test_tampered_signature_and_anonymous_are_rejected(double: OssDouble, version: str) -> None:
    url = f"{double.endpoint}/{BUCKET}/k"
    req = _signed_request(version, "PUT", url, "k", b"data")
    headers = {k: v for k, v in req.headers.items() if v is not None}
    ok = requests.put(url, data=b"data", headers=headers, timeout=5)
    assert ok.status_code == 200  # untampered: accepted

    auth = headers["authorization"]
    i = len(auth) - 3  # flip one signature character (valid in both base64 and hex)
    headers["authorization"] = auth[:i] + ("1" if auth[i] != "1" else "2") + auth[i + 1:]
    r = requests.put(url, data=b"evil", headers=headers, timeout=5)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert r.headers["x-oss-request-id"]

    headers["authorization"] = auth  # valid signature, but a signed header was changed
    r = requests.put(url, data=b"evil", headers={**headers, "x-oss-meta-added": "1"}, timeout=5)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text

    r = requests.put(url, data=b"evil", timeout=5)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    assert double.get(BUCKET, "k") == b"data"


def test_stale_date_and_presigned_url_are_rejected(double: OssDouble) -> None:
    url = f"{double.endpoint}/{BUCKET}/k"
    req = oss2.http.Request("GET", url)
    req.headers["date"] = oss2.utils.http_date(time.time() - 3600)  # validly signed, but stale
    signer = oss2.Auth(AK, SK)
    creds = signer.credentials_provider.get_credentials()
    sig = signer._ProviderAuth__make_signature(req, BUCKET, "k", creds)
    headers = {"date": req.headers["date"], "authorization": f"OSS {AK}:{sig}"}
    r = requests.get(url, headers=headers, timeout=5)
    assert r.status_code == 403 and "<Code>RequestTimeTooSkewed</Code>" in r.text

    r = requests.get(make_bucket(double).sign_url("GET", "k", 60), timeout=5)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text  # not emulated


def test_virtual_host_style_via_proxy(double: OssDouble) -> None:
    # A non-IP endpoint makes oss2 use http://bkt.<endpoint>/key; the proxy setting sends the
    # request (absolute-form, Host: bkt.oss-cn-hangzhou.aliyuncs.com) to the double only.
    endpoint = "http://oss-cn-hangzhou.aliyuncs.com"
    proxies = {"http": double.endpoint}
    b = oss2.Bucket(oss2.AuthV4(AK, SK), endpoint, BUCKET, region=REGION, proxies=proxies)
    b.put_object("vh/key", b"virtual")
    assert double.get(BUCKET, "vh/key") == b"virtual"
    assert b.get_object("vh/key").read() == b"virtual"
    assert double.requests[-1][:2] == ("GET", "/vh/key")
