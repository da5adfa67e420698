"""The ``llm-sessions`` command: ``serve`` (the gateway) and ``demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-sessions",
        description="Session state for LLM routers, and a gateway that uses it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument(
        "--config", metavar="FILE", help="TOML configuration (see examples/gateway.toml)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--store", metavar="URL", help="memory:// (default) or redis://host:port/db")
    serve.add_argument(
        "--upstream", metavar="URL", help="the upstream's base URL, e.g. https://api.openai.com/v1"
    )
    serve.add_argument(
        "--api-keys", metavar="FILE", help="only callers with a key from this file (one per line)"
    )
    sub.add_parser(
        "demo", help="run the gateway and a stand-in upstream through a scripted agent conversation"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo()
        return 0
    from .server.run import serve
    from .server.settings import ConfigError, load_settings

    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            store_url=args.store,
            upstream_url=args.upstream,
            api_keys_file=args.api_keys,
        )
    except ConfigError as exc:
        print(f"llm-sessions: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
