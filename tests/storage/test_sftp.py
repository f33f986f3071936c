"""The SFTP backend against OpenSSH sshd on loopback: the storage contract plus SFTP specifics
(host key pinning, login errors, temp files, atomic claims across connections, reconnects)."""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from studio_run.errors import ConfigError, StoreAuthError, StoreUnreachableError
from studio_run.storage import open_storage
from tests.servers import free_port

from .contract import StorageContract

pytestmark = pytest.mark.servers


@pytest.fixture
def store_factory(sftp_server):
    """Open SFTP stores on the test sshd; closes them after the test."""
    opened = []

    def open_(path, **options):
        merged = {**sftp_server.options(), "allow_agent": False, "look_for_keys": False, **options}
        store = open_storage(sftp_server.url(str(path)), merged)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


class TestSFTPContract(StorageContract):
    @pytest.fixture
    def storage(self, store_factory, tmp_path):
        return store_factory(tmp_path / "store")


def test_root_folder_is_created_with_its_parents(store_factory, tmp_path):
    store = store_factory(tmp_path / "a" / "b" / "root")
    store.write_bytes("x/y/z", b"deep")
    assert (tmp_path / "a" / "b" / "root" / "x" / "y" / "z").read_bytes() == b"deep"


def test_writes_leave_no_temp_files_and_temp_folder_is_not_listed(store_factory, tmp_path):
    store = store_factory(tmp_path / "s")
    store.write_bytes("k", b"v", exclusive=True)
    with pytest.raises(FileExistsError):
        store.write_bytes("k", b"w", exclusive=True)
    source = tmp_path / "f"
    source.write_bytes(b"file")
    with pytest.raises(FileExistsError):
        store.put_file(str(source), "k", exclusive=True)
    assert list((tmp_path / "s" / ".tmp").iterdir()) == []
    (tmp_path / "s" / ".tmp" / "stale").write_bytes(b"half")
    assert list(store.list("")) == ["k"]


def test_exclusive_claim_has_one_winner_across_connections(store_factory, tmp_path):
    stores = [store_factory(tmp_path / "s") for _ in range(4)]

    def claim(i: int) -> bool:
        try:
            stores[i % 4].write_bytes("claims/name", f"{i}".encode(), exclusive=True)
            return True
        except FileExistsError:
            return False

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(claim, range(16)))
    assert won.count(True) == 1
    assert stores[0].read_bytes("claims/name") == str(won.index(True)).encode()


def test_home_relative_path(store_factory):
    # sshd resolves ``~`` to the login user's home from the password database, whatever $HOME says.
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    folder = f"studio-test-{uuid.uuid4().hex[:8]}"
    store = store_factory(f"/~/{folder}/store")
    try:
        store.write_bytes("k", b"home")
        assert (home / folder / "store" / "k").read_bytes() == b"home"
    finally:
        shutil.rmtree(home / folder, ignore_errors=True)


def test_password_in_url_is_never_kept_in_url_or_repr(sftp_server, tmp_path):
    url = sftp_server.url(str(tmp_path / "s")).replace("@", ":hunter2secret@", 1)
    store = open_storage(url, {**sftp_server.options(), "allow_agent": False, "look_for_keys": False})
    try:
        assert "hunter2secret" not in store.url and "hunter2secret" not in repr(store)
        assert store.url == sftp_server.url(str(tmp_path / "s"))
    finally:
        store.close()


def test_unknown_host_key_is_refused_with_a_hint(sftp_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(StoreAuthError) as info:
        open_storage(
            sftp_server.url(str(tmp_path / "s")),
            {"key_filename": sftp_server.options()["key_filename"], "known_hosts": str(empty),
             "allow_agent": False, "look_for_keys": False},
        )
    message = str(info.value)
    assert "known_hosts" in message and "\n" not in message
    assert not (tmp_path / "s").exists()


def test_wrong_client_key_is_a_login_error(sftp_server, tmp_path):
    other_key = str(Path(sftp_server.options()["key_filename"]).with_name("host"))  # not authorized
    with pytest.raises(StoreAuthError) as info:
        open_storage(
            sftp_server.url(str(tmp_path / "s")),
            {**sftp_server.options(), "key_filename": other_key, "allow_agent": False, "look_for_keys": False},
        )
    assert "login refused" in str(info.value)


def test_unreachable_port_raises_one_line_store_unreachable(sftp_server, tmp_path):
    port = free_port()  # nothing listens there
    with pytest.raises(StoreUnreachableError) as info:
        open_storage(f"sftp://someone@127.0.0.1:{port}/data", {**sftp_server.options(), "timeout": 2})
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert isinstance(info.value.__cause__, OSError)


def test_missing_option_file_is_a_config_error(sftp_server, tmp_path):
    with pytest.raises(ConfigError):
        open_storage(sftp_server.url(str(tmp_path)), {"key_filename": str(tmp_path / "absent")})
    with pytest.raises(ConfigError):
        open_storage(sftp_server.url("/"), sftp_server.options())


def test_dropped_connection_is_reopened_and_the_operation_retried(store_factory, tmp_path):
    store = store_factory(tmp_path / "s")
    store.write_bytes("k", b"before")
    first = store._ssh
    store._ssh.get_transport().close()  # the server went away under an open session
    assert store.read_bytes("k") == b"before"
    assert store._ssh is not first
    store._ssh.get_transport().close()
    store.write_bytes("k", b"after")
    store._ssh.get_transport().close()
    assert sorted(store.list("")) == ["k"]
    assert (tmp_path / "s" / "k").read_bytes() == b"after"


def test_reconnect_that_fails_raises_store_unreachable(store_factory, tmp_path):
    store = store_factory(tmp_path / "s")
    store.port = free_port()  # the next login goes nowhere
    store._ssh.get_transport().close()
    with pytest.raises(StoreUnreachableError):
        store.read_bytes("k")


def test_missing_key_error_names_the_key(store_factory, tmp_path):
    store = store_factory(tmp_path / "s")
    with pytest.raises(FileNotFoundError) as info:
        store.read_bytes("no/such/key")
    assert str(info.value).endswith(f"{store.url}/no/such/key'")
