"""Redis store URLs, in the convention other Python libraries use (the `limits` library's):

- ``redis://``, ``rediss://`` (TLS), ``unix://``: one server, as redis-py reads them;
- ``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]`` (and
  ``rediss+cluster://``): a Redis Cluster, found from any of those nodes;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`` (and
  ``rediss+sentinel://``): the primary Sentinel names for `service_name`; the password
  is the data nodes'; the sentinels' own, if they have one, is ``sentinel_password``.

Errors never repeat the URL (it may hold a password). Query options of the cluster and
Sentinel forms: the TLS ones (``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``) and
``sentinel_password``. Anything else is refused, by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["RedisTarget", "parse_redis_url"]

Topology = Literal["single", "cluster", "sentinel"]
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_FLAGS = ("ssl_check_hostname",)
SCHEMES = {
    "redis": "single",
    "rediss": "single",
    "unix": "single",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
}


@dataclass(frozen=True)
class RedisTarget:
    """What a store URL names: a topology, its seed hosts, and connection options."""

    topology: Topology
    url: str  # as given (a single server's URL is handed to redis-py whole)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""  # Sentinel's name for the primary
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, object] = field(default_factory=dict)  # TLS options, for every node
    sentinel_password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """`url` as a `RedisTarget`; ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    topology = SCHEMES.get(scheme)
    if topology is None:
        raise ValueError(
            f"unsupported store url scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel:// (rediss+ for TLS)"
        )
    if topology == "single":
        return RedisTarget("single", url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = None, None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host(each, url) for each in hostlist.split(","))
    options: dict[str, object] = {}
    sentinel_password = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _TLS_OPTIONS:
            options[name] = value
        elif name in _FLAGS:
            options[name] = value.lower() in ("1", "true", "yes")
        elif name == "sentinel_password" and topology == "sentinel":
            sentinel_password = value
        else:
            raise ValueError(f"store url: unknown option {name!r}")
    service, db = "", 0
    path = [unquote(p) for p in parts.path.split("/") if p]
    if topology == "sentinel":
        if not path or len(path) > 2:
            raise ValueError(
                "store url: a Sentinel URL names its service: "
                "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        service = path[0]
        if len(path) == 2:
            if not path[1].isdigit():
                raise ValueError("store url: the database must be a number")
            db = int(path[1])
    elif path:
        raise ValueError("store url: a cluster URL has no path (a cluster has one db)")
    return RedisTarget(
        topology,  # type: ignore[arg-type]
        url,
        hosts,
        service,
        db,
        username,
        password,
        scheme.startswith("rediss"),
        options,
        sentinel_password,
    )


def _host(text: str, url: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), ""
    host = host.strip("[]")  # an IPv6 address
    if not host:
        raise ValueError("store url: a host is missing")
    if not port:
        return host, 26379 if "sentinel" in url.split(":", 1)[0] else 6379
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"store url: bad port {port!r}")
    return host, int(port)
