"""The gateway's configuration and command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm_sessions import Tier
from llm_sessions.cli import main
from llm_sessions.demo import run_demo
from llm_sessions.server import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "src" / "llm_sessions" / "server" / "example.toml"


def test_the_example_config_loads() -> None:
    s = load_settings(EXAMPLE)
    assert s.upstream.base_url == "https://openrouter.ai/api/v1"
    assert s.upstream.api_key_env == "OPENROUTER_API_KEY"
    assert s.tiers[Tier.COMPLEX].chain == ("anthropic/claude-sonnet-4.6", "openai/gpt-4o")
    assert s.pricing["openai/gpt-4o-mini"].cost_micros(1_000_000, 0) == 150_000
    assert (s.max_session_cost_usd, s.budget_mode) == (5.0, "strict")
    assert s.sessions.cache_ttl_for("vllm") == 600_000
    assert "OPENROUTER_API_KEY" not in repr(s.upstream.api_key)


def test_defaults_and_command_line_overrides() -> None:
    s = load_settings(None, host="0.0.0.0", port=9000, store_url="redis://x:1/0",
                      upstream_url="http://127.0.0.1:1/v1", api_keys_file=None)  # fmt: skip
    assert (s.host, s.port, s.store_url, s.upstream.base_url) == (
        "0.0.0.0",
        9000,
        "redis://x:1/0",
        "http://127.0.0.1:1/v1",
    )
    assert s.profiles == ("auto",)
    assert set(s.tiers) == set(Tier)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[upstream]\nbase_url = 5", "upstream.base_url"),
        ('[upstream]\nbase_url = "ftp://x"', "upstream.base_url"),
        ("[upstream]\ntimeout_s = -1", "upstream.timeout_s"),
        ("[upstream]\nmax_attempts = 0", "upstream.max_attempts"),
        ("[upstream]\nmax_atempts = 2", "upstream.max_atempts"),
        ("[server]\nport = 0", "server.port"),
        ("[server]\nport = 70000", "server.port"),
        ("[server]\nmax_body_bytes = true", "server.max_body_bytes"),
        ('[server]\napi_keys_file = "/nonexistent/keys"', "server.api_keys_file"),
        ('[store]\non_error = "ignore"', "store.on_error"),
        ("[sessions]\ntimeout_ms = 0", "sessions.timeout_ms"),
        ('[sessions]\nheader_name = "bad header"', "header_name"),
        ('[sessions]\nunknown_state = "ignore"', "sessions.unknown_state"),
        ("[cache_ttl_ms]\nanthropic = -5", "cache_ttl_ms.anthropic"),
        ("[routing]\nprofiles = []", "routing.profiles"),
        ('[routing.tiers.ULTRA]\nprimary = "x"', "ULTRA"),
        ("[routing.tiers.SIMPLE]\nfallback = []", "SIMPLE.primary"),
        ('[pricing."m"]\ninput_per_mtok = -1\noutput_per_mtok = 1', "pricing.m"),
        ('[pricing."m"]\ninput_per_mtok = 1', "pricing.m"),
        ('[pricing."m"]\ninput_per_mtok = 1\noutput_per_mtok = 1\nextra = 2', "pricing.m.extra"),
        ('[budget]\nmode = "lenient"', "budget.mode"),
        ("[budget]\nmax_session_cost_usd = -1", "budget.max_session_cost_usd"),
        ("[budget]\nreservation_ttl_ms = 1000", "budget.reservation_ttl_ms"),
        ("[budget]\nmin_output_tokens = 0", "budget.min_output_tokens"),
        ("[budget]\nfit_output = 1", "budget.fit_output"),
        ("[server]\nmetrics_admin_only = true", "server.metrics_admin_only"),
        ("[nonsense]\nx = 1", "nonsense"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_every_key_is_checked_and_named(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(path)


def test_serve_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[budget]\nmode = "lenient"\n')
    assert main(["serve", "--config", str(path)]) == 2
    assert "budget.mode" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2


def test_module_entry_point_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llm_sessions", "--help"], capture_output=True, text=True, check=True
    )
    assert "serve" in out.stdout and "demo" in out.stdout


def test_demo_shows_the_whole_story() -> None:
    lines: list[str] = []
    run_demo(lines.append)
    split = next(i for i, line in enumerate(lines) if "Anthropic Messages API" in line)
    split2 = next(i for i, line in enumerate(lines) if "OpenAI Responses API" in line)
    rows = [line for line in lines[:split] if line[:4].strip().isdigit()]
    reasons = [row.split()[1] for row in rows]
    for part in (lines[split:split2], lines[split2:]):  # Messages, then Responses
        part_rows = [line for line in part if line[:4].strip().isdigit()]
        assert [row.split()[1] for row in part_rows] == ["new", "pinned", "pinned"]
        assert len({row.split()[2].rstrip("*") for row in part_rows}) == 1  # one model
        assert all(row.endswith("]") for row in part_rows)  # each translated, and says so
        part_costs = [float(row.split()[5]) for row in part_rows]
        assert part_costs == sorted(part_costs) and part_costs[0] > 0
    assert reasons == [
        "new", "pinned", "upgraded", "pinned", "pinned", "escalated",
        "pinned", "cache_sticky", "cache_sticky", "cache_sticky", "cache_sticky", "(refused)",
    ]  # fmt: skip
    assert "sent with max_tokens" in rows[-2]  # lowered to what fits the cap
    assert [row.split()[4] for row in rows[3:6]] == ["0", "1", "2"]  # strikes
    assert "*" in rows[8].split()[2]  # served by a fallback after the 503
    assert "[chat->messages]" in rows[2] and not rows[8].endswith("]")  # across the APIs
    claude = [line for line in lines[split:split2] if line[:4].strip().isdigit()]
    assert "openai/" in claude[0] and "[messages->chat]" in claude[0]  # Claude Code on GPT
    assert "budget_exceeded" in rows[-1]
    costs = [float(row.split()[5]) for row in rows[:-1]]
    assert costs == sorted(costs) and costs[0] > 0


def test_the_redis_socket_timeout_is_configurable(tmp_path: Path, redis_url: str) -> None:
    from llm_sessions.server import Gateway

    path = tmp_path / "c.toml"
    path.write_text(f'[store]\nurl = "{redis_url}"\nsocket_timeout_s = 2.5\n')
    settings = load_settings(path)
    assert settings.store_socket_timeout_s == 2.5
    gateway = Gateway(settings)
    assert gateway.store._pool.connection_kwargs["socket_timeout"] == 2.5  # type: ignore[attr-defined]
    assert load_settings(None).store_socket_timeout_s == 0.5
    path.write_text("[store]\nsocket_timeout_s = 0\n")
    with pytest.raises(ConfigError, match=r"store\.socket_timeout_s must be >= 0\.001"):
        load_settings(path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
        ("https://gen.example.com/v1?key=sk-secret", "https://gen.example.com/v1?key=***"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=***"),
        ("redis://:pw@h/0?password=pw", "redis://:***@h/0?password=***"),
        ("https://h/v1?flag", "https://h/v1?flag"),
    ],
)
def test_logged_urls_show_no_credentials(url: str, shown: str) -> None:
    """Passwords, and every value of the query (where keys travel: ``?key=...``)."""
    from llm_sessions.server.settings import redact_url

    assert redact_url(url) == shown


def test_client_key_headers_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[upstream]\nforward_client_key = true\nclient_key_from = ["cookie"]\n')
    with pytest.raises(ConfigError, match=r"upstream\.client_key_from"):
        load_settings(path)
    path.write_text('[upstream]\nforward_client_key = true\nauth = "x-api-key"\n')
    assert load_settings(path).upstream.takes_keys_from == ("x-api-key",)
