"""The ``llm-sessions`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-sessions", description="Session state for LLM routers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a scripted agent conversation and print each turn")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .store_demo import run_store_demo

        run_store_demo()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
