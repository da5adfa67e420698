"""Chains of stored responses (the Responses API's ``previous_response_id`` and
``conversation``): the session they continue, and the holder that can serve them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from llm_sessions import InvalidRequest, Pricing, RedisSessionStore, SessionPolicy, UnknownState

from helpers import FakeClock
from redis_server import CountingConnection, RedisServer

MakePolicy = Callable[..., tuple[Any, Any]]

# Two holders (upstreams): "a" serves the a/ models, "b" the b/ models.
TWO = {
    "MEDIUM": {"primary": "a/m", "fallback": ["b/m"]},
    "COMPLEX": {"primary": "b/c", "fallback": ["a/c"]},  # a has a COMPLEX model, second
    "REASONING": {"primary": "b/r"},  # only b reasons
}


def holder(model: str) -> str:
    return model.split("/", maxsplit=1)[0]


def turn(previous: str | None = None, text: str | None = "hello", **extra: Any) -> dict[str, Any]:
    """A view as the Responses protocol hands it over: a tool result when there is no text."""
    message = (
        {"role": "user", "content": text}
        if text is not None
        else {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    )
    body: dict[str, Any] = {"messages": [message], **extra}
    if previous is not None:
        body["previous_response_id"] = previous
    return body


def serve(policy: Any, body: dict[str, Any], response_id: str, scope: str = "", **kw: Any) -> Any:
    decision = policy.begin({}, body, scope=scope, **kw)
    policy.finish(decision, served_model=decision.model, cost_micros=10, response_id=response_id)
    return decision


def test_a_chain_is_one_session_even_without_user_text(make_policy: MakePolicy) -> None:
    policy, store = make_policy(TWO, state_holder=holder)
    first = serve(policy, turn(text="plan a trip"), "resp_1")
    assert first.source == "derived"
    second = serve(policy, turn("resp_1", text=None), "resp_2")
    third = serve(policy, turn("resp_2", text=None), "resp_3")
    assert second.session_id == third.session_id == first.session_id
    assert second.source == third.source == "previous_response_id"
    assert (second.reason, third.reason) == ("pinned", "pinned")
    assert store.get_session(first.key).session_cost_micros == 30
    assert policy.response_session("resp_3") == (first.session_id, "a")


def test_a_chain_that_loops_escalates_on_its_holder(make_policy: MakePolicy) -> None:
    """MEDIUM's model is on a; COMPLEX's primary is on b, its fallback on a: the loop
    escalates to a's COMPLEX model, and nothing of b is in its fallbacks."""
    policy, _ = make_policy(TWO, state_holder=holder)
    d = serve(policy, turn(text="fix the bug"), "r0")
    assert d.model == "a/m"
    decisions = [d]
    for i in range(1, 4):  # the same tool result again and again
        decisions.append(serve(policy, turn(f"r{i - 1}", text=None), f"r{i}"))
    escalated = [x for x in decisions if x.reason == "escalated"]
    assert len(escalated) == 1 and escalated[0] is decisions[3]  # the third identical turn
    assert escalated[0].model == "a/c" and escalated[0].fallbacks == []
    assert escalated[0].tier.value == "COMPLEX"


def test_an_escalation_with_no_model_on_the_holder_keeps_the_pin(make_policy: MakePolicy) -> None:
    tiers = {**TWO, "COMPLEX": {"primary": "b/c"}}
    policy, store = make_policy(tiers, state_holder=holder)
    d = serve(policy, turn(text="fix the bug"), "r0")
    decisions = [d] + [serve(policy, turn(f"r{i - 1}", text=None), f"r{i}") for i in range(1, 4)]
    assert decisions[3].reason == "chain_bound"
    assert decisions[3].model == "a/m" and decisions[3].tier.value == "MEDIUM"
    assert decisions[3].headers["X-Session-Reason"] == "chain_bound"
    entry = store.get_session(d.key)
    assert (entry.model, entry.tier.value, entry.escalated) == ("a/m", "MEDIUM", False)
    # the same loop outside a chain escalates to b
    header = {"x-session-id": "free"}
    loose = [policy.begin(header, turn(text=None)) for _ in range(4)]
    for d in loose:
        policy.finish(d, served_model=d.model, cost_micros=1)
    assert (loose[2].reason, loose[2].model) == ("escalated", "b/c")


def test_the_chain_binds_even_when_a_header_names_the_session(make_policy: MakePolicy) -> None:
    policy, _ = make_policy(TWO, state_holder=holder)
    serve(policy, turn(text="from a"), "ra")
    headers = {"x-session-id": "mine"}
    d = policy.begin(headers, turn("ra", text="explain this proof step by step " * 300))
    assert d.session_id == "mine" and d.source == "x-session-id"
    assert all(holder(m) == "a" for m in d.models)


