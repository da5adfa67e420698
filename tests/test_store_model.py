"""A hypothesis state machine drives a store with random operations, ids and clock
advances, against a plain model of the rules written straight from the README, and
checks every observable value after every step. Run on the memory and Redis stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from llm_sessions import Config, Entry, RedisSessionStore, SessionStore, Tier

from helpers import START_MS

TIMEOUT = 1_000
TTLS = {"anthropic": 300, "vllm": 600, "default": 200}
CONFIG = Config(timeout_ms=TIMEOUT, cleanup_interval_ms=0, cache_ttl_ms=TTLS)
IDS = st.sampled_from(["a", "b", "c:d", "", "\x00e"])
TIERS = st.sampled_from([None, *Tier, "SIMPLE", "COMPLEX"])
MODELS = st.sampled_from(["m1", "m2", "anthropic/m3"])
HASHES = st.sampled_from(["h1", "h2"])
PROVIDERS = st.sampled_from(["anthropic", "vllm", "other"])
ESCALATION_MODELS = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(list(Tier)), MODELS, max_size=4)
)
NEXT = {0: Tier.MEDIUM, 1: Tier.COMPLEX, 2: Tier.REASONING}
RANK = {Tier.SIMPLE: 0, Tier.MEDIUM: 1, Tier.COMPLEX: 2, Tier.REASONING: 3}


@dataclass
class Session:
    model: str
    tier: Tier | None
    created: int
    used: int
    count: int
    hashes: list[str] = field(default_factory=list)
    strikes: int = 0
    escalated: bool = False
    explicit: bool = False
    sticky: bool = False
    sticky_at: int = 0
    provider: str = ""
    cost: int = 0

    def entry(self) -> Entry:
        return Entry(
            self.model, self.tier, self.created, self.used, self.count, tuple(self.hashes),
            self.strikes, self.escalated, self.explicit, self.sticky, self.sticky_at,
            self.provider, self.cost,
        )  # fmt: skip


class StoreMachine(RuleBasedStateMachine):
    make_store: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.now = START_MS
        self.store = type(self).make_store(lambda: self.now)
        self.model: dict[str, Session] = {}

    def teardown(self) -> None:
        self.store.close()

    def live(self, sid: str) -> Session | None:
        s = self.model.get(sid)
        if s is not None and self.now - s.used > TIMEOUT:
            del self.model[sid]
            return None
        return s

    @rule(ms=st.integers(0, 2 * TIMEOUT))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule(sid=IDS, model=MODELS, tier=TIERS, explicit=st.booleans())
    def set_session(self, sid: str, model: str, tier: Any, explicit: bool) -> None:
        self.store.set_session(sid, model, tier, explicit)
        if not sid:
            return
        t = None if tier is None else Tier(tier)
        s = self.live(sid)
        if s is None:
            self.model[sid] = Session(model, t, self.now, self.now, 1, explicit=explicit)
            return
        if s.model != model:
            s.model, s.tier = model, t
        s.used = self.now
        s.count += 1
        s.explicit = s.explicit or explicit

    @rule(sid=IDS)
    def touch(self, sid: str) -> None:
        self.store.touch_session(sid)
        s = self.live(sid) if sid else None
        if s is not None:
            s.used = self.now
            s.count += 1

    @rule(sid=IDS, h=HASHES)
    def record(self, sid: str, h: str) -> None:
        got = self.store.record_request_hash(sid, h)
        s = self.live(sid) if sid else None
        if s is None:
            assert got == 0
            return
        s.strikes = s.strikes + 1 if s.hashes and s.hashes[-1] == h else 0
        s.hashes = [*s.hashes, h][-3:]
        assert got == s.strikes

    @rule(sid=IDS, models=ESCALATION_MODELS)
    def escalate(self, sid: str, models: dict[Tier, str] | None) -> None:
        got = self.store.escalate_session(sid, models)
        s = self.live(sid) if sid else None
        if s is None or s.explicit or s.tier == Tier.REASONING:
            assert got is None
            return
        s.tier = NEXT[RANK.get(s.tier, 1)] if s.tier is not None else Tier.COMPLEX
        s.escalated, s.strikes, s.hashes = True, 0, []
        if models and s.tier in models:
            s.model = models[s.tier]
        assert got == s.tier

    @rule(sid=IDS, micros=st.integers(0, 10**12))
    def add_cost(self, sid: str, micros: int) -> None:
        got = self.store.add_session_cost(sid, micros)
        if not sid:
            assert got == 0
            return
        s = self.live(sid)
        if s is None:
            s = self.model[sid] = Session("", None, self.now, self.now, 0)
        s.cost += micros
        assert got == s.cost

    @rule(sid=IDS, provider=PROVIDERS)
    def sticky(self, sid: str, provider: str) -> None:
        self.store.set_cache_sticky(sid, provider)
        s = self.live(sid) if sid else None
        if s is not None and not s.sticky:
            s.sticky, s.sticky_at, s.provider = True, self.now, provider

    @rule(sid=IDS)
    def clear(self, sid: str) -> None:
        self.store.clear_session(sid)
        self.model.pop(sid, None)

    @invariant()
    def everything_observable_matches(self) -> None:
        for sid in ["a", "b", "c:d", "\x00e"]:
            s = self.live(sid)
            assert self.store.get_session(sid) == (None if s is None else s.entry())
            assert self.store.get_session_cost_micros(sid) == (0 if s is None else s.cost)
            ttl = TTLS.get(s.provider if s else "", TTLS["default"])
            expected_sticky = s is not None and s.sticky and self.now - s.used <= ttl
            assert self.store.is_cache_sticky(sid) == expected_sticky
        stats = self.store.get_stats()
        assert stats.count == len(self.model)
        assert [i.id for i in stats.sessions] == [
            sid if len(sid) <= 8 else sid[:8] + "..." for sid in sorted(self.model)
        ]
        assert [i.age for i in stats.sessions] == [
            (self.now - self.model[sid].created) // 1000 for sid in sorted(self.model)
        ]


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_memory_store_follows_the_model() -> None:
    class Machine(StoreMachine):
        make_store = staticmethod(lambda clock: SessionStore(CONFIG, clock=clock))

    run_state_machine_as_test(Machine, settings=SETTINGS)


@pytest.mark.usefixtures("redis_url")
def test_redis_store_follows_the_model(redis_url: str) -> None:
    def make(clock: Any) -> RedisSessionStore:
        client = redis.Redis.from_url(redis_url)
        client.flushall()
        client.close()
        return RedisSessionStore(redis_url, CONFIG, clock=clock)

    class Machine(StoreMachine):
        make_store = staticmethod(make)

    run_state_machine_as_test(Machine, settings=SETTINGS)
