"""A scripted agent conversation driven through the store alone, printed turn by turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .fingerprint import hash_request_content, provider_from_model, should_cache_sticky
from .ids import derive_session_id
from .records import MessageInfo, format_usd
from .rules import STRIKE_LIMIT
from .stores.memory import SessionStore
from .tiers import Tier

__all__ = ["run_store_demo"]

PRIMARIES = {
    Tier.SIMPLE: "openai/gpt-4o-mini",
    Tier.MEDIUM: "anthropic/claude-haiku-4.5",
    Tier.COMPLEX: "anthropic/claude-sonnet-4.6",
    Tier.REASONING: "openai/o3",
}


@dataclass(frozen=True)
class Turn:
    text: str
    tier: Tier
    cost_micros: int


SCRIPT = [
    Turn("Find why the login test fails.", Tier.SIMPLE, 1_200),
    Turn("Show me the failing assertion.", Tier.SIMPLE, 900),
    Turn("Run the test suite again.", Tier.SIMPLE, 1_100),
    Turn("Run the test suite again.", Tier.SIMPLE, 1_100),
    Turn("Run the test suite again.", Tier.SIMPLE, 1_100),
    Turn("Here is the full build log:\n" + "error: line\n" * 1_000, Tier.COMPLEX, 48_000),
    Turn("Now patch the session refresh.", Tier.MEDIUM, 9_500),
]


def run_store_demo(print_line: Callable[[str], None] = print) -> None:
    now = [1_700_000_000_000]
    store = SessionStore(Config(cleanup_interval_ms=0), clock=lambda: now[0])
    session_id = derive_session_id(SCRIPT[0].text)
    print_line(f"session {session_id[:8]}... (derived from the first user message)\n")
    header = (
        f"{'turn':>4}  {'event':<24} {'model':<30} {'tier':<9} "
        f"{'strikes':>7} {'sticky':>6} {'cost USD':>10}"
    )
    print_line(header)
    print_line("-" * len(header))
    for number, turn in enumerate(SCRIPT, 1):
        now[0] += 20_000
        entry = store.get_session(session_id)
        if entry is None:
            event = "new session"
            store.set_session(session_id, PRIMARIES[turn.tier], turn.tier)
        elif store.is_cache_sticky(session_id):
            event = "pinned (cache-sticky)"
            store.touch_session(session_id)
        else:
            event = "pinned"
            store.touch_session(session_id)
        strikes = store.record_request_hash(session_id, hash_request_content(turn.text))
        if strikes >= STRIKE_LIMIT:
            tier = store.escalate_session(session_id, PRIMARIES)
            event = f"loop -> escalated {tier}"
        if should_cache_sticky([MessageInfo("user", turn.text)]):
            entry = store.get_session(session_id)
            assert entry is not None
            store.set_cache_sticky(session_id, provider_from_model(entry.model))
            event = "large paste: sticky"
        store.add_session_cost(session_id, turn.cost_micros)
        entry = store.get_session(session_id)
        assert entry is not None
        print_line(
            f"{number:>4}  {event:<24} {entry.model:<30} {entry.tier or '':<9} {strikes:>7} "
            f"{'yes' if store.is_cache_sticky(session_id) else 'no':>6} "
            f"{format_usd(entry.session_cost_micros):>10}"
        )
    print_line(f"\n{store.get_session(session_id)}")