def test_another_scopes_stored_state_does_not_exist_for_a_caller(make_policy: MakePolicy) -> None:
    """Tenant b continuing tenant a's response, conversation or output item is refused as
    unknown (what the gateway answers 404), and nothing of b's is written."""
    policy, store = make_policy(TWO, state_holder=holder)
    first = policy.begin({}, turn(text="hello", conversation="conv_a"), scope="tenant-a")
    policy.finish(first, served_model="a/m", response_id="resp_x", item_ids=["msg_x", "fc_x"])
    sessions = store.get_stats().count
    for body, kind, ident in [
        (turn("resp_x", text="hello"), "response", "resp_x"),
        (turn(text="hello", conversation="conv_a"), "conversation", "conv_a"),
        (turn(text="hello", conversation={"id": "conv_a"}, store=False), "conversation", "conv_a"),
        (turn(text="hello", item_references=["fc_x"]), "item", "fc_x"),
    ]:
        with pytest.raises(UnknownState) as info:
            policy.begin({}, body, scope="tenant-b")
        assert (info.value.kind, info.value.ident) == (kind, ident)
        assert str(info.value) == f"no {kind} {ident!r} for this caller"
    assert store.get_stats().count == sessions
    assert policy.response_session("resp_x", "tenant-b") is None
    assert policy.response_session("resp_x", "tenant-a") == (first.session_id, "a")
    # the owner continues all of it: the response and the conversation in their session,
    # the items on their holder
    assert policy.begin({}, turn("resp_x", text=None), scope="tenant-a").reason == "pinned"
    items = policy.begin({}, turn(text="x", item_references=["msg_x", "fc_x"]), scope="tenant-a")
    assert items.models == ["a/m"]
    mine = policy.begin({}, turn(text="later", conversation="conv_a"), scope="tenant-a")
    assert mine.session_id == first.session_id


def test_state_never_recorded_is_forwarded_or_refused_as_configured(
    make_policy: MakePolicy,
) -> None:
    forwarding, _ = make_policy(TWO, state_holder=holder)
    assert forwarding.begin({}, turn("resp_elsewhere", text=None)).source == "derived"
    refusing, store = make_policy(TWO, state_holder=holder, unknown_state="refuse")
    sessions = store.get_stats().count
    with pytest.raises(UnknownState):
        refusing.begin({}, turn("resp_elsewhere", text="hi"))
    with pytest.raises(UnknownState):
        refusing.begin({}, turn(text="hi", item_references=["msg_elsewhere"]))
    assert store.get_stats().count == sessions
    served = serve(refusing, turn(text="hi"), "resp_mine")
    assert refusing.begin({}, turn("resp_mine", text=None)).session_id == served.session_id
    with pytest.raises(ValueError, match="unknown_state"):
        make_policy(TWO, unknown_state="ignore")


def test_an_unknown_previous_response_id(make_policy: MakePolicy) -> None:
    policy, _ = make_policy(TWO, state_holder=holder)
    with_text = policy.begin({}, turn("resp_unknown", text="hello"))
    assert with_text.source == "derived"
    assert with_text.session_id == policy.begin({}, turn(text="hello")).session_id
    # no text to derive from: one new session per unknown id, the same for its retries
    a = serve(policy, turn("resp_gone", text=None), "resp_next")
    b = policy.begin({}, turn("resp_gone", text=None))
    c = policy.begin({}, turn("resp_other", text=None))
    assert a.session_id is not None and a.session_id == b.session_id != c.session_id
    assert policy.begin({}, turn("resp_next", text=None)).session_id == a.session_id


def test_a_conversation_names_its_session_and_binds_once_stored(make_policy: MakePolicy) -> None:
    policy, _ = make_policy(TWO, state_holder=holder)
    body = turn(text="hi", conversation={"id": "conv_1"})
    first = serve(policy, body, "r1")
    assert (first.session_id, first.source) == ("conv_1", "conversation")
    hard = "prove it step by step " * 400
    bound = policy.begin({}, turn(text=hard, conversation="conv_1"))
    assert all(holder(m) == "a" for m in bound.models)
    unstored = policy.begin({}, turn(text=hard, conversation="conv_1", store=False))
    assert unstored.session_id == "conv_1"
    assert any(holder(m) == "b" for m in unstored.models)


