"""Chains of stored responses (the OpenAI Responses API): the links `finish` writes from a
response's or a conversation's id to its session and the *holder* of its state, and the
rule a request that continues one follows (it joins that session, and only models of the
same holder may serve it)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UnknownState
from ..ids import session_key, split_key
from ..records import Entry
from .decision import Decision, Turn

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = [
    "MAX_ITEM_LINKS",
    "Link",
    "follow",
    "foreign_claim",
    "link_alive",
    "link_name",
    "links_for",
    "owner_name",
    "owner_value",
    "read_link",
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


class Link(NamedTuple):
    """What a link holds: the session's key, the holder of the state, the tokens of
    context the state leaves (a continuation is sent all of it), and the model whose
    usage is still to be billed (a background response; "" none)."""

    key: str
    holder: str
    context: int = 0
    unbilled: str = ""
    born: int = 0  # when its session was created: a session created since is another

    def dumps(self) -> str:
        return json.dumps([self.key, self.holder, self.context, self.unbilled, self.born])


def read_link(value: str | None) -> Link | None:
    """The `Link` a store holds; None for none, or an unreadable one (written as
    ``[key, holder]`` before it knew more: context 0, its session's birth unknown)."""
    try:
        fields = json.loads(value) if value is not None else None
    except (ValueError, TypeError):
        return None
    if not isinstance(fields, list) or len(fields) not in (2, 5):
        return None
    key, holder, context, unbilled, born = (*fields, 0, "", 0) if len(fields) == 2 else fields
    if not (isinstance(key, str) and isinstance(holder, str) and isinstance(unbilled, str)):
        return None
    for number in (context, born):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            return None
    return Link(key, holder, context, unbilled, born)


def link_alive(link: Link, entry: Entry | None) -> bool:
    """The session `link` was written for still lives: `entry` is that session, not a
    new one under the same id (it expired, or was deleted, since)."""
    return not link.born or (entry is not None and entry.created_at == link.born)


def links_for(
    policy: SessionPolicy,
    decision: Decision,
    served_model: str | None,
    response_id: str | None,
    item_ids: Sequence[str] = (),
    billed_later: bool = False,
    context_tokens: int = 0,
) -> dict[str, str] | None:
    """The links `finish` writes: the decision's, the response's when it has a usable id,
    and its output items' (the first `MAX_ITEM_LINKS`), each to the session, the holder
    of the served model's state and the `context_tokens` the answer leaves; and beside
    each, unscoped, the record of its owner. A response `billed_later` (a background one)
    has its served model in its link too."""
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
    link = Link(decision.key or "", holder, max(context_tokens, 0), "", decision.session_created_at)
    links = dict.fromkeys(names, link.dumps())
    links.update(dict.fromkeys(owners, owner_value(scope)))
    if served and served[0][0] == "response" and billed_later:  # its usage comes later
        assert response_id is not None
        name = link_name("response", response_id, scope)
        links[name] = link._replace(unbilled=served_model).dumps()
    return links


def follow(policy: SessionPolicy, turn: Turn, value: str | None) -> Turn:
    """`turn` once its link is looked up: bound to the models of the holder of the
    state it continues, its prompt grown by the context that state leaves (the upstream
    is sent all of it), and in the session of the response it continues when that named
    its session. An unknown (or unreadable) link changes nothing."""
    link = read_link(value)
    if link is None:
        return turn
    bound = policy.holds(link.holder) if policy.state_holder is not None else None
    prompt = turn.prompt_tokens + link.context
    if turn.link_names_session:
        session_id = split_key(link.key)[1]
        return turn._replace(
            session_id=session_id, key=link.key, source="previous_response_id", bound=bound,
            prompt_tokens=prompt, link_born=link.born,
            unlinked=(turn.session_id, turn.key, turn.source),
        )  # fmt: skip
    return turn._replace(bound=bound, prompt_tokens=prompt)
