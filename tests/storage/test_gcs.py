"""The GCS backend against fake-gcs-server on loopback: the storage contract plus GCS specifics
(bucket creation, emulator environment variable, resumable uploads, error mapping)."""

from __future__ import annotations

import uuid

import pytest

from studio_run.errors import ConfigError, StoreAuthError, StoreError, StoreUnreachableError
from studio_run.storage import open_storage
from studio_run.storage.gcs import GCSStorage
from tests.servers import free_port

from .contract import StorageContract

pytestmark = pytest.mark.servers


def _bucket() -> str:
    return f"studio-{uuid.uuid4().hex[:16]}"


def _raw_client(gcs_server):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server.endpoint}
    )


@pytest.fixture
def store_factory(gcs_server, monkeypatch):
    """Open GCS stores on fake-gcs-server (a fresh bucket per test); closes them afterwards."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    opened = []

    def open_(url: str, **options):
        store = open_storage(url, {"endpoint": gcs_server.endpoint, **options})
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


class TestGCSContract(StorageContract):
    @pytest.fixture
    def storage(self, store_factory):
        return store_factory(f"gs://{_bucket()}/runs/one")


def test_missing_bucket_is_created_on_open(store_factory, gcs_server):
    name = _bucket()
    client = _raw_client(gcs_server)
    assert client.lookup_bucket(name) is None
    store_factory(f"gs://{name}/p")
    assert client.lookup_bucket(name) is not None
    assert list(client.list_blobs(name)) == []  # no probe object left behind


def test_emulator_env_var_is_honoured(gcs_server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    store = open_storage(f"gs://{_bucket()}/p")
    try:
        store.write_bytes("k", b"via env")
        assert store.read_bytes("k") == b"via env"
        assert store._client.project == "studio"
    finally:
        store.close()


def test_project_comes_from_option_then_environment(store_factory, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    assert store_factory(f"gs://{_bucket()}")._client.project == "from-env"
    assert store_factory(f"gs://{_bucket()}", project="from-option")._client.project == "from-option"


def test_prefix_keeps_stores_apart_and_maps_to_object_names(store_factory, gcs_server):
    name = _bucket()
    a = store_factory(f"gs://{name}/team/a")
    b = store_factory(f"gs://{name}/team/b")
    a.write_bytes("x/1", b"a")
    b.write_bytes("x/1", b"b")
    assert list(a.list("")) == ["x/1"] and a.read_bytes("x/1") == b"a"
    assert sorted(blob.name for blob in _raw_client(gcs_server).list_blobs(name)) == [
        "team/a/x/1",
        "team/b/x/1",
    ]


def test_large_put_file_is_a_chunked_resumable_upload(store_factory, tmp_path):
    store = store_factory(f"gs://{_bucket()}", chunk_size=1024 * 1024)
    seen: list[str] = []
    session = store._client._http
    original = session.request

    def spy(method, url, *args, **kwargs):
        seen.append(f"{method} {'resumable' if 'uploadType=resumable' in url or 'upload_id=' in url else 'other'}")
        return original(method, url, *args, **kwargs)

    session.request = spy
    src = tmp_path / "f"
    src.write_bytes(b"r" * (9 * 1024 * 1024 + 5))  # over the 8 MiB multipart limit
    store.put_file(str(src), "big")
    session.request = original
    assert seen.count("PUT resumable") == 10  # 9 full 1 MiB chunks and the tail
    assert store.info("big").size == 9 * 1024 * 1024 + 5


def test_delete_many_ignores_missing_keys(store_factory):
    store = store_factory(f"gs://{_bucket()}/p")
    for key in ["d/1", "d/2", "keep"]:
        store.write_bytes(key, b"x")
    store.delete_many(["d/1", "d/2", "d/never-written"])
    assert list(store.list("")) == ["keep"]


def test_url_and_repr_carry_no_endpoint_or_credentials(store_factory):
    name = _bucket()
    store = store_factory(f"gs://{name}/p")
    assert store.url == f"gs://{name}/p"
    assert repr(store) == f"GCSStorage('gs://{name}/p')"


def test_credentials_in_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        open_storage("gs://user:hunter2secret@bucket/p")
    assert "hunter2secret" not in str(info.value)


def test_unreachable_endpoint_raises_one_line_store_unreachable(monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    port = free_port()  # nothing listens there
    with pytest.raises(StoreUnreachableError) as info:
        open_storage("gs://some-bucket/p", {"endpoint": f"http://127.0.0.1:{port}", "retry_deadline": 0})
    message = str(info.value)
    assert "some-bucket" in message and f"127.0.0.1:{port}" in message and "\n" not in message
    assert info.value.__cause__ is not None


def test_missing_application_default_credentials_raise_store_auth_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(StoreAuthError) as info:
        GCSStorage("some-bucket")
    assert type(info.value.__cause__).__name__ == "DefaultCredentialsError"


@pytest.mark.parametrize(
    "error_name, expected",
    [
        ("NotFound", FileNotFoundError),
        ("Forbidden", PermissionError),
        ("Unauthorized", StoreAuthError),
        ("PreconditionFailed", FileExistsError),
        ("ServiceUnavailable", StoreUnreachableError),
        ("TooManyRequests", StoreUnreachableError),
        ("BadRequest", StoreError),
    ],
)
def test_service_errors_map_through_the_table(store_factory, monkeypatch, error_name, expected):
    # fake-gcs-server does not check credentials, so the SDK's exceptions are raised directly.
    from google.api_core import exceptions
    from google.cloud.storage import Blob

    error = getattr(exceptions, error_name)("refused by test")

    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Blob, "download_as_bytes", fail)
    store = store_factory(f"gs://{_bucket()}")
    with pytest.raises(expected) as info:
        store.read_bytes("k")
    assert info.value.__cause__ is error
    assert "\n" not in str(info.value)
