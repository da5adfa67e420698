"""The gateway's guarantees, each written once and run over every API it serves (Chat
Completions, Messages, Responses), streamed or not, on every store kind (memory, one Redis
server, a Redis Cluster, Redis behind Sentinel).
A new API or store is one more parameter value here, and inherits every row.

Rows so far:
- a tenant never reads, continues, deletes or spends another tenant's session or
  stored state; a caller's own key goes only to the forwarding upstream meant for it,
  and a caller who brought one is never served on the operator's key;
- the cap holds: a session's spend stays within its cap under concurrent requests (on
  one upstream, and when a dearer fallback upstream serves), and with the stored context
  a continuation is sent again;
- a served request is billed once: from the upstream's usage when it comes, else from a
  conservative estimate, at least what was generated; also when a fallback on another
  upstream served it, at that model's price, and when the request was translated to an
  upstream of another API (the usage the client sees priced as the upstream's was);
- a malformed request, or one past the counts any LLM API takes, is a 4xx in the API's
  own error shape and changes nothing: no session, no upstream call. (What one request
  may cost the gateway in CPU and event-loop time is measured by bench/body_bench.py,
  not asserted here: these machines are shared.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway_helpers import PRICES, Running, gateway_over_standins, gateway_with_standin
from llm_sessions.server.standin import Behaviour

APIS = ("chat", "messages", "responses")
STREAMED = (False, True)
STORES = ("memory", "redis", "redis-cluster", "redis-sentinel")
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


def store_url(store: str, request: pytest.FixtureRequest) -> str:
    """The URL of an emptied store of kind `store`."""
    if store == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{store.replace('-', '_')}_url"))


def store_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"store_url": store_url(request.param, request)}


@pytest.fixture(params=STORES, scope="module")
def refusing_gateway(request: pytest.FixtureRequest) -> Iterator[Running]:
    """One gateway per store kind for the rows whose requests must change nothing (so
    each request checks that the one before it did not either)."""
    url = "memory://"
    if request.param != "memory":  # the servers, not emptied (a fixture of this scope)
        servers = {"redis": "redis_server", "redis-cluster": "redis_cluster",
                   "redis-sentinel": "redis_sentinel"}  # fmt: skip
        url = request.getfixturevalue(servers[request.param]).url
    with gateway_with_standin(store_url=url) as gw:
        yield gw


@pytest.fixture(params=STORES)
def gateway(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A gateway in front of a stand-in upstream, on each store kind, with two tenants'
    keys (any bearer token is a tenant of its own)."""
    with gateway_with_standin(**store_overrides(request)) as gw:
        yield gw


#: The cap of `capped`'s sessions, in USD: about ten short requests (prices: 1 and 2
#: micro-USD per input and output token).
CAP_USD = 0.002
#: What the stand-in answers: 50 words, 50 output tokens (cut at the request's limit).
FIFTY_WORDS = " ".join(["word"] * 50)


