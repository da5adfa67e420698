"""The gateway: an OpenAI- and Anthropic-compatible proxy built on `SessionPolicy` (extra
``server``)."""

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

from .app import Gateway, create_app
from .settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Gateway", "Settings", "create_app", "load_settings"]
