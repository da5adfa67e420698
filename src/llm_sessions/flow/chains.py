"""Chains of stored responses (the OpenAI Responses API): the links `finish` writes from a
response's or a conversation's id to its session and the *holder* of its state, and the
rule a request that continues one follows (it joins that session, and only models of the
same holder may serve it)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UnknownState
from ..ids import session_key, split_key
from .decision import Decision, Turn

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = [
    "MAX_ITEM_LINKS",
    "follow",
    "foreign_claim",
    "link_name",
    "link_target",
    "links_for",
    "owner_name",
    "owner_value",
    "unbilled_model",
    "usable_id",
]

#: Output items of one response whose ids are remembered (an ``item_reference`` to one
#: of them is then checked like a ``previous_response_id``).
MAX_ITEM_LINKS = 64

_LINKABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")


def usable_id(value: object) -> bool:
    """`value` can name a link: 1 to 256 printable ASCII characters, no spaces."""
    return isinstance(value, str) and _LINKABLE_ID.fullmatch(value) is not None


def link_name(kind: str, ident: str, scope: str) -> str:
    """The store's name for a link: a response's or a conversation's id, in `scope`."""
    return session_key(f"{kind}:{ident}", scope)


def owner_name(kind: str, ident: str) -> str:
    """The store's name for the owner record of a response, conversation or item id:
    unscoped, by a digest of the id, so any caller's request can find it."""
    digest = hashlib.sha256(f"{kind}:{ident}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"owner:{digest[:40]}"


def owner_value(scope: str) -> str:
    """What an owner record holds: a digest of the owning caller's scope."""
    return hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def foreign_claim(
    turn: Turn, kind: str, ident: str, owner: str | None, refuse_unknown: bool
) -> UnknownState | None:
    """The refusal of a claim on state the caller's scope has no link to, given its owner
    record: another caller's state, or (`refuse_unknown`) state never served here."""
    if owner is None:
        return UnknownState(kind, ident) if refuse_unknown else None
    return UnknownState(kind, ident) if owner != owner_value(turn.scope) else None


def parse_link(link: str | None) -> tuple[str, str] | None:
    """``(session key, holder)`` of a link's value; None for none (or an unreadable one)."""
    fields = _link_fields(link)
    return None if fields is None else (fields[0], fields[1])


def unbilled_model(link: str | None) -> str | None:
    """The model a response's link says is still to be billed (a background response
    `finish` recorded with ``billed_later``), or None."""
    fields = _link_fields(link)
    return fields[2] if fields is not None and len(fields) == 3 else None


def _link_fields(link: str | None) -> list[str] | None:
    """A link's value: ``[session key, holder]``, and the unbilled model of a background
    response; None for none (or an unreadable one)."""
    try:
        fields = json.loads(link) if link is not None else None
    except (ValueError, TypeError):
        return None
    if not isinstance(fields, list) or len(fields) not in (2, 3):
        return None
    return fields if all(isinstance(f, str) for f in fields) else None


def link_target(link: str | None) -> tuple[str, str] | None:
    """``(session id, holder)`` of a link's value; None for none (or an unreadable one)."""
    target = parse_link(link)
    return None if target is None else (split_key(target[0])[1], target[1])


def links_for(
    policy: SessionPolicy,
    decision: Decision,
    served_model: str | None,
    response_id: str | None,
    item_ids: Sequence[str] = (),
    billed_later: bool = False,
) -> dict[str, str] | None:
    """The links `finish` writes: the decision's, the response's when it has a usable id,
    and its output items' (the first `MAX_ITEM_LINKS`), each to the session and the holder
    of the served model's state; and beside each, unscoped, the record of its owner. A
    response `billed_later` (a background one) has its served model in its link too."""
    if served_model is None:
        return None
    scope = decision.scope
    names = list(decision.links)
    owners = list(decision.owned)
    served = [("response", response_id)] if usable_id(response_id) else []
    served += [("item", i) for i in item_ids[:MAX_ITEM_LINKS] if usable_id(i)]
    for kind, ident in served:
        assert ident is not None
        names.append(link_name(kind, ident, scope))
        owners.append(owner_name(kind, ident))
    if not names and not owners:
        return None
    holder = policy.state_holder(served_model) if policy.state_holder is not None else ""
    links = dict.fromkeys(names, json.dumps([decision.key, holder]))
    links.update(dict.fromkeys(owners, owner_value(scope)))
    if served and served[0][0] == "response" and billed_later:  # its usage comes later
        assert response_id is not None
        name = link_name("response", response_id, scope)
        links[name] = json.dumps([decision.key, holder, served_model])
    return links


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