def test_without_a_state_holder_chains_join_sessions_but_bind_nothing(
    make_policy: MakePolicy,
) -> None:
    policy, _ = make_policy(TWO)
    first = serve(policy, turn(text="hello"), "r1")
    d = policy.begin({}, turn("r1", text=None))
    assert d.session_id == first.session_id
    assert policy.response_session("r1") == (first.session_id, "")
    assert d.fallbacks == ["b/m"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("previous_response_id", 5), ("conversation", ["c"]), ("conversation", {"id": 3})],
)
def test_bad_chain_fields_are_refused(make_policy: MakePolicy, field: str, value: Any) -> None:
    policy, store = make_policy(TWO, state_holder=holder)
    with pytest.raises(InvalidRequest) as info:
        policy.begin({}, {**turn(text="hello"), field: value})
    assert info.value.param is not None and info.value.param.startswith(field)
    assert store.get_stats().count == 0


def test_a_failed_request_links_nothing(make_policy: MakePolicy) -> None:
    policy, _ = make_policy(TWO, state_holder=holder)
    d = policy.begin({}, turn(text="hello"))
    policy.finish(d, served_model=None, response_id="resp_failed")
    assert policy.response_session("resp_failed") is None


def test_links_expire_with_the_session(make_policy: MakePolicy, clock: FakeClock) -> None:
    policy, store = make_policy(TWO, state_holder=holder)
    first = serve(policy, turn(text="hello"), "r1")
    clock.advance(store.config.timeout_ms + 1)
    assert store.get_session(first.key) is None
    assert policy.response_session("r1") is None
    assert policy.begin({}, turn("r1", text=None)).source == "derived"


