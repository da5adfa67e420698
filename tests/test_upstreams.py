"""Several upstreams: which API each serves, the model map, chains that cross upstreams,
key forwarding, and the start-up checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway_helpers import gateway_over_standins
from llm_sessions import Pricing
from llm_sessions.server import Gateway
from llm_sessions.server.settings import ConfigError, load_settings
from llm_sessions.server.standin import StandIn

TOML = """
[upstream]
base_url = "{openai}/v1"
api_key_env = "TEST_OPENAI_KEY"
apis = ["chat"]
translate_to = []  # each API only to the upstreams that serve it (tests/test_translation
                   # crosses them)

[upstreams.anthropic]
base_url = "{anthropic}/v1"
api_key_env = "TEST_ANTHROPIC_KEY"
auth = "x-api-key"
apis = ["messages"]
translate_to = []
forward_client_key = {forward}

[models."anthropic/claude-sonnet-4.6"]
upstream = "anthropic"
name = "claude-sonnet-4-6"

[models."anthropic/claude-haiku-4.5"]
upstream = "anthropic"
name = "claude-haiku-4-5"

[routing.tiers.SIMPLE]
primary = "openai/gpt-4o-mini"
fallback = ["anthropic/claude-haiku-4.5"]

[routing.tiers.COMPLEX]
primary = "anthropic/claude-sonnet-4.6"
fallback = ["openai/gpt-4o"]
"""


@dataclass
class Two:
    url: str
    openai: StandIn
    anthropic: StandIn
    gateway: Gateway


@contextmanager
def two_upstreams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forward: bool = False
) -> Iterator[Two]:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-gateway-openai")
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-gateway-anthropic")
    with gateway_over_standins(
        tmp_path, TOML, ("openai", "anthropic"), forward=str(forward).lower()
    ) as (url, standins, gateway):
        yield Two(url, standins["openai"], standins["anthropic"], gateway)


def messages_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": text}],
            **extra}  # fmt: skip


def test_each_api_goes_only_to_upstreams_that_serve_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_upstreams(tmp_path, monkeypatch) as two:
        chat = httpx.post(f"{two.url}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        api = anthropic.Anthropic(base_url=two.url, api_key="sk-caller", max_retries=0)
        raw = api.messages.with_raw_response.create(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        api.close()
    # chat: the SIMPLE primary, on the OpenAI-style upstream
    assert chat.headers["x-session-served-model"] == "openai/gpt-4o-mini"
    assert [r["model"] for r in two.openai.received] == ["openai/gpt-4o-mini"]
    # messages: the primary's upstream does not serve it, so the chain's next model, under
    # the id its upstream expects
    assert raw.headers["x-session-served-model"] == "anthropic/claude-haiku-4.5"
    assert [r["model"] for r in two.anthropic.received] == ["claude-haiku-4-5"]
    assert two.anthropic.headers[0]["x-api-key"] == "sk-gateway-anthropic"
    assert "authorization" not in two.anthropic.headers[0]
    assert two.openai.headers[0]["authorization"] == "Bearer sk-gateway-openai"


def test_a_count_goes_only_to_an_upstream_that_serves_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit model no Messages upstream serves is a 400 naming `model`; a session
    pinned to a chat-only model counts on the model its next Messages turn would be served
    by (the chain's next that speaks Messages), never on the chat-only upstream."""
    with two_upstreams(tmp_path, monkeypatch) as two:
        count = f"{two.url}/v1/messages/count_tokens"
        hi = [{"role": "user", "content": "hi"}]
        explicit = httpx.post(count, json={"model": "openai/gpt-4o", "messages": hi}, timeout=30)
        pinned = httpx.post(
            f"{two.url}/v1/chat/completions", json={"model": "auto", "messages": hi},
            headers={"x-session-id": "p"}, timeout=30,
        )  # fmt: skip
        assert pinned.headers["x-session-model"] == "openai/gpt-4o-mini"
        counted = httpx.post(
            count, json={"model": "auto", "messages": hi}, headers={"x-session-id": "p"},
            timeout=30,
        )  # fmt: skip
    assert explicit.status_code == 400, explicit.text
    assert explicit.json()["error"]["type"] == "invalid_request_error"
    assert "model" in explicit.json()["error"]["message"]
    assert counted.status_code == 200, counted.text
    assert counted.headers["x-session-model"] == "anthropic/claude-haiku-4.5"
    assert [r["model"] for r in two.openai.received] == ["openai/gpt-4o-mini"]  # the chat turn
    assert [r["model"] for r in two.anthropic.received] == ["claude-haiku-4-5"]


