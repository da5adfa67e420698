"""Chains of stored responses (the OpenAI Responses API): the links `finish` writes from a
response's or a conversation's id to its session and the *holder* of its state, and the
rule a request that continues one follows (it joins that session, and only models of the
same holder may serve it)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ..ids import session_key, split_key
from .decision import Decision, Turn

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = ["follow", "link_name", "link_target", "links_for", "usable_id"]

_LINKABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")


def usable_id(value: object) -> bool:
    """`value` can name a link: 1 to 256 printable ASCII characters, no spaces."""
    return isinstance(value, str) and _LINKABLE_ID.fullmatch(value) is not None


def link_name(kind: str, ident: str, scope: str) -> str:
    """The store's name for a link: a response's or a conversation's id, in `scope`."""
    return session_key(f"{kind}:{ident}", scope)


def parse_link(link: str | None) -> tuple[str, str] | None:
    """``(session key, holder)`` of a link's value; None for none (or an unreadable one)."""
    try:
        key, holder = json.loads(link) if link is not None else (None, None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, str) or not isinstance(holder, str):
        return None
    return key, holder


def link_target(link: str | None) -> tuple[str, str] | None:
    """``(session id, holder)`` of a link's value; None for none (or an unreadable one)."""
    target = parse_link(link)
    return None if target is None else (split_key(target[0])[1], target[1])


def links_for(
    policy: SessionPolicy, decision: Decision, served_model: str | None, response_id: str | None
) -> dict[str, str] | None:
    """The links `finish` writes: the decision's, and the response's when it has a
    usable id, each to the session and the holder of the served model's state."""
    if served_model is None:
        return None
    names = list(decision.links)
    if usable_id(response_id):
        assert response_id is not None
        names.append(link_name("response", response_id, decision.scope))
    if not names:
        return None
    holder = policy.state_holder(served_model) if policy.state_holder is not None else ""
    return dict.fromkeys(names, json.dumps([decision.key, holder]))


def follow(policy: SessionPolicy, turn: Turn, link: str | None) -> Turn:
    """`turn` once its link is looked up: bound to the models of the holder of the
    state it continues, and in the session of the response it continues when that
    named its session. An unknown (or unreadable) link changes nothing."""
    target = parse_link(link)
    if target is None:
        return turn
    key, holder = target
    bound = policy.holds(holder) if policy.state_holder is not None else None
    if turn.link_names_session:
        return turn._replace(
            session_id=split_key(key)[1], key=key, source="previous_response_id", bound=bound
        )
    return turn._replace(bound=bound)