@pytest.fixture(params=STORES)
def capped(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A gateway whose sessions have a cap of `CAP_USD`, in front of a stand-in that
    answers with as much output as a request allows (up to 50 tokens)."""
    with gateway_with_standin(max_session_cost_usd=CAP_USD, **store_overrides(request)) as gw:
        gw.standin.default = Behaviour(text=FIFTY_WORDS)
        yield gw


def spent_micros(gw: Running, session: str, key: str = "sk-test") -> int:
    found = gw.session(session, key)
    assert found is not None
    return round(float(found["session_cost_usd"]) * 1_000_000)


def at_once(count: int, call: Any) -> list[Any]:
    """`call(i)` for i in range(count), all at once."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


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


# -- the cap ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_the_cap_holds_under_concurrent_requests(capped: Running, api: str, stream: bool) -> None:
    """30 requests of one session at once, each able to cost about a tenth of the cap:
    some are served, the rest refused as final, and the session's spend (each answer's
    usage priced) stays within the cap."""
    gw = capped
    named = {"x-session-id": f"cap-{api}-{stream}"}
    limit = {"max_output_tokens": 50} if api == "responses" else {"max_tokens": 50}

    def one(i: int) -> int:
        return send(
            gw, api, "sk-test", f"turn {i}: " + "x" * 200, stream, named, **limit
        ).status_code

    statuses = at_once(30, one)
    # (a 503 is a store that answered too late under a loaded machine's event loop: it
    # refuses, and spends nothing, as the cap requires)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1
    spent = spent_micros(gw, named["x-session-id"])
    assert 0 < spent <= CAP_USD * 1_000_000


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("field", ["previous_response_id", "conversation"])
def test_the_cap_holds_with_the_stored_context_a_continuation_sends(
    capped: Running, stream: bool, field: str
) -> None:
    """A continuation is billed, upstream, for the whole context it continues: 20
    continuations at once of a response whose context is a third of the cap stay within
    the cap (each counts that context in its worst case)."""
    gw = capped
    price = PRICES["anthropic/m1"]
    assert price.cost_micros(1, 0) == 1  # one micro-USD per input token
    made = send(gw, "responses", "sk-test", "y" * 2_600, False, conversation="conv_cap",
                max_output_tokens=8)  # fmt: skip
    assert made.status_code == 200, made.text
    session = made.headers["x-session-id"]
    context = made.json()["usage"]["total_tokens"]
    assert context * 3 > CAP_USD * 1_000_000 * 0.9  # about a third of the cap
    ref = {"previous_response_id": made.json()["id"]} if field == "previous_response_id" else {
        "conversation": "conv_cap"}  # fmt: skip

    def one(i: int) -> int:
        reply = send(gw, "responses", "sk-test", f"and {i}?", stream, max_output_tokens=4, **ref)
        return reply.status_code

    statuses = at_once(20, one)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1
    assert spent_micros(gw, session) <= CAP_USD * 1_000_000


# -- malformed requests ---------------------------------------------------------------------


def _items(api: str, count: int, content: Any = "x") -> dict[str, Any]:
    """`count` messages (Responses: input items) of `content`."""
    field = "input" if api == "responses" else "messages"
    return {field: [{"role": "user", "content": content}] * count}


MALFORMED: dict[str, tuple[Any, str | None]] = {
    # name: (the body, or a function of the API giving it; the param the error names)
    "not JSON": (b'{"model": "auto", "messages": [', None),
    "not an object": (b"[1, 2, 3]", None),
    "NaN": (b'{"model": "auto", "temperature": NaN}', None),
    "nested too deeply": (lambda api: {**_items(api, 1), "metadata": json.loads("[" * 129 + "]" * 129)}, None),
    "too many tools": (lambda api: {**_items(api, 1), "tools": [{}] * 1025}, "tools"),
    "too many messages": (lambda api: _items(api, 100_001), "input|messages"),
    "too many parts": (lambda api: _items(api, 2, [{"type": "text", "text": "x"}] * 50_001), "input|messages"),
    "a bad model": (lambda api: {**_items(api, 1), "model": 7}, "model"),
}  # fmt: skip


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_request_is_refused_in_its_api_shape_and_changes_nothing(
    refusing_gateway: Running, api: str, stream: bool, case: str
) -> None:
    gateway = refusing_gateway
    made, param = MALFORMED[case]
    if callable(made):
        body = {"model": "auto", "stream": stream, **made(api)}
        if api == "messages":
            body["max_tokens"] = 16
        content = json.dumps(body).encode()
    else:
        content = made
    with gateway.http("sk-malformed") as http:  # a tenant only this row uses
        reply = http.post(PATHS[api], content=content, headers={"x-session-id": "bad"})
        assert http.get("/v1/sessions").json()["sessions"] == []
    assert reply.status_code == 400, reply.text
    kind, _ = error_of(api, reply)
    assert kind == "invalid_request_error"
    if param is not None and api != "messages":  # Anthropic's errors have no param
        assert reply.json()["error"]["param"] in param.split("|")
    assert gateway.standin.received == []


# -- billed once ----------------------------------------------------------------------------


def usage_in(api: str, stream: bool, reply: httpx.Response) -> dict[str, Any] | None:
    """The usage an answer carried, as its API reports it (streams: their usage events)."""
    if not stream:
        return dict(reply.json()["usage"]) if reply.json().get("usage") else None
    events = [json.loads(line[6:]) for line in reply.text.splitlines()
              if line.startswith("data: ") and line[6:] != "[DONE]"]  # fmt: skip
    if api == "chat":
        return next((e["usage"] for e in events if e.get("usage")), None)
    if api == "responses":
        done = [e for e in events if e.get("type") == "response.completed"]
        return done[-1]["response"].get("usage") if done else None
    start = next(e["message"] for e in events if e.get("type") == "message_start")
    delta = [e["usage"] for e in events if e.get("type") == "message_delta" and e.get("usage")]
    return {**start.get("usage", {}), **delta[-1]} if delta else None


@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_a_served_request_is_billed_once(
    gateway: Running, api: str, stream: bool, usage: bool
) -> None:
    """The session's cost is the answer's usage priced, once; without usage, the
    estimate, never less than the output generated (ceil(bytes / 3) tokens)."""
    from llm_sessions import token_usage

    gateway.standin.default = Behaviour(text=FIFTY_WORDS, usage=usage)
    named = {"x-session-id": f"billed-{api}-{stream}-{usage}"}
    extra = {"stream_options": {"include_usage": True}} if api == "chat" and stream else {}
    reply = send(gateway, api, "sk-test", "count to fifty", stream, named, **extra)
    assert reply.status_code == 200, reply.text
    price = PRICES[reply.headers["x-session-served-model"]]
    spent = spent_micros(gateway, named["x-session-id"])
    seen = usage_in(api, stream, reply)
    if usage:
        assert seen is not None
        assert spent == price.usage_micros(token_usage(seen))
    else:
        assert seen is None or not seen.get("output_tokens", seen.get("completion_tokens"))
        assert spent >= price.cost_micros(0, -(-len(FIFTY_WORDS.encode()) // 3)) > 0
    found = gateway.session(named["x-session-id"])
    assert found is not None and found["request_count"] == 1
    # and logged once, with what it was billed, in the session's event log
    with gateway.http() as http:
        (event,) = http.get(f"/v1/sessions/{named['x-session-id']}/events").json()["events"]
    assert (event["cost_micros"], event["total_micros"]) == (spent, spent)
    assert (event["api"], event["stream"], event["outcome"]) == (api, stream, "served")


#: the API a translated request goes out in: one its client's gateway does not serve
TRANSLATED_TO = {"chat": "messages", "messages": "chat", "responses": "chat"}


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_a_translated_request_is_billed_once_from_the_upstreams_usage(
    api: str, stream: bool, store: str, request: pytest.FixtureRequest
) -> None:
    """An upstream of another API (the request translated there, the answer back): the
    session is billed once, the usage the client sees (translated) priced as the
    upstream's own was, and the turn logged as translated."""
    from llm_sessions import token_usage

    target = TRANSLATED_TO[api]
    overrides = {"store_url": store_url(store, request), "upstream": {"apis": (target,)}}
    with gateway_with_standin(**overrides) as gw:
        gw.standin.default = Behaviour(text=FIFTY_WORDS, cached_tokens=3)
        named = {"x-session-id": f"translated-{api}-{stream}"}
        extra = {"stream_options": {"include_usage": True}} if api == "chat" and stream else {}
        reply = send(gw, api, "sk-test", "count to fifty", stream, named, **extra)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-session-translated"] == f"{api}->{target}"
        spent = spent_micros(gw, named["x-session-id"])
        with gw.http() as http:
            (event,) = http.get(f"/v1/sessions/{named['x-session-id']}/events").json()["events"]
        sent = gw.standin.received
    seen = usage_in(api, stream, reply)
    assert seen is not None and len(sent) == 1
    price = PRICES[reply.headers["x-session-served-model"]]
    assert spent == price.usage_micros(token_usage(seen)) > 0
    assert (event["cost_micros"], event["translated"]) == (spent, f"{api}->{target}")
    assert event["cache_read_tokens"] == 3


TWO_UPSTREAMS = """
[upstream]
base_url = "{a}/v1"
apis = ["chat", "messages", "responses"]

[upstreams.b]
base_url = "{b}/v1"
apis = ["chat", "messages", "responses"]

[models."b/m"]
upstream = "b"

[routing.tiers.SIMPLE]
primary = "a/m"
fallback = ["b/m"]

[pricing."a/m"]
input_per_mtok = 1
output_per_mtok = 2

[pricing."b/m"]
input_per_mtok = 3
output_per_mtok = 6

[store]
url = "{store}"
"""


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_a_request_a_fallback_upstream_served_is_billed_once_at_its_price(
    api: str, stream: bool, store: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Two upstreams: the primary's answers 503, the fallback's serves. The session is
    billed once, the fallback's usage at the fallback's price, and pinned to it."""
    from llm_sessions import Pricing, token_usage

    url = store_url(store, request)
    with gateway_over_standins(tmp_path, TWO_UPSTREAMS, ("a", "b"), store=url) as (
        gateway_url,
        standins,
        _,
    ):
        standins["a"].set("a/m", status=503)
        extra = {"stream_options": {"include_usage": True}} if api == "chat" and stream else {}
        named = {"x-session-id": "fell-back", "authorization": "Bearer sk-test"}
        with httpx.Client(base_url=gateway_url, timeout=30) as http:
            reply = http.post(PATHS[api], json=body_for(api, "hello", stream, **extra),
                              headers=named)  # fmt: skip
            reply.read()
            found = http.get("/v1/sessions/fell-back", headers=named).json()
            log = http.get("/v1/sessions/fell-back/events", headers=named).json()["events"]
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-session-served-model"] == "b/m"
    assert (len(standins["a"].received), len(standins["b"].received)) == (1, 1)
    seen = usage_in(api, stream, reply)
    assert seen is not None
    assert round(float(found["session_cost_usd"]) * 1e6) == Pricing(3, 6).usage_micros(
        token_usage(seen)
    )
    assert found["request_count"] == 1 and found["model"] == "b/m"
    assert [(e["reason"], e["model"], e["decided"]) for e in log] == [("fallback", "b/m", "a/m")]
    assert log[0]["cost_micros"] == round(float(found["session_cost_usd"]) * 1e6)


# -- the cap and the caller's key, over upstream topologies ----------------------------------


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_the_cap_holds_when_a_fallback_upstream_serves(
    api: str, stream: bool, store: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Two upstreams, the primary down: 20 requests of one session at once, served by the
    fallback at three times the primary's price. The worst case of each counts the dearest
    model it may reach, so the session's spend stays within the cap."""
    from llm_sessions import Pricing, token_usage

    url = store_url(store, request)
    template = TWO_UPSTREAMS + f"\n[budget]\nmax_session_cost_usd = {CAP_USD}\n"
    with gateway_over_standins(tmp_path, template, ("a", "b"), store=url) as (
        gateway_url,
        standins,
        _,
    ):
        standins["a"].set("a/m", status=503)
        standins["b"].default = Behaviour(text=FIFTY_WORDS)
        named = {"x-session-id": "capped-fallback", "authorization": "Bearer sk-test"}
        limit = {"max_output_tokens": 50} if api == "responses" else {"max_tokens": 50}
        extra = {"stream_options": {"include_usage": True}} if api == "chat" and stream else {}

        def one(i: int) -> httpx.Response:
            with httpx.Client(base_url=gateway_url, timeout=30, headers=named) as http:
                body = body_for(api, f"turn {i}: " + "x" * 200, stream, **limit, **extra)
                reply = http.post(PATHS[api], json=body)
                reply.read()
                return reply

        replies = at_once(20, one)
        with httpx.Client(base_url=gateway_url, timeout=30, headers=named) as http:
            found = http.get("/v1/sessions/capped-fallback").json()
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1
    served = [r for r in replies if r.status_code == 200]
    assert {r.headers["x-session-served-model"] for r in served} == {"b/m"}
    upstream_bill = sum(
        Pricing(3, 6).usage_micros(token_usage(usage_in(api, stream, r) or {})) for r in served
    )
    spent = round(float(found["session_cost_usd"]) * 1e6)
    assert spent == upstream_bill  # each served answer billed once, at its price
    assert 0 < spent <= CAP_USD * 1_000_000


BESIDE_OPERATOR = """
[upstream]
base_url = "{operator}/v1"
apis = ["chat", "messages", "responses"]
api_key_env = "GUARANTEE_OPERATOR_KEY"

[upstreams.own]
base_url = "{own}/v1"
apis = ["chat", "messages", "responses"]
forward_client_key = true

[models."own/m"]
upstream = "own"

[routing.tiers.SIMPLE]
primary = "own/m"
fallback = ["operator/m"]

[pricing."own/m"]
input_per_mtok = 1
output_per_mtok = 2

[store]
url = "{store}"
"""


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("api", APIS)
def test_a_callers_key_goes_only_where_it_is_meant(
    api: str,
    stream: bool,
    store: str,
    tmp_path: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forwarding-key upstream first, an operator-key one as its fallback. A caller's
    key goes to the forwarding upstream only; when that is down, the caller who brought
    a key gets an error in its API's shape, is not served on the operator's key, and is
    charged nothing. A caller without a key of its own is served on the operator's, and
    the operator's key goes nowhere else."""
    monkeypatch.setenv("GUARANTEE_OPERATOR_KEY", "sk-operator")
    url = store_url(store, request)
    with gateway_over_standins(tmp_path, BESIDE_OPERATOR, ("operator", "own"), store=url) as (
        gateway_url,
        standins,
        _,
    ):
        own, operator = standins["own"], standins["operator"]
        with httpx.Client(base_url=gateway_url, timeout=30) as http:
            caller = {"authorization": "Bearer sk-caller", "x-session-id": "byok"}
            served = http.post(PATHS[api], json=body_for(api, "hi", stream), headers=caller)
            before = http.get("/v1/sessions/byok", headers=caller).json()
            own.set("own/m", status=503)
            refused = http.post(PATHS[api], json=body_for(api, "again", stream), headers=caller)
            spent = http.get("/v1/sessions/byok", headers=caller).json()
            anonymous = http.post(PATHS[api], json=body_for(api, "hello", stream))
    assert served.status_code == 200, served.text
    assert served.headers["x-session-served-model"] == "own/m"
    assert refused.status_code == 502, refused.text
    error_of(api, refused)
    # the anonymous caller was tried there too, with no key (that upstream has none of its own)
    assert [h.get("authorization") for h in own.headers] == ["Bearer sk-caller"] * 2 + [None]
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.headers["x-session-served-model"] == "operator/m"
    assert [h.get("authorization") for h in operator.headers] == ["Bearer sk-operator"]
    assert float(before["session_cost_usd"]) > 0
    assert spent["session_cost_usd"] == before["session_cost_usd"]  # nothing charged
