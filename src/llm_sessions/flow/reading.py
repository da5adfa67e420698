"""Reading a request into the `Turn` the rules see, once, before the store is touched:
roles, texts and sizes of its messages, the model and output limits, the fingerprint, the
classified tier, where its session id comes from, the links it follows and writes, its
declared cache breakpoints and its prompt estimate."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InvalidRequest, InvalidSessionId
from ..fingerprint import fingerprint_turn, sticky_by_size, utf8_len
from ..ids import body_id, derive_session_id, find_session_id, session_key
from ..messages import content_text, is_mapping
from ..routing import (
    classify_by_text,
    default_classify,
    extra_prompt_bytes,
    prompt_tokens_by_size,
)
from ..tiers import Tier, coerce_tier
from .chains import link_name, owner_name, usable_id
from .decision import Turn, new_reservation_id

if TYPE_CHECKING:
    from ..policy import SessionPolicy

__all__ = ["MAX_DECLARED_TTL_MS", "MAX_MODEL_ID_LENGTH", "declared_cache_ttls", "read_request"]

#: Model ids are 1 to 256 printable ASCII characters (they become response headers).
MAX_MODEL_ID_LENGTH = 256
_MODEL_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_MODEL_ID_LENGTH}}}")
#: The longest prompt-cache TTL a provider keeps on request (Anthropic's "1h"): a longer
#: declared one is held to it.
MAX_DECLARED_TTL_MS = 3_600_000
_TTL = re.compile(r"^\s*(\d+)\s*([smh])\s*$")
_TTL_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
_LIMITS = ("max_tokens", "max_completion_tokens")
#: ``item_reference`` inputs one request may hold (each is checked in the store).
MAX_ITEM_REFERENCES = 256


def read_request(policy: SessionPolicy, headers: Any, body: Mapping[str, Any], scope: str) -> Turn:
    """The request as the rules see it. Anything wrong with it (or a classifier that
    fails on it) is `InvalidRequest`, or `InvalidSessionId` for the session header."""
    try:
        return _read(policy, headers, body, scope)
    except (InvalidRequest, InvalidSessionId):
        raise
    except RecursionError:
        raise InvalidRequest("the request is nested too deeply") from None
    except Exception as exc:
        raise InvalidRequest(f"the request can't be routed: {exc}") from exc


def _read(policy: SessionPolicy, headers: Any, body: Mapping[str, Any], scope: str) -> Turn:
    if not isinstance(scope, str):
        raise InvalidRequest(f"scope must be a str, got {type(scope).__name__}", "scope")
    if not is_mapping(body):
        raise InvalidRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    roles, texts, sizes, extra = _read_messages(messages)
    model = body.get("model")
    if model is not None and (type(model) is not str or not valid_model(model)):
        raise InvalidRequest(
            f"'model' must be a model id of 1 to {MAX_MODEL_ID_LENGTH} printable ASCII characters",
            "model",
        )
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", "tools")
    max_output, choices = _read_limits(body, policy.default_max_tokens)

    explicit = model if model and model not in policy.profiles else None
    if policy.classify is default_classify:
        classified: Tier | None = classify_by_text(roles, texts, sizes, tools)
    else:
        classified = coerce_tier(policy.classify(messages, tools))
    if classified is None:
        raise InvalidRequest("classify returned None; it must return a Tier")
    session_id, source, names_session = _session_of(policy, headers, body, scope, roles, texts)
    chain = _chain_of(body, scope) if policy.config.enabled else _NO_CHAIN
    declared = declared_cache_ttls(messages)
    return Turn(
        session_id=session_id,
        key=None if session_id is None else session_key(session_id, scope),
        explicit_model=explicit,
        tier=policy.resolved(classified),
        fingerprint=fingerprint_turn(messages, roles, texts),
        sticky=declared is not None or sticky_by_size(sizes),
        declared_ttl_ms=max(declared) if declared else 0,
        prompt_tokens=prompt_tokens_by_size(sum(sizes) + extra, tools),
        max_output_tokens=max_output,
        reservation_id=new_reservation_id(),
        choices=choices,
        source=source,
        scope=scope,
        follow_link=chain.follow,
        link_names_session=names_session,
        links_out=chain.links_out,
        claims=chain.claims,
        owned=chain.owned,
    )


def _read_messages(messages: list[Any]) -> tuple[list[str], list[str], list[int], int]:
    """Each message's role, text and UTF-8 size, and the prompt bytes beyond the texts
    (parts and tool calls), in one pass: every rule reads these."""
    roles: list[str] = []
    texts: list[str] = []
    sizes: list[int] = []
    extra = 0
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str):
            raise InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]"
            )
        roles.append(role)
        content = message.get("content")
        text = content if type(content) is str else content_text(content)
        texts.append(text)
        sizes.append(utf8_len(text))
        if type(content) is list or "tool_calls" in message:
            extra += extra_prompt_bytes(message)
    return roles, texts, sizes, extra


def _read_limits(body: Mapping[str, Any], default_max_tokens: int) -> tuple[int, int]:
    """The output the request may generate per choice (the larger limit it gives, else
    `default_max_tokens`), and how many choices (`n`)."""
    given = [body.get(k) for k in _LIMITS]
    for name, value in zip(_LIMITS, given, strict=True):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidRequest(f"'{name}' must be a positive integer", name)
    limits = [v for v in given if v is not None]
    max_output = max(limits) if limits else default_max_tokens
    choices = body.get("n")
    if choices is None:
        choices = 1
    elif isinstance(choices, bool) or not isinstance(choices, int) or choices < 1:
        raise InvalidRequest("'n' must be a positive integer", "n")
    return max_output, choices


def _session_of(
    policy: SessionPolicy,
    headers: Any,
    body: Mapping[str, Any],
    scope: str,
    roles: Sequence[str],
    texts: Sequence[str],
) -> tuple[str | None, str, bool]:
    """The session id and its source (the first id source that gives one, else derived
    from the first user message), and whether the link of a ``previous_response_id``
    names the session (that source won). None of these with sessions disabled."""
    if not policy.config.enabled:
        return None, "", False
    session_id, source = None, ""
    names_session = False
    previous = body_id(body, "previous_response_id")
    sources = policy.id_sources
    while session_id is None:
        try:
            found = find_session_id(
                {} if headers is None else headers, body, sources, policy.config.header_name
            )
        except TypeError as exc:
            raise InvalidSessionId(str(exc)) from None
        if found is None:
            break
        if found[1] == "previous_response_id":  # the session is the link's, if known
            names_session = True
            sources = sources[sources.index("previous_response_id") + 1 :]
        else:
            session_id, source = found
    if session_id is None:
        first = next((t for r, t in zip(roles, texts, strict=True) if r == "user" and t), None)
        if first is None and names_session and previous is not None:
            first = f"previous_response_id:{previous}"  # one new session per unknown id
        if first is not None:
            session_id, source = derive_session_id(first, scope=scope), "derived"
    return session_id, source, names_session


class _Chain(NamedTuple):
    follow: str  # the link to look up before the session is touched ("" none)
    links_out: tuple[str, ...]  # the links `finish` writes to the session
    claims: tuple[tuple[str, str, str], ...]  # (kind, id, link name) of state it continues
    owned: tuple[str, ...]  # owner records `finish` writes (a conversation's)


_NO_CHAIN = _Chain("", (), (), ())


def _chain_of(body: Mapping[str, Any], scope: str) -> _Chain:
    """The stored state a request continues: a ``previous_response_id`` (whose link is
    followed), a ``conversation`` (followed when the request is stored), and the output
    items its ``item_reference`` inputs name; each is a claim checked against its owner."""
    previous = body_id(body, "previous_response_id")
    conversation = body_id(body, "conversation")
    claims = []
    if previous is not None:
        claims.append(("response", previous, link_name("response", previous, scope)))
    if conversation is not None:
        claims.append(
            ("conversation", conversation, link_name("conversation", conversation, scope))
        )
    references = body.get("item_references", [])
    if not isinstance(references, list) or not all(usable_id(r) for r in references):
        raise InvalidRequest("'item_references' must be an array of item ids", "item_references")
    if len(references) > MAX_ITEM_REFERENCES:
        raise InvalidRequest(
            f"'input' may hold at most {MAX_ITEM_REFERENCES} item references", "input"
        )
    for ident in references:
        claims.append(("item", ident, link_name("item", ident, scope)))
    followed = previous is not None or (conversation is not None and body.get("store") is not False)
    # the response's link, else the conversation's, else an item's (it binds the holder)
    follow = claims[0][2] if followed or (claims and claims[0][0] == "item") else ""
    if conversation is None:
        return _Chain(follow, (), tuple(claims), ())
    links_out = (link_name("conversation", conversation, scope),)
    return _Chain(follow, links_out, tuple(claims), (owner_name("conversation", conversation),))


def declared_cache_ttls(messages: Sequence[Any]) -> list[int] | None:
    """TTLs (ms) of the prompt-cache breakpoints a request declares (Anthropic-style
    ``cache_control: {"type": "ephemeral", "ttl": "5m" | "1h"}`` on a message or a
    content part), at most `MAX_DECLARED_TTL_MS`; 0 for a breakpoint without a TTL. None
    when there is no breakpoint."""
    found: list[int] | None = None
    for message in messages:
        parts = message.get("content")
        if type(parts) is not list and "cache_control" not in message:
            continue  # the common case: a string content, nothing declared
        holders = [message, *parts] if type(parts) is list else (message,)
        for holder in holders:
            control = holder.get("cache_control") if type(holder) is dict else None
            if type(control) is dict and control.get("type") == "ephemeral":
                found = found if found is not None else []
                ttl = control.get("ttl")
                match = _TTL.match(ttl) if isinstance(ttl, str) else None
                if match is None:
                    found.append(0)
                elif len(match[1]) > 9:  # (and never int() of thousands of digits)
                    found.append(MAX_DECLARED_TTL_MS)
                else:
                    ms = int(match[1]) * _TTL_UNIT_MS[match[2]]
                    found.append(min(ms, MAX_DECLARED_TTL_MS))
    return found


def valid_model(model: str) -> bool:
    """ "" (no model: the first profile) or 1 to 256 printable ASCII characters."""
    return not model or _MODEL_ID.fullmatch(model) is not None
