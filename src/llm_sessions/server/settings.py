"""The gateway's configuration: a TOML file read once at start-up into frozen objects.

Every key is checked; an error names the key (``config: budget.mode must be ...``). The
upstream API key is never in the file: the file names the environment variable that
holds it. See ``examples/gateway.toml`` for every key with its default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import Config
from ..ids import DEFAULT_ID_SOURCES, check_id_sources
from ..routing import Pricing, TierModels, routing_table
from ..stores.redis_urls import SCHEMES, parse_redis_url
from ..tiers import Tier

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "APIS",
    "ConfigError",
    "ModelRoute",
    "Settings",
    "UpstreamSettings",
    "load_settings",
    "redact_url",
    "settings_from_text",
]

#: The APIs an upstream can serve: Chat Completions, Anthropic Messages, OpenAI
#: Responses, and embeddings (passed through, no session rules).
APIS = ("chat", "messages", "responses", "embeddings")
#: The APIs whose requests are routed (the routing table's tiers must reach them).
ROUTED_APIS = ("chat", "messages", "responses")
#: (a client's API, an API its requests can be translated to): see `protocols.neutral`
TRANSLATIONS = frozenset((a, b) for a in ROUTED_APIS for b in ROUTED_APIS if a != b)

DEFAULT_TIERS = {
    "SIMPLE": {"primary": "gpt-4o-mini"},
    "MEDIUM": {"primary": "gpt-4o-mini", "fallback": ["gpt-4o"]},
    "COMPLEX": {"primary": "gpt-4o", "fallback": ["gpt-4o-mini"]},
    "REASONING": {"primary": "o3-mini", "fallback": ["gpt-4o"]},
}


def redact_url(url: str) -> str:
    """`url` without its password (``redis://user:***@host``) and without the values of its
    query, where credentials travel too (``?key=***``), for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "=" not in parts.query:
            return url  # nothing to hide: as written
        if parts.password is not None:  # the hosts as written: a cluster's are a list
            userinfo, _, hosts = parts.netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            parts = parts._replace(netloc=f"{user}:***@{hosts}")
        if "=" in parts.query:
            fields = (f.partition("=") for f in parts.query.split("&"))
            parts = parts._replace(
                query="&".join(k + ("=***" if eq else "") for k, eq, _ in fields)
            )
        return urlunsplit(parts)
    except ValueError:
        return "(an unreadable URL)"


class ConfigError(ValueError):
    """The gateway's configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class UpstreamSettings:
    name: str = "default"  # [upstream] is "default"; [upstreams.NAME] is NAME
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    connect_timeout_s: float = 5.0
    timeout_s: float = 300.0  # read/write timeout of one attempt (between bytes when streaming)
    max_attempts: int = 3  # bounded walk of the fallback chain
    max_connections: int = 200
    auth: str = "bearer"  # how the key is sent: "bearer" (Authorization) or "x-api-key"
    apis: tuple[str, ...] = ("chat",)  # the APIs it serves: some of `APIS`
    forward_client_key: bool = False  # send the caller's own key instead of the gateway's
    # forwarding: the caller's headers ("authorization", "x-api-key") whose key it takes;
    # empty: the one of its own `auth`
    client_key_from: tuple[str, ...] = ()
    # operator's key: serve callers who brought a key a forwarding upstream takes
    serve_callers_with_keys: bool = False
    # the APIs a request of another API is translated to, in order of preference (None:
    # `apis`, in order; empty: none, the upstream serves its own APIs only)
    translate_to: tuple[str, ...] | None = None

    def sends_as(self, api: str) -> str | None:
        """The API a request of `api` goes out in to this upstream: `api` itself when it
        serves it, else the first API of `translate_to` it can be translated to; None
        when neither."""
        if api in self.apis:
            return api
        preferred = self.apis if self.translate_to is None else self.translate_to
        for target in preferred:
            if target in self.apis and (api, target) in TRANSLATIONS:
                return target
        return None

    @property
    def takes_keys_from(self) -> tuple[str, ...]:
        """The caller's headers a forwarding upstream takes a key from."""
        if self.client_key_from:
            return self.client_key_from
        return ("x-api-key",) if self.auth == "x-api-key" else ("authorization",)

    @property
    def api_key(self) -> str | None:
        """The key, read from the environment (never from the file)."""
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class ModelRoute:
    """Where a routing-table model goes: its upstream, and the id that upstream expects."""

    upstream: str
    name: str


@dataclass(frozen=True)
class Settings:
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    # [upstreams.NAME]; `upstream` ([upstream], "default") is one of them unless only
    # named ones are configured
    named_upstreams: tuple[UpstreamSettings, ...] = ()
    use_default_upstream: bool = True
    model_routes: Mapping[str, ModelRoute] = field(default_factory=dict)  # [models."ID"]
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 10 * 1024 * 1024
    api_keys_file: str | None = None
    admin_keys_file: str | None = None
    metrics_admin_only: bool = False  # GET /metrics for admin keys only
    workers: int = 1  # processes serving the port (more than one needs a Redis store)
    store_url: str = "memory://"
    store_on_error: str = "fail_open"
    store_key_prefix: str = "llm-sessions:"
    store_busy_timeout_ms: int = 5000
    store_max_connections: int | None = None  # None: upstream.max_connections
    store_finish_retry_ms: int = 10_000
    store_socket_timeout_s: float = 0.5  # a Redis reply slower than this is an outage
    store_wait_replicas: int = 0  # Redis: each session write waits for this many replicas
    store_wait_timeout_ms: int = 100  # ... this long at most
    store_memory_links_mb: int = 64  # memory://: what its response/conversation links may hold
    store_memory_events_mb: int = 64  # memory://: what its sessions' event logs may hold
    console_enabled: bool = True  # the operator console (GET /ui) and its endpoints
    # translated requests: a tool the target API can't run is "refuse"d (400) or "drop"ped
    translation_unsupported_tools: str = "refuse"
    # models sent reasoning settings when a request is translated to their API
    reasoning_models: frozenset[str] = frozenset()
    sessions: Config = field(default_factory=Config)
    id_sources: tuple[str, ...] = DEFAULT_ID_SOURCES
    unknown_state: str = "forward"  # a continued response/conversation/item never served here
    tiers: Mapping[Tier, TierModels] = field(default_factory=lambda: routing_table(DEFAULT_TIERS))
    profiles: tuple[str, ...] = ("auto",)
    default_max_tokens: int = 4096
    fallback_pin_ms: int = 300_000
    pricing: Mapping[str, Pricing] = field(default_factory=dict)
    max_session_cost_usd: float | None = None
    budget_mode: str = "strict"
    budget_on_store_error: str = "refuse"
    reservation_ttl_ms: int = 600_000
    fit_output: bool = True  # lower an output limit to what fits the cap, to a floor
    min_output_tokens: int = 1024
    stats_limit: int = 100

    @cached_property
    def upstreams(self) -> tuple[UpstreamSettings, ...]:
        """Every upstream, the default first when there is one."""
        default = (self.upstream,) if self.use_default_upstream else ()
        return (*default, *self.named_upstreams)

    @cached_property
    def apis(self) -> tuple[str, ...]:
        """The APIs some upstream serves, itself or through translation, in `APIS` order."""
        served = {api for up in self.upstreams for api in APIS if up.sends_as(api)}
        return tuple(api for api in APIS if api in served)

    def sends_as(self, model: str, api: str) -> str | None:
        """The API a request of `api` for `model` goes out in (`UpstreamSettings.sends_as`
        of its upstream); None when it can't go."""
        found = self.route(model)
        return None if found is None else found[0].sends_as(api)

    def route(self, model: str) -> tuple[UpstreamSettings, str] | None:
        """The upstream a model goes to and the id it is sent as; None when it goes nowhere
        (not mapped, and there is no default upstream)."""
        mapped = self.model_routes.get(model)
        if mapped is None:
            return (self.upstream, model) if self.use_default_upstream else None
        return self._by_name[mapped.upstream], mapped.name

    @cached_property
    def _by_name(self) -> dict[str, UpstreamSettings]:
        return {up.name: up for up in self.upstreams}

    @property
    def models(self) -> list[str]:
        """Every model of the routing table, in tier order, without repeats."""
        seen: dict[str, None] = {}
        for tier in Tier:
            if tier in self.tiers:
                seen.update(dict.fromkeys(self.tiers[tier].chain))
        return list(seen)


class _Reader:
    """Reads one TOML table, naming every key it complains about."""

    def __init__(self, table: Mapping[str, Any], path: str) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"config: {path} must be a table")
        self.table = table
        self.path = path
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(
                f"config: {self.name(key)} must be {_kind_name(kinds)}, got {value!r}"
            )
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise ConfigError(
                f"config: {self.name(key)} must be {_kind_name(kinds)}, got {value!r}"
            )
        return value

    def number(self, key: str, default: float, *, minimum: float, integer: bool = False) -> Any:
        value = self.get(key, int if integer else float, default)
        if value < minimum:
            raise ConfigError(f"config: {self.name(key)} must be >= {minimum}, got {value!r}")
        return value

    def one_of(self, key: str, choices: tuple[str, ...]) -> str:
        """A string key that must be one of `choices` (the first is the default)."""
        value = self.get(key, str, choices[0])
        if value not in choices:
            listed = " or ".join(repr(c) for c in choices)
            raise ConfigError(f"config: {self.name(key)} must be {listed}, got {value!r}")
        return str(value)

    def table_of(self, key: str) -> _Reader:
        self.used.add(key)
        return _Reader(self.table.get(key, {}), self.name(key))

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(f"config: {self.name(unknown[0])} is not a known key")