LEAK = "Incorrect API key provided: sk-proj-****WXYZ. You can find your API key at ..."


def test_an_upstream_refusing_the_operators_key_never_shows_it_to_a_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator-key upstream's 401/403 names the operator's key: the client gets the
    gateway's own 502 (the full body is logged on the gateway's side); a forwarding
    upstream's refusal of the caller's own key is passed on as it is."""
    caplog.set_level(logging.WARNING, logger="llm_sessions.gateway")
    with two_upstreams(tmp_path, monkeypatch, forward=True) as two:
        two.openai.set("openai/gpt-4o-mini", status=401, error_type="invalid_request_error",
                       error_message=LEAK)  # fmt: skip
        two.anthropic.set("claude-haiku-4-5", status=401, error_type="authentication_error",
                          error_message="invalid x-api-key")  # fmt: skip
        hi = [{"role": "user", "content": "hi"}]
        ours = httpx.post(f"{two.url}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": hi})  # fmt: skip
        two.openai.set("openai/gpt-4o-mini", status=403, error_message=LEAK)
        forbidden = httpx.post(f"{two.url}/v1/chat/completions", timeout=30,
                               json={"model": "auto", "messages": hi})  # fmt: skip
        theirs = httpx.post(f"{two.url}/v1/messages", json=messages_body("hi"), timeout=30,
                            headers={"x-api-key": "sk-ant-wrong"})  # fmt: skip
    for reply in (ours, forbidden):
        assert reply.status_code == 502, reply.text
        assert "sk-proj" not in reply.text
        assert reply.json()["error"]["type"] == "upstream_error"
    assert LEAK in caplog.text  # the operator sees it
    assert theirs.status_code == 401
    assert theirs.json()["error"]["message"] == "invalid x-api-key"


def test_the_caller_key_is_forwarded_only_where_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_upstreams(tmp_path, monkeypatch, forward=True) as two:
        httpx.post(f"{two.url}/v1/messages", json=messages_body("hi"), timeout=30,
                   headers={"x-api-key": "sk-ant-callers-own"})  # fmt: skip
        httpx.post(f"{two.url}/v1/chat/completions", timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": "Bearer sk-callers-openai"})  # fmt: skip
    assert two.anthropic.headers[0]["x-api-key"] == "sk-ant-callers-own"
    assert two.openai.headers[0]["authorization"] == "Bearer sk-gateway-openai"


def test_an_explicit_model_another_api_serves_is_refused_before_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_upstreams(tmp_path, monkeypatch) as two:
        reply = httpx.post(
            f"{two.url}/v1/messages",
            json={**messages_body("hi"), "model": "openai/gpt-4o-mini"},
            headers={"x-session-id": "e"},
        )
        session = httpx.get(f"{two.url}/v1/sessions/e")
    assert reply.status_code == 400
    assert "messages API" in reply.json()["error"]["message"]
    assert session.status_code == 404  # nothing stored
    assert two.openai.received == two.anthropic.received == []


def test_models_and_start_up_say_which_apis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_sessions.server.run import startup_line

    with two_upstreams(tmp_path, monkeypatch) as two:
        listed = httpx.get(f"{two.url}/v1/models").json()["data"]
        line = startup_line(two.gateway.settings, "gateway.toml")
    apis = {m["id"]: m["apis"] for m in listed}
    assert apis["auto"] == ["chat", "messages"]
    assert apis["openai/gpt-4o-mini"] == ["chat"]
    assert apis["anthropic/claude-sonnet-4.6"] == ["messages"]
    assert '"anthropic": {"base_url"' in line and '"apis": ["messages"]' in line


def test_a_tier_left_without_a_model_for_an_api_is_a_start_up_error(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    toml = (
        '[upstream]\napis = ["chat"]\n{no}[upstreams.a]\nbase_url = "https://a.example/v1"\n'
        'apis = ["messages"]\n{no}[models."m-a"]\nupstream = "a"\n'
        '[routing.tiers.SIMPLE]\nprimary = "m-a"\n[routing.tiers.COMPLEX]\nprimary = "gpt-4o"\n'
    )
    path.write_text(toml.format(no=""))  # each tier served through translation: accepted
    assert load_settings(path).sends_as("m-a", "chat") == "messages"
    path.write_text(toml.format(no="translate_to = []\n"))  # no translation: a tier short
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith("config: routing.tiers.")
    assert "has no model served for the" in message
    path.write_text('[models."x"]\nupstream = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"models\.x\.upstream must name an upstream"):
        load_settings(path)


def test_the_single_upstream_table_still_means_chat(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[upstream]\nbase_url = "https://api.example.com/v1"\n')
    settings = load_settings(path)
    assert [up.name for up in settings.upstreams] == ["default"]
    assert settings.upstream.apis == ("chat",)
    assert settings.apis == ("chat", "messages", "responses")  # the others, translated
    assert settings.route("gpt-4o") == (settings.upstream, "gpt-4o")


def test_prices_follow_the_routing_id_not_the_upstream_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_upstreams(tmp_path, monkeypatch) as two:
        two.gateway.policy.pricing["anthropic/claude-haiku-4.5"] = Pricing(1, 5)
        reply = httpx.post(f"{two.url}/v1/messages", json=messages_body("hi"),
                           headers={"x-session-id": "p"}, timeout=30)  # fmt: skip
        session = httpx.get(f"{two.url}/v1/sessions/p").json()
    usage = reply.json()["usage"]
    assert session["session_cost_micros"] == usage["input_tokens"] + 5 * usage["output_tokens"]


BYOK = """
[upstream]
base_url = "{openai}/v1"
api_key_env = "TEST_OPENAI_KEY"
apis = ["chat", "messages"]
{operator_extra}

