"""Store URLs for one server, a Redis Cluster and Sentinel: what each names, and a clear
error (never repeating a password) for one that names nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_sessions import open_store
from llm_sessions.server.settings import ConfigError, load_settings, redact_url
from llm_sessions.stores.redis_urls import parse_redis_url


def test_cluster_urls_name_their_seed_nodes_and_credentials() -> None:
    found = parse_redis_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert found.topology == "cluster"
    assert found.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (found.username, found.password, found.tls) == ("app", "s@cret", False)
    tls = parse_redis_url("rediss+cluster://:pw@h:1?ssl_ca_certs=/ca.pem&ssl_check_hostname=no")
    assert tls.tls and tls.password == "pw" and tls.username is None
    assert tls.options == {"ssl_ca_certs": "/ca.pem", "ssl_check_hostname": False}


def test_sentinel_urls_name_their_service_and_db() -> None:
    found = parse_redis_url("redis+sentinel://:pw@s1:26380,s2/mymaster/3?sentinel_password=x")
    assert found.topology == "sentinel"
    assert found.hosts == (("s1", 26380), ("s2", 26379))
    assert (found.service, found.db, found.password, found.sentinel_password) == (
        "mymaster", 3, "pw", "x"
    )  # fmt: skip
    assert parse_redis_url("redis+sentinel://s1/mymaster").db == 0


def test_one_servers_urls_go_to_redis_py_as_written() -> None:
    for url in ("redis://h:1/2", "rediss://:p@h", "unix:///tmp/r.sock?db=1"):
        found = parse_redis_url(url)
        assert (found.topology, found.url) == ("single", url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "names its service"),
        ("redis+sentinel://:hunter2@s1:26379/a/b/c", "names its service"),
        ("redis+sentinel://:hunter2@s1:26379/a/x", "database must be a number"),
        ("redis+cluster://:hunter2@h:1/0", "has no path"),
        ("redis+cluster://:hunter2@h:99999", "bad port"),
        ("redis+cluster://:hunter2@h:1,:2", "host is missing"),
        ("redis+cluster://:hunter2@h:1?timeout=3", "unknown option 'timeout'"),
        ("redis+cluster://:hunter2@h:1?sentinel_password=x", "unknown option"),
        ("redis+tcp://:hunter2@h:1", "unsupported store url scheme"),
    ],
)
def test_a_url_that_names_nothing_is_a_clear_error_without_its_password(
    url: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_redis_url(url)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match=says):
        open_store(url)


def test_the_gateway_refuses_a_bad_store_url_at_start_and_logs_none_whole(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[store]\nurl = "redis+sentinel://:hunter2@s1:26379"\n')
    with pytest.raises(ConfigError, match="names its service") as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)
    assert redact_url("redis+cluster://app:hunter2@h1:1,h2:2/?x=1") == (
        "redis+cluster://app:***@h1:1,h2:2/?x=***"
    )
