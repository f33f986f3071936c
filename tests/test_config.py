"""Config: precedence, durations, sizes, the original Studio's storage form, and clear errors."""

from __future__ import annotations

import os
import re

import pytest

from studio_run.config import load_config, parse_duration, parse_size
from studio_run.errors import ConfigError


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("2m", 120), ("1.5h", 5400), ("500ms", 0.5), (90, 90),
                                           ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0", "10 minutes"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [("100MiB", 100 << 20), ("2G", 2 << 30), ("512", 512), ("1.5KiB", 1536)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_defaults_need_no_file(tmp_path):
    config = load_config(env={"STUDIOML_HOME": str(tmp_path)})
    assert config.store == str(tmp_path / "store") and config.capture_interval == 60
    assert config.blobcache == str(tmp_path / "blobcache")


def test_flag_beats_environment_beats_file(tmp_path):
    (tmp_path / "config.yaml").write_text("store: /from/file\ncapture_interval: 10s\n")
    env = {"STUDIOML_HOME": str(tmp_path)}
    assert load_config(env=env).store == "/from/file"
    assert load_config(env=dict(env, STUDIO_STORE="/from/env")).store == "/from/env"
    assert load_config(env=dict(env, STUDIO_STORE="/from/env"), store="/from/flag").store == "/from/flag"
    assert load_config(env=env).capture_interval == 10


@pytest.mark.parametrize(
    "yaml_text, url, options",
    [
        ("storage: {type: s3, bucket: b, endpoint: 'http://127.0.0.1:9000'}", "s3://b",
         {"endpoint": "http://127.0.0.1:9000"}),
        ("storage: {type: gcloud, bucket: b, path: runs}", "gs://b/runs", {}),
        ("storage: {type: sftp, host: h, user: u, port: 2222, path: /srv/studio}", "sftp://u@h:2222/srv/studio", {}),
        ("storage: {type: local, path: /x}", "/x", {}),
    ],
)
def test_original_studio_storage_form(tmp_path, yaml_text, url, options):
    (tmp_path / "config.yaml").write_text(yaml_text)
    config = load_config(env={"STUDIOML_HOME": str(tmp_path)})
    assert config.store == url and config.store_options == options


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("store: [unclosed", "not valid YAML"),
        ("stor: /x", "unknown key 'stor'"),
        ("storage: {type: ftp}", "unknown type 'ftp'"),
        ("storage: {type: s3}", "needs a 'bucket'"),
        ("capture_interval: soon", "not a duration"),
        ("- a\n- b", "mapping"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, yaml_text, message):
    (tmp_path / "config.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(env={"STUDIOML_HOME": str(tmp_path)})


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"), env={"STUDIOML_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("fsync: maybe", "fsync must be true or false, not 'maybe'"),
        ("fsync: 1", "fsync must be true or false"),
        ("capture_interval: [1]", "not a duration"),
        ("capture_interval: {a: 1}", "not a duration"),
        ("upload_wait: true", "not a duration"),
        ("upload_queue_size: [1]", "not a size"),
        ("upload_policy: [block]", "upload_policy must be"),
        ("store: [1, 2]", "store must be a path or URL"),
        ("blobcache: {a: 1}", "blobcache must be a folder path"),
        ("store_options: {endpiont: 'http://x'}", "unknown store option 'endpiont'; did you mean 'endpoint'?"),
        ("store_options: [endpoint]", "store_options must be a mapping"),
        ("store_options: {endpoint: [1]}", "must be a single value"),
        ("store_options: {password: hunter2}", "is a credential"),
        ("store: file://relative/path", "names host 'relative'"),
        ("store: file://host.example/srv/store", "names host 'host.example'"),
        ("store: 'file://'", "has no absolute path"),
        ("store: ~nosuchuser-studio/store", "no user named 'nosuchuser-studio'"),
        ("blobcache: ~nosuchuser-studio/cache", "no user named 'nosuchuser-studio'"),
    ],
)
def test_wrongly_typed_values_are_one_clear_error(tmp_path, yaml_text, message):
    (tmp_path / "config.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(env={"STUDIOML_HOME": str(tmp_path)})


def test_a_config_path_that_is_a_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(str(tmp_path), env={"STUDIOML_HOME": str(tmp_path)})
    (tmp_path / "home" / "config.yaml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(env={"STUDIOML_HOME": str(tmp_path / "home")})


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "studio.yaml").write_text("store: ./runs/store\nblobcache: cache\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(str(folder / "studio.yaml"), env={"STUDIOML_HOME": str(tmp_path)})
    assert config.store == str(folder / "runs" / "store") and config.blobcache == str(folder / "cache")
    (folder / "studio.yaml").write_text("storage: {type: local, path: here}\n")
    assert load_config(str(folder / "studio.yaml"), env={"STUDIOML_HOME": str(tmp_path)}).store == str(folder / "here")


def test_store_urls_from_flag_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"STUDIOML_HOME": str(tmp_path)}
    assert load_config(env=env, store="rel").store == str(tmp_path / "rel")  # a flag: resolved now, once
    assert load_config(env=env, store="file://localhost/abs/x").store == "file:///abs/x"
    assert load_config(env=env, store="file:///abs/x").store == "file:///abs/x"
    with pytest.raises(ConfigError, match="STUDIO_STORE 'rel' is a relative path"):
        load_config(env=dict(env, STUDIO_STORE="rel"))
    with pytest.raises(ConfigError, match="names host 'box'"):
        load_config(env=env, store="file://box/srv")


def test_tilde_and_home_of_a_user(tmp_path):
    import pwd

    me = pwd.getpwuid(os.getuid())
    (tmp_path / "config.yaml").write_text(f"store: ~{me.pw_name}/s\nblobcache: ~/c\n")
    config = load_config(env={"STUDIOML_HOME": str(tmp_path), "HOME": str(tmp_path / "h")})
    assert config.store == os.path.join(me.pw_dir, "s") and config.blobcache == str(tmp_path / "h" / "c")
