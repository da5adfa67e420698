"""The ``llm-sessions`` command: ``serve`` (the gateway), ``demo``, ``standin`` (a stand-in
upstream to try the gateway without an account) and ``config example|check``.

Every failure a user can cause (a bad configuration, a missing extra) is one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources

from . import __version__
from .errors import MissingDependency

__all__ = ["build_parser", "example_config", "main"]

LOG_LEVELS = ("debug", "info", "warning", "error")

SERVE_EPILOG = """\
The configuration is TOML, read and checked once at start-up:
  llm-sessions config example      prints one with every key and its default
  llm-sessions config check FILE   runs the same check as serve
Flags given here override the file's values.

The upstream's API key is never in the file or on the command line: it is read from the
environment variable the file names in upstream.api_key_env (default OPENAI_API_KEY).

Try it without an upstream account:
  llm-sessions standin --port 8081 &
  llm-sessions serve --upstream http://127.0.0.1:8081/v1
"""


def example_config() -> str:
    """The annotated example configuration shipped with the package."""
    return resources.files("llm_sessions.server").joinpath("example.toml").read_text("utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-sessions",
        description="Session state for LLM routers, and a gateway that uses it.",
    )
    parser.add_argument("--version", action="version", version=f"llm-sessions {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gateway: an OpenAI-compatible proxy with sessions",
        description="Run the gateway in front of an OpenAI-compatible upstream.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", metavar="FILE", help="the TOML configuration file")
    serve.add_argument("--host", help="address to listen on (server.host, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port, default 8080)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help="where sessions live (store.url): memory:// (default), redis://host:6379/0, "
        "rediss://..., unix://..., redis+cluster://host:port[,host:port...] or "
        "redis+sentinel://host:port[,host:port...]/service_name[/db]",
    )
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="the upstream's base URL (upstream.base_url), e.g. https://api.openai.com/v1",
    )
    serve.add_argument(
        "--api-keys",
        metavar="FILE",
        help="accept only callers whose bearer key is in FILE, one per line (server.api_keys_file)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the port (server.workers, default 1; more needs a Redis store)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="the gateway's own logs (one JSON line per request at info); other "
        "libraries log warnings only (default: info)",
    )

    demo = sub.add_parser(
        "demo",
        help="run the gateway and a stand-in upstream through a scripted agent conversation",
        description="Start the gateway and a stand-in upstream on loopback ports and drive a "
        "scripted agent conversation through them, one table row per turn.",
    )
    demo.add_argument(
        "--watch",
        action="store_true",
        help="serve the demo's gateway on --port with a key, wait for the operator console "
        "(/ui) to open, play the conversation at a pace to follow there, keep serving",
    )
    demo.add_argument("--port", type=int, default=8080, help="with --watch (default 8080)")
    demo.add_argument(
        "--pace", type=float, default=1.5, metavar="SECONDS",
        help="with --watch: the pause before each turn (default 1.5)",
    )  # fmt: skip

    standin = sub.add_parser(
        "standin",
        help="run a stand-in OpenAI-compatible upstream (no account needed)",
        description="A stand-in upstream that answers chat completions (streamed or not, "
        "with usage) without any model, to try the gateway against.",
    )
    standin.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    standin.add_argument("--port", type=int, default=8081, help="default 8081")
    standin.add_argument(
        "--apis",
        default="chat,messages,responses",
        help="the APIs it serves, comma-separated (default chat,messages,responses): one "
        "alone makes an upstream of that API, to try translation against",
    )

    config = sub.add_parser("config", help="print the example configuration, or check a file")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("example", help="print the example configuration (every key)")
    check = config_sub.add_parser(
        "check", help="check a configuration as serve would: exit 0 if it is valid, else 2"
    )
    check.add_argument("file", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except MissingDependency as exc:
        print(f"llm-sessions: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "config" and args.config_command == "example":
        sys.stdout.write(example_config())
        return 0
    from .server.settings import ConfigError, load_settings

    if args.command == "config":
        try:
            load_settings(args.file)
        except ConfigError as exc:
            print(f"llm-sessions: {exc}", file=sys.stderr)
            return 2
        print(f"{args.file}: ok")
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(watch=args.watch, port=args.port, pace_s=args.pace)
        return 0
    if args.command == "standin":
        from .server.run import serve_standin

        apis = tuple(a.strip() for a in args.apis.split(",") if a.strip())
        serve_standin(args.host, args.port, apis)
        return 0
    from .server.run import serve

    overrides = {
        "host": args.host,
        "port": args.port,
        "store_url": args.store,
        "upstream_url": args.upstream,
        "api_keys_file": args.api_keys,
        "workers": args.workers,
    }
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"llm-sessions: {exc}", file=sys.stderr)
        return 2
    serve(settings, config_path=args.config, log_level=args.log_level, overrides=overrides)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
