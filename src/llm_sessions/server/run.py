"""Running the gateway: in the foreground (`serve`) or in a background thread (`running`);
and the stand-in upstream in the foreground (`serve_standin`)."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .. import __version__
from ..records import format_usd
from ..routing import usd_to_micros
from .app import create_app
from .protocol import BoundedHttpToolsProtocol
from .settings import Settings, redact_url, settings_from_text
from .standin import StandIn

__all__ = [
    "configure_logging",
    "running",
    "serve",
    "serve_standin",
    "startup_line",
    "worker_app",
]


def configure_logging(level: str) -> None:
    """One line per record on stderr: the gateway's own loggers at `level`, every other
    library's at warning."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    logging.getLogger("llm_sessions").setLevel(level.upper())


def startup_line(settings: Settings, config_path: str | None) -> str:
    """The one JSON line the gateway logs as it starts."""
    cap = settings.max_session_cost_usd
    return json.dumps(
        {
            "event": "start",
            "version": __version__,
            "address": f"http://{settings.host}:{settings.port}",
            "store": redact_url(settings.store_url),
            "store_on_error": settings.store_on_error,
            "workers": settings.workers,
            "upstreams": {
                up.name: {"base_url": redact_url(up.base_url), "apis": list(up.apis)}
                for up in settings.upstreams
            },
            "config": config_path,
            "budget": {
                "max_session_cost_usd": None
                if cap is None
                else format_usd(usd_to_micros(cap, round_up=False)),
                "mode": settings.budget_mode,
                "on_store_error": settings.budget_on_store_error,
            },
        }
    )


def serve(
    settings: Settings,
    *,
    config_path: str | None = None,
    log_level: str = "info",
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Serve the gateway with uvicorn until interrupted; one log line per request.

    With ``settings.workers`` above 1, uvicorn's supervisor serves the port with that many
    processes (each with its own pools, all on the Redis store): it replaces a worker that
    dies, and on SIGHUP replaces each in turn, the new one serving before the old one
    stops. Each worker builds its settings from the same configuration text and
    `overrides` (the command line's) the parent read, passed in the environment."""
    configure_logging(log_level)
    worker = None
    if settings.workers > 1:  # what each worker will read again: these very settings
        text = "" if config_path is None else Path(config_path).read_text("utf-8")
        given = dict(overrides or {})
        if settings_from_text(text, str(config_path), **given) != settings:
            raise ValueError(
                "serve with workers > 1 takes settings read from config_path and overrides "
                "(each worker reads them again); these settings are not those"
            )
        worker = {"config": text, "source": config_path, "overrides": given,
                  "log_level": log_level}  # fmt: skip
    print(startup_line(settings, config_path), file=sys.stderr, flush=True)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # the gateway logs one structured line per request itself
        "proxy_headers": False,  # nothing reads the client's address or scheme
        "log_level": log_level,
        "http": BoundedHttpToolsProtocol,  # a request head past MAX_HEAD_BYTES: 431
    }
    if worker is None:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ[_WORKER_ENV] = json.dumps(worker)
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers, **options)


_WORKER_ENV = "LLM_SESSIONS_WORKER"


def worker_app() -> ASGIApp:
    """One worker's app (`serve` with workers): the settings its parent read."""
    given = json.loads(os.environ[_WORKER_ENV])
    configure_logging(given["log_level"])
    settings = settings_from_text(given["config"], str(given["source"]), **given["overrides"])
    return create_app(settings)


def serve_standin(
    host: str, port: int, apis: tuple[str, ...] = ("chat", "messages", "responses")
) -> None:
    """Serve the stand-in upstream (for `apis`) until interrupted."""
    configure_logging("info")
    print(
        f"stand-in upstream on http://{host}:{port}/v1 serving {', '.join(apis)} "
        "(answers any model; no key needed)"
    )
    app = StandIn().app(apis)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


@contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> Iterator[str]:
    """Serve an ASGI app under uvicorn in a background thread; yield its base URL.

    The socket is bound before uvicorn starts (port 0: any free port), so there is no
    window for another process to take the port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    options: dict[str, Any] = {"log_level": "warning", "access_log": False}
    options["http"] = BoundedHttpToolsProtocol
    options.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
