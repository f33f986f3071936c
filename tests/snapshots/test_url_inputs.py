"""URL inputs below the CLI: the ``URL:TAG`` parse rule (a table of valid and invalid strings),
the sources' checks against real servers on loopback (length, MD5 from an ETag or a header,
a missing bucket never created), and the cache of what was fetched (no secrets, rebuilt when
damaged, leftovers of dead runs swept)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from studio_run.errors import IntegrityError, UsageError
from studio_run.objects.repository import Repository
from studio_run.refs import CaptureSpec, split_capture
from studio_run.snapshots.url_inputs import UrlInputs
from studio_run.snapshots.url_sources import RemoteFile, open_source
from studio_run.storage.local import LocalStorage
from tests.conftest import FAKE_AWS_SECRET
from tests.http_files import PASSWORD, USER, serve_files


@pytest.fixture
def web():
    yield from serve_files()


# -- the parse rule ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, path, tag", [
    ("data:d", "data", "d"),
    ("/a:b/c:tag", "/a:b/c", "tag"),  # a path splits at its last colon
    ("s3://bucket/prefix/:data", "s3://bucket/prefix/", "data"),
    ("https://host:8443/f.csv:train", "https://host:8443/f.csv", "train"),  # a port is not a tag
    ("sftp://u:pw@host:2222/srv/x:x", "sftp://u:pw@host:2222/srv/x", "x"),
    ("gs://b/k.bin?alt=media:k", "gs://b/k.bin?alt=media", "k"),
    ("HTTP://host/f:f", "HTTP://host/f", "f"),
])
def test_valid_capture_specs(text, path, tag):
    assert split_capture(text) == (path, tag)


@pytest.mark.parametrize("text, message", [
    ("data", "needs the form DIR:TAG"),
    ("https://host:8443/f.csv", "needs the form URL:TAG"),  # the only colon after the host is missing
    ("s3://bucket:data", "needs the form URL:TAG"),
    ("ftp://host/f:f", "cannot fetch ftp:// URLs"),
    ("s3://b/k:bad tag", "tag 'bad tag'"),
])
def test_invalid_capture_specs(text, message):
    with pytest.raises(ValueError, match=message):
        split_capture(text)


def test_a_url_spec_is_never_resolved_as_a_path(tmp_path):
    spec = CaptureSpec.parse("s3://b/data", "d", cwd=str(tmp_path))
    assert spec.is_url and spec.path == "s3://b/data" and spec.resolved("/elsewhere") == spec
    assert not CaptureSpec.parse("data", "d", cwd=str(tmp_path)).is_url


# -- sources -----------------------------------------------------------------------------------
def test_http_source_sends_basic_auth_and_hides_it(web, tmp_path):
    web.files["/private/f"] = b"content"
    source = open_source(f"http://{USER}:{PASSWORD}@{web.base[7:]}/private/f?sig=abc", {})
    assert source.url == f"http://{USER}@{web.base[7:]}/private/f"
    [item] = source.listing()
    source.fetch(item, str(tmp_path / "f"))
    assert (tmp_path / "f").read_bytes() == b"content" and item.size == 7 and item.md5


def test_basic_auth_is_not_sent_on_to_the_host_a_redirect_names(web, tmp_path):
    other = serve_files()
    elsewhere = next(other)
    try:
        elsewhere.files["/f"] = b"moved"
        web.redirects["/private/f"] = elsewhere.base + "/f"
        source = open_source(f"http://{USER}:{PASSWORD}@{web.base[7:]}/private/f", {})
        [item] = source.listing()
        source.fetch(item, str(tmp_path / "f"))
        assert (tmp_path / "f").read_bytes() == b"moved"
        assert len(web.authorizations) == 1 and elsewhere.authorizations == []
    finally:
        other.close()


def test_http_source_refuses_a_short_body(web, tmp_path):
    web.files["/f"] = b"12345"
    web.cut_short = True
    source = open_source(web.base + "/f", {})
    [item] = source.listing()
    with pytest.raises(IntegrityError, match=r"got 5 bytes, the server announced 10"):
        source.fetch(item, str(tmp_path / "f"))
    assert not (tmp_path / "f").exists() and os.listdir(tmp_path) == []  # no partial file left


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    name = f"src-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client


def test_s3_single_part_etag_is_checked_as_md5(s3_bucket, tmp_path):
    name, client = s3_bucket
    client.put_object(Bucket=name, Key="d/w.bin", Body=b"weights")
    source = open_source(f"s3://{name}/d/w.bin", {})
    [item] = source.listing()
    assert source.single and item.md5 == item.validator == hashlib.md5(b"weights").hexdigest()
    source.fetch(item, str(tmp_path / "ok"))
    assert (tmp_path / "ok").read_bytes() == b"weights"
    forged = RemoteFile(item.name, item.size, item.validator, md5="0" * 32)
    with pytest.raises(IntegrityError, match="arrived damaged .MD5"):
        source.fetch(forged, str(tmp_path / "bad"))
    source.close()


def test_a_missing_bucket_is_an_error_and_is_not_created(s3_bucket):
    _name, client = s3_bucket
    missing = f"none-{uuid.uuid4().hex[:12]}"
    with pytest.raises(UsageError, match=f"bucket '{missing}' does not exist") as info:
        open_source(f"s3://{missing}/x", {})
    assert FAKE_AWS_SECRET not in str(info.value)
    assert missing not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_gcs_source_checks_md5_and_crc32c(gcs_server, monkeypatch, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    client = storage.Client(project="t", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server.endpoint})
    bucket = client.create_bucket(f"src-{uuid.uuid4().hex[:12]}")
    bucket.blob("p/a.txt").upload_from_string(b"alpha")
    source = open_source(f"gs://{bucket.name}/p", {})
    [item] = source.listing()
    assert not source.single and item.name == "a.txt" and len(item.md5) == 32 and len(item.crc32c) == 8
    source.fetch(item, str(tmp_path / "a"))
    assert (tmp_path / "a").read_bytes() == b"alpha"
    forged = RemoteFile(item.name, item.size, item.validator, crc32c="00000000")
    with pytest.raises(IntegrityError, match="CRC32C"):
        source.fetch(forged, str(tmp_path / "b"))
    source.close()


# -- the cache ---------------------------------------------------------------------------------
def _inputs(tmp_path) -> UrlInputs:
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    return UrlInputs(str(tmp_path / "home"), [repo], lambda scheme: {})


def test_the_cache_holds_no_secret_and_a_damaged_one_is_rebuilt(web, tmp_path):
    web.files["/f"] = b"x"
    url = f"http://{USER}:{PASSWORD}@{web.base[7:]}/f?token=t0ken"
    inputs = _inputs(tmp_path)
    [fetched] = inputs.fetch([CaptureSpec.parse(url, "f")])
    assert open(fetched.path, "rb").read() == b"x"
    inputs.remember([fetched], {"f": "ab" * 32})
    inputs.cleanup()
    text = open(inputs.cache_path).read()
    assert PASSWORD not in text and "t0ken" not in text and json.loads(text)
    assert os.listdir(inputs.folder) == ["cache.json"]  # the download folder is gone

    with open(inputs.cache_path, "w") as f:
        f.write("{not json")
    [again] = _inputs(tmp_path).fetch([CaptureSpec.parse(url, "f")])
    assert again.path and web.bodies_sent("/f") == 2  # nothing trusted from a damaged cache


def test_leftovers_of_a_dead_run_are_swept(web, tmp_path):
    web.files["/f"] = b"x"
    inputs = _inputs(tmp_path)
    os.makedirs(os.path.join(inputs.folder, "tmp-999999999-deadbeef", "data"))
    os.makedirs(os.path.join(inputs.folder, f"tmp-{os.getpid()}-livebeef"))
    inputs.fetch([CaptureSpec.parse(web.base + "/f", "f")])
    names = os.listdir(inputs.folder)
    assert "tmp-999999999-deadbeef" not in names and f"tmp-{os.getpid()}-livebeef" in names
    inputs.cleanup()


def test_a_run_request_never_carries_a_urls_password_or_signature():
    from studio_run.runner.request import RunRequest

    spec = CaptureSpec.parse(f"https://{USER}:{PASSWORD}@host/f.bin?X-Amz-Signature=s1g", "f")
    text = json.dumps(RunRequest("s.py", captures_once=(spec,), cwd="/w").to_dict())
    assert PASSWORD not in text and "s1g" not in text and f"https://{USER}@host/f.bin" in text
