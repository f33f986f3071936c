"""The S3 backend against moto on loopback: the storage contract plus S3 specifics (bucket
creation, prefixes, batched deletes, multipart, error mapping, no credentials in URLs)."""

from __future__ import annotations

import uuid

import pytest

from studio_run.errors import ConfigError, StoreAuthError, StoreError, StoreUnreachableError
from studio_run.storage import open_storage
from studio_run.storage import s3 as s3_module
from tests.conftest import FAKE_AWS_SECRET
from tests.servers import free_port

from .contract import StorageContract

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("fake_aws_env")]  # never real credentials


def _bucket() -> str:
    return f"studio-{uuid.uuid4().hex[:16]}"


def _raw_client(s3_server, region: str = "us-east-1"):
    import boto3

    return boto3.client("s3", endpoint_url=s3_server.endpoint, region_name=region)


@pytest.fixture
def store_factory(s3_server):
    """Open S3 stores on moto; closes them and empties moto after the test."""
    opened = []

    def open_(url: str, **options):
        store = open_storage(url, {"endpoint": s3_server.endpoint, **options})
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
    s3_server.reset()


class TestS3Contract(StorageContract):
    @pytest.fixture
    def storage(self, store_factory):
        return store_factory(f"s3://{_bucket()}/runs/one")


def test_missing_bucket_is_created_on_open(store_factory, s3_server):
    name = _bucket()
    client = _raw_client(s3_server)
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    store_factory(f"s3://{name}/p")
    assert name in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert client.list_objects_v2(Bucket=name)["KeyCount"] == 0  # no probe object left behind


def test_bucket_outside_us_east_1_gets_location_constraint(store_factory, s3_server):
    name = _bucket()
    store = store_factory(f"s3://{name}", region="eu-west-1")
    store.write_bytes("k", b"v")
    location = _raw_client(s3_server, "eu-west-1").get_bucket_location(Bucket=name)
    assert location["LocationConstraint"] == "eu-west-1"


def test_existing_bucket_is_reused(store_factory, s3_server):
    name = _bucket()
    _raw_client(s3_server).create_bucket(Bucket=name)
    store_factory(f"s3://{name}/a").write_bytes("k", b"kept")
    assert store_factory(f"s3://{name}/a").read_bytes("k") == b"kept"


def test_uncreatable_bucket_raises_store_error_naming_it(store_factory):
    with pytest.raises(StoreError) as info:
        store_factory("s3://ab")
    message = str(info.value)
    assert "'ab'" in message and "\n" not in message
    assert info.value.__cause__ is not None


def test_prefix_keeps_stores_apart_and_maps_to_object_keys(store_factory, s3_server):
    name = _bucket()
    a = store_factory(f"s3://{name}/team/a")
    b = store_factory(f"s3://{name}/team/b")
    a.write_bytes("x/1", b"a")
    b.write_bytes("x/1", b"b")
    assert list(a.list("")) == ["x/1"] and a.read_bytes("x/1") == b"a"
    keys = sorted(o["Key"] for o in _raw_client(s3_server).list_objects_v2(Bucket=name)["Contents"])
    assert keys == ["team/a/x/1", "team/b/x/1"]


def test_large_put_file_uses_multipart(store_factory, tmp_path):
    store = store_factory(f"s3://{_bucket()}", multipart_threshold=5 * 1024 * 1024)
    calls: list[str] = []
    store._client.meta.events.register(
        "before-call.s3.UploadPart", lambda **kw: calls.append("part")
    )
    src = tmp_path / "f"
    src.write_bytes(b"z" * (11 * 1024 * 1024))
    store.put_file(str(src), "big")
    assert len(calls) == 3  # 5 + 5 + 1 MiB
    assert store.info("big").size == 11 * 1024 * 1024


def test_delete_many_batches_and_ignores_missing(store_factory, monkeypatch):
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 3)
    store = store_factory(f"s3://{_bucket()}/p")
    calls: list[int] = []
    store._client.meta.events.register(
        "before-parameter-build.s3.DeleteObjects", lambda params, **kw: calls.append(len(params["Delete"]["Objects"]))
    )
    keys = [f"d/{i}" for i in range(7)]
    for key in keys:
        store.write_bytes(key, b"x")
    store.write_bytes("keep", b"x")
    store.delete_many(keys + ["d/never-written"])
    assert calls == [3, 3, 2]
    assert list(store.list("")) == ["keep"]


def test_url_and_repr_never_carry_credentials(store_factory):
    name = _bucket()
    store = store_factory(f"s3://{name}/p")
    assert store.url == f"s3://{name}/p"
    assert repr(store) == f"S3Storage('s3://{name}/p')"
    assert FAKE_AWS_SECRET not in repr(vars(store))


def test_credentials_in_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        open_storage("s3://AKIAEXAMPLE:hunter2secret@bucket/p")
    assert "hunter2secret" not in str(info.value)


def test_unreachable_endpoint_raises_one_line_store_unreachable():
    port = free_port()  # nothing listens there
    with pytest.raises(StoreUnreachableError) as info:
        open_storage("s3://some-bucket/p", {"endpoint": f"http://127.0.0.1:{port}", "max_attempts": 1})
    message = str(info.value)
    assert "some-bucket" in message and f"127.0.0.1:{port}" in message and "\n" not in message
    assert type(info.value.__cause__).__name__ == "EndpointConnectionError"


def test_missing_credentials_raise_store_auth_error(s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreAuthError) as info:
        open_storage(f"s3://{_bucket()}", {"endpoint": s3_server.endpoint, "max_attempts": 1})
    assert type(info.value.__cause__).__name__ == "NoCredentialsError"


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("NoSuchKey", 404, FileNotFoundError),
        ("AccessDenied", 403, PermissionError),
        ("InvalidAccessKeyId", 403, StoreAuthError),
        ("SignatureDoesNotMatch", 403, StoreAuthError),
        ("SlowDown", 503, StoreUnreachableError),
        ("NoSuchBucket", 404, StoreError),
        ("SomethingNew", 400, StoreError),
        ("SomethingNew", 403, PermissionError),
    ],
)
def test_service_errors_map_through_the_table(store_factory, code, status, expected):
    # moto does not check signatures, so the service's answers are stubbed on the real client.
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    store = store_factory(f"s3://{_bucket()}")
    with Stubber(store._client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as info:
            store.read_bytes("k")
    assert isinstance(info.value.__cause__, ClientError)
    assert "\n" not in str(info.value)