[upstreams.anthropic]
base_url = "{anthropic}/v1"
auth = "x-api-key"
apis = ["chat", "messages"]
forward_client_key = true

[upstreams.router]
base_url = "{router}/v1"
apis = ["chat", "messages"]
forward_client_key = true

[models."anthropic/claude"]
upstream = "anthropic"

[models."router/claude"]
upstream = "router"

[routing.tiers.SIMPLE]
primary = "anthropic/claude"
fallback = ["router/claude", "openai/gpt"]
"""


@contextmanager
def byok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operator_extra: str = ""
) -> Iterator[tuple[str, dict[str, StandIn]]]:
    """Two forwarding upstreams (one takes x-api-key, one Bearer) and an operator-key one
    last on the chain."""
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-gateway-openai")
    names = ("openai", "anthropic", "router")
    with gateway_over_standins(tmp_path, BYOK, names, operator_extra=operator_extra) as (
        url,
        standins,
        _,
    ):
        yield url, standins


def test_a_callers_key_goes_only_to_upstreams_that_take_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An x-api-key (Anthropic's scheme) goes to the x-api-key upstream only, never as a
    Bearer token to another forwarding upstream; a Bearer key the other way round; and a
    caller who brought a key is not served on the operator's key when the upstreams that
    take it fail."""
    with byok(tmp_path, monkeypatch) as (url, up):
        up["anthropic"].set("anthropic/claude", status=503)
        down = httpx.post(f"{url}/v1/messages", json=messages_body("hi"), timeout=30,
                          headers={"x-api-key": "sk-ant-caller"})  # fmt: skip
        bearer = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                            headers={"authorization": "Bearer sk-or-caller"})  # fmt: skip
    assert down.status_code == 502, down.text
    assert [h.get("x-api-key") for h in up["anthropic"].headers] == ["sk-ant-caller"]
    assert up["openai"].received == []  # not on the operator's key
    assert bearer.status_code == 200, bearer.text
    assert bearer.headers["x-session-served-model"] == "router/claude"
    assert [h.get("authorization") for h in up["router"].headers] == ["Bearer sk-or-caller"]
    assert len(up["anthropic"].received) == 1  # the Bearer key never went there


def test_the_operators_key_serves_key_holders_only_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with byok(tmp_path, monkeypatch, "serve_callers_with_keys = true") as (url, up):
        up["anthropic"].set("anthropic/claude", status=503)
        reply = httpx.post(f"{url}/v1/messages", json=messages_body("hi"), timeout=30,
                           headers={"x-api-key": "sk-ant-caller"})  # fmt: skip
        anonymous = httpx.post(f"{url}/v1/messages", json=messages_body("hello"), timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-session-served-model"] == "openai/gpt"
    assert up["openai"].headers[0]["authorization"] == "Bearer sk-gateway-openai"
    assert "sk-ant-caller" not in str(up["openai"].headers) + str(up["router"].headers)
    assert anonymous.status_code == 200  # no key: the operator's upstream serves as before
