"""The routing flow under bad input, outages and repeats: `finish` exactly once, the budget's
worst case over the whole request, scopes that never collide, caps that hold while the
store is down, and nothing but the documented exceptions out of `begin`/`finish`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sessions import (
    BudgetExceeded,
    Config,
    InvalidRequest,
    InvalidSessionId,
    Pricing,
    RedisSessionStore,
    SessionPolicy,
    SessionStore,
    StoreUnavailable,
    session_key,
    split_key,
)
from llm_sessions.routing import IMAGE_TOKENS, estimate_prompt_tokens, tools_json_size
from llm_sessions.rules import MAX_COST_MICROS

from conftest import TIERS
from redis_server import RedisServer

PRICES = {m: Pricing(1, 1) for spec in TIERS.values() for m in [spec["primary"], *spec["fallback"]]}
CFG = Config(cleanup_interval_ms=0)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


# -- finish: exactly once, never 0 for a served request ------------------------------------------


def test_finish_is_idempotent_per_decision(make_policy: Any) -> None:
    policy, store = make_policy(pricing=PRICES, max_session_cost_usd=1)
    d = policy.begin({"x-session-id": "s"}, chat("hi", max_tokens=10))
    assert store.get_session("s").reserved_micros > 0
    first = policy.finish(d, served_model=d.model, cost_micros=70)
    assert policy.finish(d, served_model=d.model, cost_micros=70) == first == 70
    assert policy.finish(d, served_model=d.model, cost_micros=999) == 70
    assert policy.finish(d, served_model=None) == 70
    # a copy of the decision (another process, a retry after a lost reply) is caught by
    # the session's record of finished requests
    twin = dataclasses.replace(d)
    assert twin.settled_total is None
    assert policy.finish(twin, served_model=d.model, cost_micros=70) == 70
    entry = store.get_session("s")
    assert entry.session_cost_micros == 70
    assert entry.reserved_micros == 0


def test_a_failed_request_finished_twice_is_one_release(make_policy: Any) -> None:
    policy, store = make_policy(pricing=PRICES, max_session_cost_usd=1)
    d = policy.begin({"x-session-id": "s"}, chat("hi", max_tokens=10))
    policy.finish(d, served_model=None)
    d2 = policy.begin({"x-session-id": "s"}, chat("hi", max_tokens=10))
    assert d2.reason == "pinned"  # a retry of the failed turn
    assert policy.finish(dataclasses.replace(d), served_model=None) == 0
    assert store.get_session("s").reserved_micros == d2.reserved_micros  # d2's still held


@pytest.mark.parametrize(
    ("usage", "cost_micros"),
    [
        (None, None),  # missing
        ({}, None),
        ({"prompt_tokens": "12"}, None),
        ({"prompt_tokens": -1, "completion_tokens": 3}, None),
        ({"cost": "NaN"}, None),
        ({"cost": -1}, None),
        ([1, 2, 3], None),
        ("usage", None),
        ({"prompt_tokens": 1.5}, None),
        (None, -5),
        (None, "10"),
        (None, True),
    ],
)
def test_malformed_or_missing_usage_is_billed_from_the_estimate(
    make_policy: Any, usage: Any, cost_micros: Any
) -> None:
    policy, store = make_policy(pricing=PRICES, max_session_cost_usd=1)
    text = "x" * 300
    d = policy.begin({"x-session-id": "s"}, chat(text, max_tokens=10))
    total = policy.finish(
        d, served_model=d.model, usage=usage, cost_micros=cost_micros, output_bytes=90
    )
    expected = PRICES[d.model].cost_micros(d.prompt_tokens, 30)
    assert d.prompt_tokens == math.ceil(300 / 3)
    assert total == expected > 0
    entry = store.get_session("s")
    assert entry.session_cost_micros == expected
    assert entry.reserved_micros == 0


def test_readable_usage_is_billed_exactly(make_policy: Any) -> None:
    policy, _ = make_policy(pricing={m: Pricing(2, 5) for m in PRICES})
    d = policy.begin({"x-session-id": "s"}, chat("hi"))
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    assert policy.finish(d, served_model=d.model, usage=usage) == 2000 + 500


# -- the worst case covers the whole request ------------------------------------------------------


def test_the_worst_case_is_multiplied_by_n(make_policy: Any) -> None:
    policy, _ = make_policy(pricing=PRICES, max_session_cost_usd=100)
    one = policy.begin({"x-session-id": "a"}, chat("hi", max_tokens=100))
    eight = policy.begin({"x-session-id": "b"}, chat("hi", max_tokens=100, n=8))
    assert eight.reserved_micros == 8 * one.reserved_micros > 0
    capped, _ = make_policy(pricing=PRICES, max_session_cost_usd="0.000500")
    capped.begin({"x-session-id": "c"}, chat("hi", max_tokens=100))
    with pytest.raises(BudgetExceeded):
        capped.begin({"x-session-id": "d"}, chat("hi", max_tokens=100, n=64))
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InvalidRequest) as info:
            capped.begin({"x-session-id": "e"}, chat("hi", n=bad))
        assert info.value.param == "n"


def test_tool_calls_results_and_media_count_in_the_worst_case() -> None:
    arguments = json.dumps({"data": "y" * 30_000})
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "z" * 9_000},
    ]
    assert estimate_prompt_tokens(history, None) >= (30_000 + 9_000) // 3
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 3_000_000}}
    media = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, image, image]}]
    assert (
        estimate_prompt_tokens(media, None) == math.ceil(len("what is it") / 3) + 2 * IMAGE_TOKENS
    )
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    assert estimate_prompt_tokens(audio, None) > IMAGE_TOKENS


def test_the_flow_reserves_for_tool_arguments(make_policy: Any) -> None:
    policy, _ = make_policy(pricing=PRICES, max_session_cost_usd=100)
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "a" * 30_000}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    d = policy.begin({"x-session-id": "t"}, {"messages": messages, "max_tokens": 1})
    assert d.prompt_tokens >= 10_000


def test_the_tools_size_memo_sees_a_mutated_list() -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "a"}}]
    small = tools_json_size(tools)
    tools.append({"type": "function", "function": {"name": "b", "description": "d" * 3000}})
    assert tools_json_size(tools) == len(json.dumps(tools)) > small + 3000
    tools[1]["function"]["description"] = "short"
    assert tools_json_size(tools) == len(json.dumps(tools))


# -- scopes ---------------------------------------------------------------------------------------

keys_text = st.text(alphabet="ab:%3A25", max_size=8)


@settings(max_examples=500)
@given(keys_text, keys_text, keys_text, keys_text)
def test_no_two_scope_id_pairs_share_a_key(s1: str, i1: str, s2: str, i2: str) -> None:
    k1, k2 = session_key(i1, s1), session_key(i2, s2)
    assert (k1 == k2) == ((s1, i1) == (s2, i2))
    assert split_key(k1) == (s1, i1)


@settings(max_examples=200)
@given(st.text(), st.text())
def test_keys_round_trip_for_any_text(scope: str, session_id: str) -> None:
    assert split_key(session_key(session_id, scope)) == (scope, session_id)


def test_unscoped_plain_ids_keep_their_keys() -> None:
    assert session_key("3f2a-uuid") == "3f2a-uuid"
    assert SessionPolicy.session_key("abc", "") == "abc"


def test_a_scope_and_a_colon_id_are_different_sessions(make_policy: Any) -> None:
    policy, store = make_policy()
    tenant = policy.begin({"x-session-id": "main"}, chat("hi"), scope="acme")
    other = policy.begin({"x-session-id": "acme:main"}, chat("prove it step by step"))
    assert tenant.key != other.key
    assert store.get_session(tenant.key).model != store.get_session(other.key).model
    assert (tenant.key, other.key) == ("acme:main", "acme%3Amain")


# -- cost bound, rule 2 at the edge ----------------------------------------------------------------


def test_one_cost_bound_in_every_store(make_store: Any) -> None:
    store = make_store()
    assert store.add_session_cost("c", MAX_COST_MICROS - 1) == MAX_COST_MICROS - 1
    with pytest.raises(ValueError, match="micro-USD"):
        store.add_session_cost("c", 2)
    with pytest.raises(ValueError, match="micros"):
        store.add_session_cost("d", MAX_COST_MICROS + 1)
    assert store.add_session_cost("c", 1) == MAX_COST_MICROS  # not poisoned
    assert store.add_session_cost("d", 5) == 5


def test_a_write_at_exactly_the_timeout_keeps_the_session(make_store: Any, clock: Any) -> None:
    store = make_store(Config(timeout_ms=1000, cleanup_interval_ms=0))
    store.set_session("edge", "m")
    clock.advance(1000)  # now - last_used_at == timeout: still live (rule 2)
    store.transact("edge", lambda e, now: (e._replace(session_cost_micros=7), None))
    entry = store.get_session("edge")
    assert entry is not None
    assert entry.session_cost_micros == 7


# -- outages ---------------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def _policy(url: str, on_error: str = "raise", **kw: Any) -> tuple[SessionPolicy, Any]:
    store = RedisSessionStore(url, CFG, on_error=on_error)  # type: ignore[arg-type]
    return SessionPolicy(store, TIERS, pricing=PRICES, **kw), store


def test_a_cap_refuses_while_the_store_is_down(own_server: RedisServer) -> None:
    refuse, s1 = _policy(own_server.url, "fail_open", max_session_cost_usd="0.01")
    allow, s2 = _policy(
        own_server.url, "fail_open", max_session_cost_usd="0.01", on_store_error="allow"
    )
    uncapped_open, s3 = _policy(own_server.url, "fail_open")
    uncapped_raise, s4 = _policy(own_server.url, "raise")
    assert refuse.begin({"x-session-id": "s"}, chat("hi")).reason == "new"
    own_server.kill()
    with pytest.raises(StoreUnavailable):
        refuse.begin({"x-session-id": "s"}, chat("hi"))
    assert allow.begin({"x-session-id": "s"}, chat("hi")).reason == "store_unavailable"
    assert uncapped_open.begin({"x-session-id": "s"}, chat("hi")).reason == "store_unavailable"
    with pytest.raises(StoreUnavailable):
        uncapped_raise.begin({"x-session-id": "s"}, chat("hi"))
    for store in (s1, s2, s3, s4):
        store.close()


def test_finish_retries_until_the_store_is_back(own_server: RedisServer) -> None:
    policy, store = _policy(own_server.url, max_session_cost_usd=1, finish_retry_ms=10_000)
    d = policy.begin({"x-session-id": "s"}, chat("hi", max_tokens=10))
    own_server.stop()
    threading.Timer(0.5, own_server.start).start()
    started = time.monotonic()
    assert policy.finish(d, served_model=d.model, cost_micros=42) == 42
    assert time.monotonic() - started >= 0.4
    entry = store.get_session("s")
    assert (entry.session_cost_micros, entry.reserved_micros) == (42, 0)
    store.close()


def test_finish_gives_up_after_finish_retry_ms(own_server: RedisServer) -> None:
    policy, store = _policy(own_server.url, finish_retry_ms=300)
    d = policy.begin({"x-session-id": "s"}, chat("hi"))
    own_server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="not be recorded"):
        policy.finish(d, served_model=d.model, cost_micros=42)
    assert 0.25 <= time.monotonic() - started < 3
    store.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_begin_whose_reply_was_lost_leaves_no_reservation(
    own_server: RedisServer, kind: str
) -> None:
    """Redis freezes (SIGSTOP, 1.2 s) between begin's read and its compare-and-set: the
    write times out at the client (0.5 s) and runs when the server resumes. The
    reservation it carries must not outlive it (held for reservation_ttl_ms before)."""
    import asyncio

    from llm_sessions import AsyncRedisSessionStore

    url = own_server.url
    prices = {"p": Pricing(0, 1)}
    tiers = {"SIMPLE": {"primary": "p"}}
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    freeze = [False]

    def freezing(fn: Any) -> Any:
        def step(entry: Any, now: int) -> Any:
            out = fn(entry, now)
            if freeze[0]:  # the write is about to be sent
                freeze[0] = False
                _stop_for(own_server, 1.2)
            return out

        return step

    class Freezing(RedisSessionStore):
        def transact(self, session_id: str, fn: Any, **kw: Any) -> Any:
            return super().transact(session_id, freezing(fn), **kw)

    class AsyncFreezing(AsyncRedisSessionStore):
        async def transact(self, session_id: str, fn: Any, **kw: Any) -> Any:
            return await super().transact(session_id, freezing(fn), **kw)

    if kind == "sync":
        store: Any = Freezing(url, CFG)
        policy = SessionPolicy(store, tiers, pricing=prices, max_session_cost_usd=1)
        d = policy.begin({"x-session-id": "s"}, request)
        policy.finish(d, served_model="p", cost_micros=1)
        freeze[0] = True
        with pytest.raises(StoreUnavailable):
            policy.begin({"x-session-id": "s"}, request)
        time.sleep(1.0)  # until the server is back
    else:

        async def main() -> None:
            astore = AsyncFreezing(url, CFG)
            policy = SessionPolicy(astore, tiers, pricing=prices, max_session_cost_usd=1)
            d = await policy.abegin({"x-session-id": "s"}, request)
            await policy.afinish(d, served_model="p", cost_micros=1)
            freeze[0] = True
            with pytest.raises(StoreUnavailable):
                await policy.abegin({"x-session-id": "s"}, request)
            await asyncio.sleep(3)  # the release runs on this loop
            await astore.aclose()

        asyncio.run(main())
        store = RedisSessionStore(url, CFG)
    deadline = time.monotonic() + 10
    while store.get_session("s").reserved_micros and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # nothing lands after the release
    entry = store.get_session("s")
    assert entry.request_count == 2  # the frozen write did land
    assert (entry.reserved_micros, entry.session_cost_micros) == (0, 1)
    store.close()


def _stop_for(server: RedisServer, seconds: float) -> None:
    """Freeze redis-server now; it resumes after `seconds`."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    threading.Timer(seconds, server.process.send_signal, args=(signal.SIGCONT,)).start()


