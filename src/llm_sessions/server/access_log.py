"""The access log: one JSON line per request (logger ``llm_sessions.access``), with the
response metrics counted beside it. A request's handler fills its `record` as it learns
(session, source, reason, model, tier, cost...) and logs it once, when it is answered (a
stream: when it ends)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..records import format_usd
from .metrics import Metrics

__all__ = ["MAX_LOG_FIELD", "cap", "log_request"]

log = logging.getLogger("llm_sessions.access")

MAX_LOG_FIELD = 256  # characters of any one string field of a log line


def cap(value: Any) -> Any:
    """A log field, cut to `MAX_LOG_FIELD` characters when it is a string."""
    if isinstance(value, str) and len(value) > MAX_LOG_FIELD:
        return value[:MAX_LOG_FIELD] + "..."
    return value


def log_request(metrics: Metrics, record: dict[str, Any], status: int, started: float) -> None:
    """Count the response and its latency, and write its access-log line."""
    metrics.responses.labels(str(status)).inc()
    latency = time.perf_counter() - started
    metrics.latency.labels("true" if record.get("stream") else "false").observe(latency)
    if not log.isEnabledFor(logging.INFO):
        return
    line = {
        "event": "chat",
        "session": cap(record.get("session")),
        "source": record.get("source"),
        "api": record.get("api"),
        "reason": record.get("reason"),
        "model": cap(record.get("model")),
        "tier": record.get("tier"),
        "status": status,
        "stream": record.get("stream", False),
        "latency_ms": round(latency * 1000, 1),
        "cost_usd": format_usd(record.get("cost", 0)),
    }
    for optional in ("complete", "output_limit", "translated", "dropped_tools"):
        if optional in record:
            line[optional] = record[optional]
    if "request_id" in record:
        line["request_id"] = record["request_id"]
    log.info(json.dumps(line))
