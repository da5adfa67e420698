"""What a new user meets: the command line, its one-line errors, the example
configuration, the stand-in upstream, the demo without optional clients, and what the
gateway says as it starts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway_helpers import settings_for
from llm_sessions import __version__
from llm_sessions.cli import example_config, main
from llm_sessions.server import Gateway, load_settings
from llm_sessions.server.run import running, startup_line
from llm_sessions.server.standin import StandIn

from redis_server import free_port


def run_cli(
    *args: str, block: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`llm-sessions ARGS` in a fresh interpreter; `block` names a module to make
    unimportable there, as if its extra were not installed."""
    prelude = f"sys.modules[{block!r}] = None; " if block else ""
    code = (
        "import sys; " + prelude + "from llm_sessions.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"llm-sessions {__version__}\n"


def test_serve_help_says_what_flags_do_where_the_key_is_and_what_wins() -> None:
    out = run_cli("serve", "--help").stdout
    for text in (
        "upstream.api_key_env",
        "OPENAI_API_KEY",
        "override the file",
        "llm-sessions config example",
        "--log-level",
        "redis://",
        "llm-sessions standin",
    ):
        assert text in out, text


def test_config_example_is_the_shipped_file_and_it_checks(tmp_path: Path) -> None:
    printed = run_cli("config", "example")
    assert printed.returncode == 0
    assert printed.stdout == example_config()
    path = tmp_path / "gateway.toml"
    path.write_text(printed.stdout)
    assert load_settings(path).budget_mode == "strict"
    checked = run_cli("config", "check", str(path))
    assert (checked.returncode, checked.stdout.strip()) == (0, f"{path}: ok")


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (
            "[sessions]\ntimeout_ms = 1.5\n",
            "config: sessions.timeout_ms must be an integer, got 1.5",
        ),
        (
            '[sessions]\nheader_name = ""\n',
            "config: sessions.header_name must be a non-empty string",
        ),
        (
            '[routing.tiers.SIMPLE]\nprimary = ""\n',
            "config: routing.tiers.SIMPLE.primary must be a non-empty model id, got ''",
        ),
        (
            '[pricing."m"]\ninput_per_mtok = -1\noutput_per_mtok = 1\n',
            "config: pricing.m.input_per_mtok must be a finite number >= 0, got -1.0",
        ),
        (
            '[store]\nurl = "bogus://"\n',
            "config: store.url must be memory://, redis://host:port/db, rediss://..., "
            "unix://..., redis+cluster://host:port,... or redis+sentinel://host:port,.../service, "
            "got 'bogus://'",
        ),
        (
            '[upstream]\nbase_url = "https://u:secret@api.example.com/v1"\n',
            "config: upstream.base_url must not carry credentials (user:password@); put the key "
            "in the environment variable named by upstream.api_key_env",
        ),
    ],
)
def test_config_errors_are_one_line_with_the_full_key(tmp_path: Path, toml: str, line: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    for args in (("config", "check", str(path)), ("serve", "--config", str(path))):
        result = run_cli(*args)
        assert result.returncode == 2
        assert result.stderr == f"llm-sessions: {line}\n"


def test_a_bad_store_flag_is_one_line_naming_store_url() -> None:
    result = run_cli("serve", "--store", "bogus://x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "llm-sessions: config: store.url must be memory://, redis://host:port/db, rediss://..., "
        "unix://..., redis+cluster://host:port,... or redis+sentinel://host:port,.../service, "
        "got 'bogus://x'"
    ]


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["standin"], ["config", "check", "x"]])
def test_a_missing_extra_is_one_line_and_exit_2(command: list[str]) -> None:
    result = run_cli(*command, block="starlette")
    assert result.returncode == 2
    assert result.stderr == (
        "llm-sessions: the gateway needs its web stack: pip install 'llm-sessions[server]'\n"
    )


def test_the_demo_needs_no_openai_client() -> None:
    result = run_cli("demo", block="openai")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 12 + 3 + 3  # the chat conversation, the Messages and Responses sessions
    assert "sent with max_tokens" in rows[10] and "budget_exceeded" in rows[11]
    assert result.stderr == ""  # no warnings, no tracebacks


def test_the_standin_command_serves_chat_completions() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_sessions", "standin", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "any", "messages": [{"role": "user", "content": "hi"}]},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, proc.stderr
                time.sleep(0.05)
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] > 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/v1" in out


def test_serve_prints_its_start_up_line_warns_and_logs_one_json_line_per_request(
    tmp_path: Path,
) -> None:
    standin = StandIn()
    with running(standin.app()) as upstream_url:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_sessions", "serve", "--port", str(port),
             "--upstream", f"{upstream_url}/v1", "--store", dead],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                        timeout=30,
                    )
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
    lines = err.splitlines()
    start = json.loads(lines[0])
    assert start["event"] == "start"
    assert start["version"] == __version__
    assert start["address"] == f"http://127.0.0.1:{port}"
    assert start["store"] == dead.replace("hunter2", "***")
    assert start["upstreams"]["default"]["apis"] == ["chat"]
    assert start["budget"] == {
        "max_session_cost_usd": None, "mode": "strict", "on_store_error": "refuse"
    }  # fmt: skip
    assert any("OPENAI_API_KEY" in line and "not set" in line for line in lines)
    assert any("can't be reached" in line and "***" in line for line in lines)
    assert "hunter2" not in err
    assert not any("HTTP Request:" in line for line in lines)  # httpx at warning
    access = [json.loads(line) for line in lines if line.startswith('{"event": "chat"')]
    assert len(access) == 1
    assert access[0]["status"] == 200


def test_start_up_warnings_name_the_variable_and_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(
        "http://127.0.0.1:9", store_url=f"redis://user:pw@127.0.0.1:{free_port()}/0"
    )
    with (
        caplog.at_level(logging.WARNING, logger="llm_sessions.gateway"),
        running(Gateway(settings).app()),
    ):
        pass
    messages = [r.getMessage() for r in caplog.records if r.name == "llm_sessions.gateway"]
    assert any("TEST_UPSTREAM_KEY" in m for m in messages)
    assert any("redis://user:***@127.0.0.1" in m for m in messages)
    assert not any(":pw@" in m for m in messages)


def test_start_up_line_reports_a_cap_exactly() -> None:
    settings = load_settings(None, store_url="memory://")
    line = json.loads(startup_line(settings, None))
    assert line["budget"]["max_session_cost_usd"] is None
    capped = settings_for("http://127.0.0.1:9", max_session_cost_usd=5.0)
    assert (
        json.loads(startup_line(capped, "g.toml"))["budget"]["max_session_cost_usd"] == "5.000000"
    )
