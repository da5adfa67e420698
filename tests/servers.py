"""Servers the tests start on loopback: the package's own background runner."""

from llm_sessions.server.run import running as serve

__all__ = ["serve"]
