"""The session ids real agents send: each source, their precedence, their validation,
and scoping, in the library and through the gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway_helpers import chat, gateway_with_standin
from llm_sessions import Config, InvalidSessionId, SessionPolicy, SessionStore, session_key
from llm_sessions.ids import DEFAULT_ID_SOURCES, check_id_sources, find_session_id

TIERS = {"SIMPLE": {"primary": "s"}, "COMPLEX": {"primary": "c"}}
CLAUDE_CODE = "5f0c3a52-8f4e-4b1b-9c1e-0e4f2b7a9d10"


def body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **extra}


def claude_metadata(session: str) -> dict[str, Any]:
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session})
    return {"metadata": {"user_id": user_id}}


# each source alone: (headers, body extra, expected id, expected source)
ALONE = [
    ({"x-session-id": "mine"}, {}, "mine", "x-session-id"),
    ({"X-Claude-Code-Session-Id": CLAUDE_CODE}, {}, CLAUDE_CODE, "x-claude-code-session-id"),
    ({"session_id": "codex-1"}, {}, "codex-1", "session_id"),
    ({"session-id": "other-1"}, {}, "other-1", "session-id"),
    ({"x-session-affinity": "oc-1"}, {}, "oc-1", "x-session-affinity"),
    ({}, claude_metadata(CLAUDE_CODE), CLAUDE_CODE, "metadata.user_id"),
    ({}, {"prompt_cache_key": "pck-1"}, "pck-1", "prompt_cache_key"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "extra", "sid", "source"), ALONE)
def test_each_source_alone(
    headers: dict[str, str], extra: dict[str, Any], sid: str, source: str
) -> None:
    assert find_session_id(headers, body(**extra)) == (sid, source)
    policy = SessionPolicy(SessionStore(Config(cleanup_interval_ms=0)), TIERS)
    d = policy.begin(headers, body(**extra))
    assert (d.session_id, d.source, d.headers["X-Session-Source"]) == (sid, source, source)


def test_the_first_present_source_wins_in_the_default_order() -> None:
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for h, e, _, _ in ALONE:
        headers.update(h)
        extra.update(e)
    found = []
    for h, e, _, _ in ALONE:  # drop one source at a time, from the first
        found.append(find_session_id(headers, body(**extra)))
        for name in h:
            del headers[name]
        for name in e:
            del extra[name]
    assert found == [(sid, source) for _, _, sid, source in ALONE]
    assert find_session_id(headers, body(**extra)) is None


def test_a_configured_order_and_header_name() -> None:
    sources = ("prompt_cache_key", "header")
    both = ({"x-agent": "h"}, body(prompt_cache_key="p"))
    assert find_session_id(*both, sources, header_name="x-agent") == ("p", "prompt_cache_key")
    assert find_session_id(both[0], body(), sources, header_name="x-agent") == ("h", "x-agent")
    with pytest.raises(ValueError, match="unknown session id source"):
        check_id_sources(["a session"])
    with pytest.raises(ValueError, match="unknown session id source"):
        check_id_sources(["header:bad name"])
    assert check_id_sources(DEFAULT_ID_SOURCES) == DEFAULT_ID_SOURCES
    # a header by its name, or as header:NAME, any case
    assert check_id_sources(["header:X-Agent-Id", "x-other"]) == ("x-agent-id", "x-other")


@pytest.mark.parametrize(
    ("headers", "extra", "param"),
    [
        ({"x-claude-code-session-id": "x" * 257}, {}, "x-claude-code-session-id"),
        ({"session_id": "caf\xe9"}, {}, "session_id"),
        ({}, claude_metadata("bad\nid"), "metadata.user_id"),
        ({}, {"prompt_cache_key": "k" * 300}, "prompt_cache_key"),
    ],
)
def test_a_bad_value_of_a_present_source_is_refused(
    headers: dict[str, str], extra: dict[str, Any], param: str
) -> None:
    later = {"x-session-affinity": "fine"} if headers else {}  # a later, valid source
    with pytest.raises(InvalidSessionId) as info:
        find_session_id({**headers, **later}, body(**extra))
    assert info.value.param == param


@pytest.mark.parametrize(
    "user_id", ["user_abc_account__session_x", "{not json", '{"session_id": 5}', '["session_id"]']
)
def test_metadata_without_a_json_session_id_is_not_a_source(user_id: str) -> None:
    assert find_session_id({}, {"metadata": {"user_id": user_id}}) is None


def test_sources_are_scoped_like_the_header() -> None:
    policy = SessionPolicy(SessionStore(Config(cleanup_interval_ms=0)), TIERS)
    a = policy.begin({"x-claude-code-session-id": CLAUDE_CODE}, body(), scope="tenant-a")
    b = policy.begin({}, body(**claude_metadata(CLAUDE_CODE)), scope="tenant-b")
    assert a.session_id == b.session_id == CLAUDE_CODE
    assert (a.key, b.key) == (
        session_key(CLAUDE_CODE, "tenant-a"),
        session_key(CLAUDE_CODE, "tenant-b"),
    )
    assert a.reason == b.reason == "new"  # two sessions


def test_derived_ids_say_so() -> None:
    policy = SessionPolicy(SessionStore(Config(cleanup_interval_ms=0)), TIERS)
    d = policy.begin({}, body())
    assert d.source == "derived"
    assert d.headers["X-Session-Source"] == "derived"


def test_the_gateway_reads_the_sources_and_says_which_won(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with (
        gateway_with_standin() as gw,
        gw.http() as http,
        caplog.at_level(logging.INFO, logger="llm_sessions.access"),
    ):
        one = http.post("/v1/chat/completions", json=chat("hi"),
                        headers={"x-claude-code-session-id": CLAUDE_CODE})  # fmt: skip
        two = http.post("/v1/chat/completions", json={**chat("hi"), **claude_metadata(CLAUDE_CODE)})
        bad = http.post("/v1/chat/completions", json=chat("hi"), headers={"session_id": "s" * 300})
        other = http.post("/v1/chat/completions", json=chat("hi"),
                          headers={"x-claude-code-session-id": "another-conversation"})  # fmt: skip
    assert one.headers["x-session-source"] == "x-claude-code-session-id"
    assert two.headers["x-session-source"] == "metadata.user_id"
    assert one.headers["x-session-id"] == two.headers["x-session-id"] == CLAUDE_CODE
    assert two.headers["x-session-reason"] == "pinned"
    assert other.headers["x-session-reason"] == "new"  # same first message, another session
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "session_id"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "llm_sessions.access"]
    assert [line["source"] for line in lines[:2]] == [
        "x-claude-code-session-id",
        "metadata.user_id",
    ]


def test_the_gateway_checks_its_id_sources(tmp_path: Any) -> None:
    from llm_sessions.server.settings import ConfigError, load_settings

    path = tmp_path / "c.toml"
    path.write_text('[sessions]\nid_sources = ["header", "a session"]\n')
    with pytest.raises(
        ConfigError, match=r"sessions\.id_sources: unknown session id source 'a session'"
    ):
        load_settings(path)
    path.write_text('[sessions]\nid_sources = ["prompt_cache_key"]\n')
    assert load_settings(path).id_sources == ("prompt_cache_key",)