# -- nothing but the documented exceptions ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": json_values}, optional={"model": json_values, "n": json_values}
    ),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": json_values},
                    optional={"content": json_values, "tool_calls": json_values},
                ),
                max_size=3,
            )
        },
        optional={"model": json_values, "tools": json_values, "max_tokens": json_values},
    ),
)
headers = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["x-session-id", "other"]), json_values | st.binary()),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, headers, st.one_of(st.text(max_size=5), st.integers(), st.none()))
def test_begin_raises_only_documented_errors(body: Any, header: Any, scope: Any) -> None:
    store = SessionStore(CFG)
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=1)
    try:
        d = policy.begin(header, body, scope=scope)
    except (InvalidRequest, InvalidSessionId, BudgetExceeded):
        assert store.get_stats().count == 0  # a refused request changes nothing
        return
    for usage in (None, {"prompt_tokens": "x"}, body):
        policy.finish(d, served_model=d.model, usage=usage)
    store.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_restarted_redis_is_used_again_at_once(own_server: RedisServer, kind: str) -> None:
    """Pooled connections the restart closed are not handed to a write: the first request
    after it is served, not refused."""
    from llm_sessions import AsyncRedisSessionStore

    loop = asyncio.new_event_loop()
    made = RedisSessionStore if kind == "sync" else AsyncRedisSessionStore
    store = made(own_server.url, CFG)
    policy = SessionPolicy(store, TIERS, pricing=PRICES, max_session_cost_usd=1)
    begin = (
        policy.begin if kind == "sync" else lambda *a: loop.run_until_complete(policy.abegin(*a))
    )
    finish = (
        policy.finish
        if kind == "sync"
        else lambda d, **kw: loop.run_until_complete(policy.afinish(d, **kw))
    )
    d = begin({"x-session-id": "s"}, chat("hi"))
    finish(d, served_model=d.model, cost_micros=5)
    own_server.stop()
    own_server.start()
    # a serving event loop sees the closed sockets' end as it comes; this one runs now
    loop.run_until_complete(asyncio.sleep(0.1))
    d = begin({"x-session-id": "s"}, chat("again"))
    finish(d, served_model=d.model, cost_micros=5)
    assert d.reason in ("pinned", "new")  # served (the session persisted, or starts anew)
    if kind == "sync":
        store.close()
    else:
        loop.run_until_complete(store.aclose())
    loop.close()
