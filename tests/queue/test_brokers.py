"""Choosing the broker and the settings studio pins on Celery, without a broker running."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_run.config import load_config
from studio_run.errors import ConfigError, UsageError
from studio_run.queue import brokers


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIOML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(brokers.BROKER_ENV, raising=False)
    monkeypatch.delenv(brokers.LEASE_ENV, raising=False)
    return tmp_path / "home"


def _config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_the_broker_comes_from_the_flag_then_the_environment_then_the_config_then_the_embedded_default(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "queue: {name: gpu, broker: 'redis://config:6379/0'}\n")
    assert config.queue == "gpu"
    assert brokers.resolve_broker("amqp://flag//", config, str(home)) == "amqp://flag//"
    monkeypatch.setenv(brokers.BROKER_ENV, "redis://env:6379/0")
    assert brokers.resolve_broker(None, config, str(home)) == "redis://env:6379/0"
    monkeypatch.delenv(brokers.BROKER_ENV)
    assert brokers.resolve_broker(None, config, str(home)) == "redis://config:6379/0"
    plain = _config(tmp_path, "queue: gpu\n")  # StudioML's form: a queue name, no broker
    assert plain.queue == "gpu" and plain.broker is None
    assert brokers.resolve_broker(None, plain, str(home)) == f"sqla+sqlite:///{home}/queue/broker.sqlite"


@pytest.mark.parametrize("text, message", [
    ("queue: {brokr: 'redis://h'}\n", "unknown key 'queue.brokr'"),
    ("queue: {broker: 5}\n", "queue.broker must be a broker URL"),
])
def test_a_bad_queue_mapping_in_config_is_refused(home: Path, tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, text)


def test_a_broker_without_a_scheme_is_refused_with_its_password_hidden(home: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        brokers.resolve_broker("user:hunter2@rabbit-host", _config(tmp_path, ""), str(home))
    assert "not a broker URL" in str(caught.value) and "rabbit-host" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("amqp://studio:hunter2@rabbit:5672//", "amqp://studio:***@rabbit:5672//"),
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("sqla+sqlite:////home/me/.studioml/queue/broker.sqlite", "sqla+sqlite:////home/me/.studioml/queue/broker.sqlite"),
])
def test_display_url_hides_the_password(url: str, shown: str) -> None:
    assert brokers.display_url(url) == shown


@pytest.mark.parametrize("url, kind", [
    ("redis://h", "redis"), ("rediss://h", "redis"), ("amqp://h//", "amqp"), ("pyamqp://h//", "amqp"),
    ("sqs://", "sqs"), ("gcpubsub://projects/p", "gcpubsub"), ("sqla+sqlite:////x.sqlite", "sqlite"),
    ("sqla+postgresql://h/db", "sql"),
])
def test_broker_kind(url: str, kind: str) -> None:
    assert brokers.broker_kind(url) == kind


@pytest.mark.parametrize("name, ok", [
    ("gpu", True), ("gpu-a100.big_1", True), ("", False), ("-gpu", False), ("gpu queue", False),
    ("gpu/1", False), ("a" * 100, True), ("a" * 101, False),
])
def test_queue_names(name: str, ok: bool) -> None:
    if ok:
        assert brokers.check_queue_name(name) == name
        assert brokers.job_queue(name).name == "studio." + name
    else:
        with pytest.raises(UsageError, match="queue name"):
            brokers.check_queue_name(name)


def test_celery_app_pins_studios_delivery_settings() -> None:
    conf = brokers.celery_app("redis://127.0.0.1:1/0").conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.task_default_delivery_mode == "persistent"
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == brokers.LEASE_TIMEOUT
    assert options["unacked_restore_interval"] == brokers.RESTORE_INTERVAL
    assert options["unacked_restore_throttle"] == 1
    assert brokers.celery_app("amqp://h//").conf.broker_transport_options == {"confirm_publish": True}


def test_the_lease_timeout_can_be_shortened_and_renewals_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(brokers.LEASE_ENV, "4s")
    app = brokers.celery_app("redis://127.0.0.1:1/0")
    assert app.conf.broker_transport_options["visibility_timeout"] == 4.0
    assert brokers.lease_interval(app) == 0.5
    assert brokers.lease_interval(brokers.celery_app("redis://h", lease_timeout=600)) == brokers.LEASE_RENEW
    monkeypatch.setenv(brokers.LEASE_ENV, "soon")
    with pytest.raises(ConfigError, match=brokers.LEASE_ENV):
        brokers.celery_app("redis://h")


def test_renewing_a_lease_needs_no_broker_but_redis() -> None:
    assert brokers.renew_lease(brokers.celery_app("amqp://127.0.0.1:1//"), "tag") is True


def test_a_payload_that_is_not_json_is_refused_before_any_connection() -> None:
    app = brokers.celery_app("redis://127.0.0.1:1/0")
    with pytest.raises(UsageError, match="not JSON"):
        brokers.publish(app, "q", "t", {"when": object()})


def test_worker_options_give_one_unacknowledged_job_per_slot() -> None:
    options = brokers.worker_options("gpu", 3)
    assert options["queues"] == ["studio.gpu"] and options["concurrency"] == 3
    assert options["prefetch_multiplier"] == 1
    with pytest.raises(UsageError, match="at least 1"):
        brokers.worker_options("gpu", 0)