def _without_name(message: str) -> str:
    """`Config`'s message (``"Config.timeout_ms must be ..."``) as the tail of a key's."""
    return message.removeprefix("Config.")


def _routing_detail(message: str) -> str:
    """`routing_table`'s message as what follows ``routing.tiers`` in a config error."""
    if message.startswith("routing table: "):
        detail = message.removeprefix("routing table: ")
        return ("." if detail[:1].isupper() else ": ") + detail
    return " " + message.removeprefix("routing table ")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}  # fmt: skip
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (or the defaults), then `overrides` (from the command
    line: host, port, store_url, upstream_url, api_keys_file, workers)."""
    text = ""
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"config: can't read {path}: {exc.strerror}") from None
    return settings_from_text(text, str(path), **overrides)


def settings_from_text(text: str, source: str = "the config", **overrides: Any) -> Settings:
    """`load_settings` of a file's text (`source` names it in errors)."""
    try:
        data: Mapping[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {source} is not valid TOML: {exc}") from None
    settings = _parse(_Reader(data, ""))
    upstream_url = overrides.pop("upstream_url", None)
    if upstream_url:
        settings = replace(settings, upstream=replace(settings.upstream, base_url=upstream_url))
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    _check(settings)
    return settings


def _optional_list(value: list[Any] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _upstream(up: _Reader, name: str) -> UpstreamSettings:
    """One upstream table, [upstream] or [upstreams.NAME]."""
    upstream = UpstreamSettings(
        name=name,
        base_url=up.get("base_url", str, UpstreamSettings.base_url),
        api_key_env=up.get("api_key_env", str, UpstreamSettings.api_key_env),
        connect_timeout_s=up.number("connect_timeout_s", 5.0, minimum=0.001),
        timeout_s=up.number("timeout_s", 300.0, minimum=0.001),
        max_attempts=up.number("max_attempts", 3, minimum=1, integer=True),
        max_connections=up.number("max_connections", 200, minimum=1, integer=True),
        auth=up.get("auth", str, "bearer"),
        apis=tuple(up.get("apis", list, ["chat"])),
        forward_client_key=up.get("forward_client_key", bool, False),
        client_key_from=tuple(up.get("client_key_from", list, [])),
        serve_callers_with_keys=up.get("serve_callers_with_keys", bool, False),
        translate_to=_optional_list(up.get("translate_to", list, None)),
    )
    if upstream.translate_to is not None and not set(upstream.translate_to) <= set(upstream.apis):
        raise ConfigError(
            f"config: {up.name('translate_to')} must list some of the upstream's apis "
            f"({', '.join(upstream.apis)}), got {list(upstream.translate_to)!r}"
        )
    if not set(upstream.client_key_from) <= {"authorization", "x-api-key"}:
        raise ConfigError(
            f"config: {up.name('client_key_from')} must list some of 'authorization', "
            f"'x-api-key', got {list(upstream.client_key_from)!r}"
        )
    if upstream.auth not in ("bearer", "x-api-key"):
        raise ConfigError(
            f"config: {up.name('auth')} must be 'bearer' or 'x-api-key', got {upstream.auth!r}"
        )
    if not upstream.apis or not set(upstream.apis) <= set(APIS):
        raise ConfigError(
            f"config: {up.name('apis')} must list some of "
            f"{', '.join(repr(a) for a in APIS)}, got {list(upstream.apis)!r}"
        )
    up.done()
    return upstream


def _parse(root: _Reader) -> Settings:
    """The whole file: each table read by a function of its own."""
    fields: dict[str, Any] = {}
    for read in (_upstreams, _server, _store, _sessions, _routing, _pricing, _budget, _console,
                 _translation):  # fmt: skip
        fields.update(read(root))
    root.done()
    return Settings(**fields)


def _upstreams(root: _Reader) -> dict[str, Any]:
    """[upstream], [upstreams.NAME] and [models."ID"]."""
    has_default = "upstream" in root.table or "upstreams" not in root.table
    upstream = _upstream(root.table_of("upstream"), "default")
    named_table = root.table_of("upstreams")
    named = tuple(_upstream(named_table.table_of(name), name) for name in named_table.table)
    if any(up.name == "default" for up in named):
        raise ConfigError("config: upstreams.default is reserved for the [upstream] table")
    known = {up.name for up in named} | ({"default"} if has_default else set())
    models_table = root.table_of("models")
    routes: dict[str, ModelRoute] = {}
    for model in models_table.table:
        entry = models_table.table_of(model)
        target = entry.get("upstream", str, None)
        if target not in known:
            raise ConfigError(
                f"config: {entry.name('upstream')} must name an upstream "
                f"({', '.join(sorted(known))}), got {target!r}"
            )
        routes[model] = ModelRoute(target, entry.get("name", str, model))
        entry.done()
    return {"upstream": upstream, "named_upstreams": named, "use_default_upstream": has_default,
            "model_routes": routes}  # fmt: skip


def _server(root: _Reader) -> dict[str, Any]:
    server = root.table_of("server")
    fields = {
        "host": server.get("host", str, "127.0.0.1"),
        "port": server.number("port", 8080, minimum=1, integer=True),
        "max_body_bytes": server.number(
            "max_body_bytes", 10 * 1024 * 1024, minimum=1024, integer=True
        ),
        "api_keys_file": server.get("api_keys_file", str, None) or None,
        "admin_keys_file": server.get("admin_keys_file", str, None) or None,
        "metrics_admin_only": server.get("metrics_admin_only", bool, False),
        "stats_limit": server.number("stats_limit", 100, minimum=0, integer=True),
        "workers": server.number("workers", 1, minimum=1, integer=True),
    }
    if fields["metrics_admin_only"] and fields["admin_keys_file"] is None:
        raise ConfigError(
            "config: server.metrics_admin_only needs server.admin_keys_file (else no key "
            "could read /metrics)"
        )
    server.done()
    return fields


def _store(root: _Reader) -> dict[str, Any]:
    store = root.table_of("store")
    max_connections = store.get("max_connections", int, None)
    if max_connections is not None and max_connections < 1:
        raise ConfigError(f"config: store.max_connections must be >= 1, got {max_connections!r}")
    fields = {
        "store_url": store.get("url", str, "memory://"),
        "store_on_error": store.one_of("on_error", ("fail_open", "raise")),
        "store_key_prefix": store.get("key_prefix", str, "llm-sessions:"),
        "store_busy_timeout_ms": store.number("busy_timeout_ms", 5000, minimum=0, integer=True),
        "store_max_connections": max_connections,
        "store_finish_retry_ms": store.number("finish_retry_ms", 10_000, minimum=0, integer=True),
        "store_socket_timeout_s": store.number("socket_timeout_s", 0.5, minimum=0.001),
        "store_wait_replicas": store.number("wait_replicas", 0, minimum=0, integer=True),
        "store_wait_timeout_ms": store.number("wait_timeout_ms", 100, minimum=0, integer=True),
        "store_memory_links_mb": store.number("memory_links_mb", 64, minimum=1, integer=True),
        "store_memory_events_mb": store.number("memory_events_mb", 64, minimum=1, integer=True),
    }
    wait_ms, reply_s = fields["store_wait_timeout_ms"], fields["store_socket_timeout_s"]
    if fields["store_wait_replicas"] and wait_ms >= reply_s * 1000:
        raise ConfigError(
            f"config: store.wait_timeout_ms ({wait_ms}) must be less than store.socket_timeout_s "
            f"({reply_s:g} s): a write whose WAIT outlasts it would look failed"
        )
    store.done()
    return fields


def _sessions(root: _Reader) -> dict[str, Any]:
    """[sessions] and [cache_ttl_ms]."""
    sess = root.table_of("sessions")
    ttl_table = root.table_of("cache_ttl_ms")
    cache_ttls = {key: ttl_table.number(key, 0, minimum=0, integer=True) for key in ttl_table.table}
    ttl_table.done()
    values = {
        "enabled": sess.get("enabled", bool, True),
        "timeout_ms": sess.number("timeout_ms", 30 * 60 * 1000, minimum=1, integer=True),
        "header_name": sess.get("header_name", str, "x-session-id"),
        "max_sessions": sess.number("max_sessions", 100_000, minimum=1, integer=True),
        "cleanup_interval_ms": sess.number("cleanup_interval_ms", 300_000, minimum=0, integer=True),
        "events_kept": sess.number("events_kept", 100, minimum=0, integer=True),
    }
    sources = sess.get("id_sources", list, list(DEFAULT_ID_SOURCES))
    try:
        id_sources = check_id_sources(s if isinstance(s, str) else repr(s) for s in sources)
    except ValueError as exc:
        raise ConfigError(f"config: sessions.id_sources: {exc}") from None
    unknown_state = sess.one_of("unknown_state", ("forward", "refuse"))
    sess.done()
    try:
        sessions = Config(**values, cache_ttl_ms=cache_ttls)
    except ValueError as exc:  # Config's own checks name the argument, which is the key
        raise ConfigError(f"config: sessions.{_without_name(str(exc))}") from None
    return {"sessions": sessions, "id_sources": id_sources, "unknown_state": unknown_state}


def _routing(root: _Reader) -> dict[str, Any]:
    routing = root.table_of("routing")
    profiles = routing.get("profiles", list, ["auto"])
    if not profiles or not all(isinstance(p, str) and p for p in profiles):
        raise ConfigError("config: routing.profiles must be a non-empty list of names")
    fields = {
        "profiles": tuple(profiles),
        "default_max_tokens": routing.number("default_max_tokens", 4096, minimum=1, integer=True),
        "fallback_pin_ms": routing.number("fallback_pin_ms", 300_000, minimum=0, integer=True),
    }
    try:
        fields["tiers"] = routing_table(routing.get("tiers", dict, DEFAULT_TIERS))
    except ValueError as exc:  # "routing table: SIMPLE.primary ..." names the rest of the key
        raise ConfigError(f"config: routing.tiers{_routing_detail(str(exc))}") from None
    routing.done()
    return fields


_PRICES = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok",
           "cache_write_1h_per_mtok")  # fmt: skip


def _pricing(root: _Reader) -> dict[str, Any]:
    prices = root.table_of("pricing")
    pricing: dict[str, Pricing] = {}
    for model in prices.table:
        entry = prices.table_of(model)
        amounts = [entry.get(key, (int, float, str), None) for key in _PRICES]
        try:
            pricing[model] = Pricing(*amounts)
        except ValueError as exc:  # Pricing's message starts with the key it is about
            raise ConfigError(f"config: {entry.path}.{exc}") from None
        entry.done()
    prices.done()
    return {"pricing": pricing}


def _budget(root: _Reader) -> dict[str, Any]:
    budget = root.table_of("budget")
    cap = budget.get("max_session_cost_usd", float, None)
    if cap is not None and cap < 0:
        raise ConfigError(f"config: budget.max_session_cost_usd must be >= 0, got {cap!r}")
    fields = {
        "max_session_cost_usd": cap,
        "budget_mode": budget.one_of("mode", ("strict", "downgrade")),
        "reservation_ttl_ms": budget.number("reservation_ttl_ms", 600_000, minimum=1, integer=True),
        "budget_on_store_error": budget.one_of("on_store_error", ("refuse", "allow")),
        "fit_output": budget.get("fit_output", bool, True),
        "min_output_tokens": budget.number("min_output_tokens", 1024, minimum=1, integer=True),
    }
    budget.done()
    return fields


def _console(root: _Reader) -> dict[str, Any]:
    console = root.table_of("console")
    fields = {"console_enabled": console.get("enabled", bool, True)}
    console.done()
    return fields


def _translation(root: _Reader) -> dict[str, Any]:
    translation = root.table_of("translation")
    models = translation.get("reasoning_models", list, [])
    if not all(isinstance(m, str) and m for m in models):
        raise ConfigError("config: translation.reasoning_models must be a list of model ids")
    fields = {
        "translation_unsupported_tools": translation.one_of("unsupported_tools",
                                                            ("refuse", "drop")),
        "reasoning_models": frozenset(models),
    }  # fmt: skip
    translation.done()
    return fields


def _check_upstream(upstream: UpstreamSettings) -> None:
    key = "upstream" if upstream.name == "default" else f"upstreams.{upstream.name}"
    base_url = upstream.base_url
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"config: {key}.base_url must be an http(s) URL, got {base_url!r}")
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"config: {key}.base_url is not a valid URL: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"config: {key}.base_url must not carry credentials (user:password@); put the "
            f"key in the environment variable named by {key}.api_key_env"
        )
    if not parts.hostname:
        raise ConfigError(f"config: {key}.base_url has no host, got {base_url!r}")