def test_on_redis_a_chain_costs_one_round_trip_more_to_follow_and_one_to_write(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Following a link is one round trip; writing a response's links (its own, its
    owner record, its items') is one pipeline after the session's script, however many:
    no script spans two keys, so a Redis Cluster takes them."""
    pool = redis.ConnectionPool(port=redis_server.port, connection_class=CountingConnection)
    store = RedisSessionStore(redis.Redis(connection_pool=pool))
    policy = SessionPolicy(store, TWO, state_holder=holder)
    try:
        plain = serve(policy, turn(text="warm up"), "r0")  # scripts loaded, pool warm

        def count(call: Callable[[], Any]) -> int:
            before = CountingConnection.sends
            call()
            return CountingConnection.sends - before

        body = turn(text="hello")
        decision = policy.begin({}, body)
        base_begin = count(lambda: policy.begin({}, body))
        base_finish = count(
            lambda: policy.finish(decision, served_model=decision.model, cost_micros=1)
        )
        d2 = policy.begin({}, turn(text="again"))
        linked_finish = count(
            lambda: policy.finish(
                d2, served_model=d2.model, cost_micros=1, response_id="r9",
                item_ids=["msg_1", "fc_2", "rs_3"],
            )
        )  # fmt: skip
        chained_begin = count(lambda: policy.begin({}, turn("r9", text=None)))
        assert linked_finish == base_finish + 1
        assert chained_begin == base_begin + 1
        assert policy.response_session("r9") == (d2.session_id, "a")
        assert plain.session_id != d2.session_id
    finally:
        store.close()
        pool.disconnect()


def test_a_chained_turn_that_fails_on_its_holder_leaves_the_pin_and_says_why(
    make_policy: MakePolicy,
) -> None:
    """The session is pinned to b's model (a fallback served); a turn continuing a
    response a made goes to a's model: its reason says the chain chose it, not the pin,
    and when it fails (a is down) the pin is still b's."""
    policy, store = make_policy(TWO, state_holder=holder)
    session = {"x-session-id": "s-22"}
    first = policy.begin(session, turn(text="hello"))
    policy.finish(first, served_model="a/m", cost_micros=10, response_id="r-a")
    second = policy.begin(session, turn(text="more"))
    policy.finish(second, served_model="b/m", cost_micros=10, response_id="r-b")
    assert store.get_session(first.key).model == "b/m"  # the fallback that served is pinned

    chained = policy.begin(session, turn("r-a", text=None))
    assert chained.model == "a/m"
    assert chained.reason == "chain_bound"
    assert chained.headers["X-Session-Reason"] == "chain_bound"
    policy.finish(chained, served_model=None)
    assert store.get_session(first.key).model == "b/m"

    served = policy.begin(session, turn("r-a", text=None))  # served this time: a's model
    policy.finish(served, served_model="a/m", cost_micros=10, response_id="r-a2")
    assert store.get_session(first.key).model == "a/m"


def test_an_owner_record_lives_as_long_as_its_owner_uses_it(
    make_policy: MakePolicy, clock: FakeClock
) -> None:
    """The owner's own continuations renew the record beside their link: past the idle
    timeout of its first write, another scope is still refused."""
    policy, store = make_policy(TWO, state_holder=holder)
    serve(policy, turn(text="hello"), "resp_x", scope="tenant-a")
    step = store.config.timeout_ms * 3 // 4
    for _ in range(3):  # the owner keeps continuing the same response (a retried turn)
        clock.advance(step)
        d = policy.begin({}, turn("resp_x", text=None), scope="tenant-a")
        policy.finish(d, served_model=d.model, cost_micros=1)
    with pytest.raises(UnknownState):
        policy.begin({}, turn("resp_x", text="hi"), scope="tenant-b")


def test_a_background_response_is_billed_once_when_its_usage_is_seen(
    make_policy: MakePolicy,
) -> None:
    policy, store = make_policy(TWO, state_holder=holder, pricing={"a/m": Pricing(1, 2)})
    d = policy.begin({}, turn(text="work in the background"))
    policy.finish(d, served_model="a/m", cost_micros=0, response_id="resp_bg", billed_later=True)
    assert store.get_session(d.key).session_cost_micros == 0
    usage = {"input_tokens": 1000, "output_tokens": 500}
    assert policy.bill_response("resp_bg", usage, "other-scope") == 0  # not theirs
    assert policy.bill_response("resp_bg", usage) == 2000  # 1000 x 1 + 500 x 2 per M: micros
    assert policy.bill_response("resp_bg", usage) == 0  # seen again
    assert store.get_session(d.key).session_cost_micros == 2000
    assert policy.response_session("resp_bg") == (d.session_id, "a")  # still continuable
    plain = serve(policy, turn(text="a plain one"), "resp_plain")
    assert policy.bill_response("resp_plain", usage) == 0  # billed when it was served
    assert store.get_session(plain.key).session_cost_micros == 10


def test_a_continuation_reserves_the_context_it_continues(make_policy: MakePolicy) -> None:
    """The upstream is sent the whole stored context of the response (or conversation) a
    request continues: its worst case counts it, so parallel continuations can't pass the
    cap by the context each of them pays."""
    price = Pricing(1, 2)
    policy, _ = make_policy(
        TWO, state_holder=holder, pricing={"a/m": price}, max_session_cost_usd=1.0
    )
    first = policy.begin({}, turn(text="a long document", conversation="conv_long"))
    usage = {"input_tokens": 40_000, "output_tokens": 1_000}
    policy.finish(first, served_model="a/m", usage=usage, response_id="resp_long")
    for body in (turn("resp_long", text="and?", max_tokens=10),
                 turn(text="and?", conversation="conv_long", max_tokens=10)):  # fmt: skip
        d = policy.begin({}, body)
        assert d.prompt_tokens >= 41_000
        assert d.reserved_micros >= price.cost_micros(41_000, 10)
        policy.finish(d, served_model=None)
    # a later turn's context grows by what that turn added (its usage, or the estimate)
    d = policy.begin({}, turn("resp_long", text="more"))
    policy.finish(d, served_model="a/m", response_id="resp_2")  # no usage: the estimate
    assert policy.begin({}, turn("resp_2", text=None)).prompt_tokens > 41_000


def test_a_link_never_outlives_its_session(make_policy: MakePolicy, clock: FakeClock) -> None:
    """A deleted (or expired) session takes its responses along: they can't be retrieved
    through it, and a turn continuing one starts a session of its own rather than
    bringing the deleted one back, even when a new session took the same id since."""
    policy, store = make_policy(TWO, state_holder=holder)
    named = {"x-session-id": "mine"}
    first = policy.begin(named, turn(text="hello"))
    policy.finish(first, served_model="a/m", cost_micros=10, response_id="resp_old")
    assert policy.response_session("resp_old") == ("mine", "a")
    store.clear_session(first.key)  # DELETE /v1/sessions/mine
    assert policy.response_session("resp_old") is None
    after = policy.begin({}, turn("resp_old", text=None))
    assert after.session_id != "mine" and after.source == "derived"
    assert store.get_session(first.key) is None  # not brought back
    # a new session under the same id (a millisecond later: sessions are told apart by
    # when they were created): the old response is still not part of it
    clock.advance(1)
    again = policy.begin(named, turn(text="a new start"))
    policy.finish(again, served_model="a/m", cost_micros=1)
    assert policy.response_session("resp_old") is None
    assert policy.begin({}, turn("resp_old", text=None)).session_id != "mine"
    # retrievals never renew a link past its session's life
    policy.finish(policy.begin(named, turn(text="more")), served_model="a/m",
                  response_id="resp_new")  # fmt: skip
    for _ in range(3):
        clock.advance(store.config.timeout_ms // 2)
        policy.response_session("resp_new")
    assert policy.response_session("resp_new") is None
