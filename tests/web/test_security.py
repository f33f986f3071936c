"""The page's safety rules, checked fast with Starlette's TestClient (no browser) over a store
filled by real ``studio run``s: Host header, sign-in token off loopback, CSRF and Origin on
POST, file paths only through the manifest, attachments only, no secret in a page."""

from __future__ import annotations

import io
import tarfile
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from studio_run.store.records import RunRecord
from studio_run.web.security import cookie_name, safe_path
from tests.web.conftest import Home, app_client, expected_files

LOOPBACK = "http://127.0.0.1:8765"


def _client(home: Home, bind: str = "127.0.0.1", base_url: str = LOOPBACK) -> TestClient:
    return app_client(home, bind, base_url, follow_redirects=False)


@pytest.fixture(scope="module")
def client(alpha_home: Home) -> Iterator[TestClient]:
    with _client(alpha_home) as c:
        yield c


def _run_url(home: Home, version: int = 1) -> str:
    return f"/runs/alpha/{home.runs['alpha'][version - 1]}"


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"])
def test_loopback_host_names_are_served(client: TestClient, host: str) -> None:
    response = client.get("/", headers={"Host": host})
    assert response.status_code == 200
    assert "alpha" in response.text


@pytest.mark.parametrize("host", ["evil.example:8765", "evil.example", "127.0.0.1.evil.example", "", "10.1.2.3"])
def test_a_foreign_host_header_is_refused_dns_rebinding(client: TestClient, host: str) -> None:
    response = client.get("/", headers={"Host": host})
    assert response.status_code == 400
    assert "unknown Host header" in response.text
    assert "alpha" not in response.text


@pytest.mark.parametrize("path", ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "sub/%2e%2e/model.txt", "/etc/passwd",
                                  "%2Fetc%2Fpasswd", "model.txt%00", "sub%5Cweights.bin", "%2e/model.txt", "sub//weights.bin",
                                  "nothing-here.txt"])
def test_traversal_absolute_nul_and_unknown_paths_are_404(client: TestClient, alpha_home: Home, path: str) -> None:
    response = client.get(f"{_run_url(alpha_home)}/file/model/{path}")
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_a_record_key_of_the_store_is_not_a_file_of_any_artifact(client: TestClient, alpha_home: Home) -> None:
    run_id = alpha_home.runs["alpha"][0]
    response = client.get(f"{_run_url(alpha_home)}/file/model/experiments/alpha/{run_id}.json")
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "a%00b"])
def test_odd_experiment_names_and_run_ids_are_404(client: TestClient, alpha_home: Home, name: str) -> None:
    assert client.get(f"/runs/{name}/{alpha_home.runs['alpha'][0]}").status_code == 404
    assert client.get(f"/runs/alpha/{name}").status_code == 404


def test_safe_path_accepts_only_plain_relative_names() -> None:
    assert safe_path("a/b.txt") == "a/b.txt"
    for bad in ["", "/a", "a/../b", "..", "a//b", "a/./b", "a\x00b", "a\\b", "a/"]:
        assert safe_path(bad) is None, bad