def _check(settings: Settings) -> None:
    scheme = settings.store_url.partition("://")[0].lower()
    if "://" not in settings.store_url or scheme not in ("memory", *SCHEMES):
        raise ConfigError(
            "config: store.url must be memory://, redis://host:port/db, rediss://..., "
            "unix://..., redis+cluster://host:port,... or "
            f"redis+sentinel://host:port,.../service, got {redact_url(settings.store_url)!r}"
        )
    if settings.workers > 1 and scheme == "memory":
        raise ConfigError(
            f"config: server.workers = {settings.workers} needs a Redis store (store.url): "
            "on memory:// each process would keep sessions, costs and caps of its own"
        )
    if scheme != "memory":
        try:
            parse_redis_url(settings.store_url)
        except ValueError as exc:
            raise ConfigError(f"config: {exc} ({redact_url(settings.store_url)})") from None
    for upstream in settings.upstreams:
        _check_upstream(upstream)
    for api in (a for a in settings.apis if a in ROUTED_APIS):
        for tier, models in settings.tiers.items():
            if not any(settings.sends_as(m, api) for m in models.chain):
                serving = [up.name for up in settings.upstreams if api in up.apis]
                raise ConfigError(
                    f"config: routing.tiers.{tier.value} has no model served for the {api} "
                    f"API: {', '.join(models.chain)} go to upstreams that don't serve it "
                    f"(it is served by: {', '.join(serving)}); map one of them with "
                    '[models."ID"] upstream = "..."'
                )
    if not (0 < settings.port < 65536):
        raise ConfigError(f"config: server.port must be 1-65535, got {settings.port}")
    limit_ms = max(up.timeout_s * 1000 + up.connect_timeout_s * 1000 for up in settings.upstreams)
    if settings.reservation_ttl_ms <= limit_ms:
        raise ConfigError(
            "config: budget.reservation_ttl_ms must exceed the upstream timeout "
            f"(upstream.timeout_s + upstream.connect_timeout_s = {limit_ms:.0f} ms), "
            f"got {settings.reservation_ttl_ms}"
        )
    for key, path in (
        ("api_keys_file", settings.api_keys_file),
        ("admin_keys_file", settings.admin_keys_file),
    ):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config: server.{key} {path!r} is not a file")
