"""The gateway's guarantees, each written once and run over every API it serves (Chat
Completions, Messages, Responses), streamed or not, on every store kind (memory, Redis).
A new API or store is one more parameter value here, and inherits every row.

Rows so far:
- a tenant never reads, continues, deletes or spends another tenant's session or
  stored state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway_helpers import Running, gateway_with_standin

APIS = ("chat", "messages", "responses")
STREAMED = (False, True)
STORES = ("memory", "redis")
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def body_for(api: str, text: str, stream: bool, **extra: Any) -> dict[str, Any]:
    """A request of `api` with one user message, as its clients send it."""
    if api == "responses":
        return {"model": "auto", "input": text, "stream": stream, **extra}
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "stream": stream}
    if api == "messages":
        body["max_tokens"] = 256
    return {**body, **extra}


def send(
    gw: Running, api: str, key: str, text: str, stream: bool, headers: Any = None, **extra: Any
) -> httpx.Response:
    """One request of `api` as tenant `key`, read whole."""
    with gw.http(key) as http:
        reply = http.post(PATHS[api], json=body_for(api, text, stream, **extra), headers=headers)
        reply.read()
        return reply


def error_of(api: str, reply: httpx.Response) -> tuple[str, str | None]:
    """(type, code) of an error answer, in the API's own shape."""
    error = reply.json()["error"]
    assert reply.headers["content-type"].startswith("application/json")
    if api == "messages":
        assert reply.json()["type"] == "error"
    return error["type"], error.get("code")


@pytest.fixture(params=STORES)
def gateway(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A gateway in front of a stand-in upstream, on each store kind, with two tenants'
    keys (any bearer token is a tenant of its own)."""
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides["store_url"] = request.getfixturevalue("redis_url")
    with gateway_with_standin(**overrides) as gw:
        yield gw


def sessions_of(gw: Running, key: str) -> list[dict[str, Any]]:
    with gw.http(key) as http:
        reply = http.get("/v1/sessions")
    assert reply.status_code == 200
    return list(reply.json()["sessions"])


# -- tenants ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_a_tenant_never_reaches_another_tenants_session(
    gateway: Running, api: str, stream: bool
) -> None:
    """Tenant b names tenant a's session id: b gets a session of its own under that id;
    a's is not read, spent, or deleted."""
    gw = gateway
    named = {"x-session-id": "shared-id"}
    mine = send(gw, api, "sk-a", "hello from a", stream, named)
    assert mine.status_code == 200 and mine.headers["x-session-id"] == "shared-id"
    before = gw.session("shared-id", "sk-a")
    assert before is not None and float(before["session_cost_usd"]) > 0

    theirs = send(gw, api, "sk-b", "hello from b", stream, named)
    assert theirs.status_code == 200
    assert theirs.headers["x-session-reason"] == "new"  # not a's pinned session
    assert gw.session("shared-id", "sk-a") == before  # a's not spent
    with gw.http("sk-b") as http:
        assert http.delete("/v1/sessions/shared-id").status_code == 200  # b's own
        assert http.delete("/v1/sessions/shared-id").status_code == 404
    assert gw.session("shared-id", "sk-a") == before  # a's not deleted
    assert [s["id"] for s in sessions_of(gw, "sk-a")] == ["shared-id"]


# what names stored state, per API: item references are inputs of the Responses API only
CONTINUATIONS = [
    *((api, field) for api in ("chat", "responses")
      for field in ("previous_response_id", "conversation")),
    ("responses", "item_reference"),
]  # fmt: skip


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize(("api", "field"), CONTINUATIONS)
def test_a_tenant_never_continues_another_tenants_stored_state(
    gateway: Running, api: str, stream: bool, field: str
) -> None:
    """Tenant b continues tenant a's stored response, conversation or output item: the
    same 404 as retrieving it, in the API's shape; nothing reaches the upstream and b has
    no session; a still continues it."""
    gw = gateway
    made = send(gw, "responses", "sk-a", "remember: the code is 1234", False,
                conversation="conv_of_a")  # fmt: skip
    assert made.status_code == 200
    response = made.json()
    kind, ident, extra = {
        "previous_response_id": ("response", response["id"],
                                 {"previous_response_id": response["id"]}),
        "conversation": ("conversation", "conv_of_a", {"conversation": "conv_of_a"}),
        "item_reference": ("item", response["output"][0]["id"], {}),
    }[field]  # fmt: skip
    if field == "item_reference":
        extra = {"input": [{"type": "item_reference", "id": ident},
                           {"role": "user", "content": "what was the code?"}]}  # fmt: skip
    upstream_calls = len(gw.standin.received)

    stolen = send(gw, api, "sk-b", "what was the code?", stream, **extra)
    assert stolen.status_code == 404, stolen.text
    assert error_of(api, stolen) == ("not_found_error", f"{kind}_not_found")
    assert f"no {kind} {ident!r} for this caller" in stolen.json()["error"]["message"]
    assert len(gw.standin.received) == upstream_calls
    assert sessions_of(gw, "sk-b") == []
    with gw.http("sk-b") as http:  # retrieval says the same
        assert http.get(f"/v1/responses/{response['id']}").status_code == 404

    own = send(gw, api, "sk-a", "what was the code?", stream, **extra)
    assert own.status_code == 200, own.text
    assert len(gw.standin.received) == upstream_calls + 1
