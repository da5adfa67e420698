"""The gateway: an OpenAI- and Anthropic-compatible proxy built on `SessionPolicy` (extra
``server``).

In the order a request goes through them: `run` (uvicorn on `protocol`'s bounded request
head), `settings`, `app` (the ASGI assembly), `gateway` (what one gateway holds),
`callers` (keys and tenants), `wire` (what differs per API), `llm` (the LLM endpoints'
handler), `parsing` (strict JSON), `model_routes` (which upstream serves a model),
`forwarding` (the chain walked, the answer relayed, billed once), `upstream` (the client,
the relay and its stream meter), `access_log` and `metrics`. Beside them: `stored`
(stored responses), `passthrough` (token counts, embeddings, models), `operator`
(sessions, health, metrics), `rejections` (error shapes), `standin` (a stand-in upstream).
"""

try:
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401
    import orjson  # noqa: F401
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ..errors import MissingDependency

    raise MissingDependency(
        "the gateway needs its web stack: pip install 'llm-sessions[server]'"
    ) from exc

from .app import create_app
from .gateway import Gateway
from .settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Gateway", "Settings", "create_app", "load_settings"]