def test_a_single_file_is_an_attachment_with_its_bytes(client: TestClient, alpha_home: Home) -> None:
    response = client.get(f"{_run_url(alpha_home)}/file/model/sub/weights.bin")
    assert response.status_code == 200
    assert response.content == expected_files("0.1")["sub/weights.bin"][0]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith('attachment; filename="weights.bin"')
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize("fmt", ["tar.gz", "tar"])
def test_artifact_archives_hold_the_captured_bytes_and_times(client: TestClient, alpha_home: Home, fmt: str) -> None:
    response = client.get(f"{_run_url(alpha_home, 2)}/artifact/model.{fmt}")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:*") as tar:
        files = {m.name: (tar.extractfile(m).read(), int(m.mtime)) for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert files == expected_files("0.01")


def test_post_without_csrf_token_is_refused_and_nothing_is_deleted(client: TestClient, alpha_home: Home) -> None:
    url = f"{_run_url(alpha_home)}/delete"
    assert client.post(url).status_code == 403
    assert client.post(url, data={"csrf": "wrong"}).status_code == 403
    assert client.get(url).status_code == 405
    assert client.get(_run_url(alpha_home)).status_code == 200


def test_post_from_a_foreign_origin_is_refused(client: TestClient, alpha_home: Home) -> None:
    csrf = client.app.state.context.guard.csrf  # type: ignore[attr-defined]
    response = client.post(f"{_run_url(alpha_home)}/delete", data={"csrf": csrf},
                           headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert client.get(_run_url(alpha_home)).status_code == 200


def test_stopping_a_finished_run_is_a_conflict(client: TestClient, alpha_home: Home) -> None:
    csrf = client.app.state.context.guard.csrf  # type: ignore[attr-defined]
    response = client.post(f"{_run_url(alpha_home)}/stop", data={"csrf": csrf})
    assert response.status_code == 409
    assert "is not running" in response.text


def test_the_page_carries_its_csrf_token_and_no_secret(client: TestClient, alpha_home: Home) -> None:
    context = client.app.state.context  # type: ignore[attr-defined]
    record = RunRecord("secrets", "20200101T000000Z-abcdef", status="finished", started_at=1.0, ended_at=2.0,
                       command=["studio", "run", "train.py", "--api-key", "SEKRET1",
                                "--data", "s3://user:SEKRET2@host/bucket"])
    context.store.records.write(record)
    context.fresh_index(force=True)
    page = client.get("/runs/secrets/20200101T000000Z-abcdef")
    assert page.status_code == 200
    assert "SEKRET" not in page.text
    assert "--api-key &#39;***&#39;" in page.text
    compared = client.get("/compare", params={"run": ["secrets/20200101T000000Z-abcdef",
                                                      f"alpha/{alpha_home.runs['alpha'][0]}"]})
    assert compared.status_code == 200
    assert "SEKRET" not in compared.text
    assert context.guard.csrf in client.get(_run_url(alpha_home)).text


def test_delete_with_the_token_removes_only_that_run(client: TestClient, alpha_home: Home) -> None:
    context = client.app.state.context  # type: ignore[attr-defined]
    record = RunRecord("doomed", "20200101T000000Z-000001", status="failed", started_at=1.0, ended_at=2.0)
    context.store.records.write(record)
    response = client.post("/runs/doomed/20200101T000000Z-000001/delete", data={"csrf": context.guard.csrf},
                           headers={"Origin": LOOPBACK})
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.get("/runs/doomed/20200101T000000Z-000001").status_code == 404
    assert client.get(_run_url(alpha_home)).status_code == 200


def test_a_running_run_cannot_be_deleted(client: TestClient) -> None:
    context = client.app.state.context  # type: ignore[attr-defined]
    record = RunRecord("busy", "20200101T000000Z-000002", status="running", started_at=1.0, host="elsewhere")
    context.store.records.write(record)
    response = client.post("/runs/busy/20200101T000000Z-000002/delete", data={"csrf": context.guard.csrf})
    assert response.status_code == 409
    assert client.get("/runs/busy/20200101T000000Z-000002").status_code == 200


def test_off_loopback_every_page_wants_the_token(alpha_home: Home) -> None:
    with _client(alpha_home, bind="0.0.0.0", base_url="http://192.0.2.10:8765") as c:
        token = c.app.state.context.guard.token  # type: ignore[attr-defined]
        assert token
        assert c.get("/").status_code == 403
        assert c.get(f"{_run_url(alpha_home)}/artifact/model.tar.gz").status_code == 403
        assert c.get("/?token=wrong").status_code == 403
        assert c.get("/", headers={"Host": "evil.example:8765"}).status_code == 400
        signed_in = c.get(f"/?token={token}&experiment=alp")
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/?experiment=alp"
        cookie = signed_in.headers["set-cookie"]
        assert f"{cookie_name(8765)}={token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = c.get("/?experiment=alp")  # the client keeps the cookie
        assert page.status_code == 200 and "alpha" in page.text
        assert token not in page.text
