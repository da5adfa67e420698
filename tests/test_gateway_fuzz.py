"""Hypothesis-generated JSON bodies against the chat endpoint: never a 5xx, never an
exception in the log, and a rejected request leaves no session behind."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_helpers import Running, gateway_with_standin

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "", "USER"]) | st.text(max_size=5)
contents = (
    st.none()
    | st.text(max_size=200)
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "x"]), "text": json_values},
            optional={"cache_control": json_values},
        ),
        max_size=3,
    )
    | json_values
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"role": roles, "content": contents},
            optional={"tool_calls": json_values, "cache_control": json_values, "name": json_values},
        ),
        json_values,
    ),
    max_size=5,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": messages},
        optional={
            "model": st.sampled_from(["auto", "", "custom/model"]) | json_values,
            "stream": st.booleans() | json_values,
            "stream_options": json_values,
            "max_tokens": st.integers(-5, 10**7) | json_values,
            "max_completion_tokens": st.integers(-5, 10**7) | json_values,
            "tools": st.lists(json_values, max_size=2) | json_values,
            "temperature": json_values,
        },
    ),
)
session_headers = st.sampled_from([None, b"fuzz-session", b"", b"x" * 257, "caf\u00e9".encode()])


@pytest.fixture(scope="module")
def gw() -> Iterator[Running]:
    with gateway_with_standin(max_session_cost_usd=100.0) as running:
        yield running


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, header=session_headers)
def test_fuzzed_bodies(gw: Running, body: Any, header: bytes | None) -> None:
    errors = Errors()
    logging.getLogger("llm_sessions").addHandler(errors)
    headers = {"x-session-id": header} if header is not None else {}
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            before = len(http.get("/v1/sessions").json()["sessions"])
            r = http.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code < 500, r.text
            assert (
                "error" in r.json()
                if r.status_code >= 400
                and not (isinstance(body, dict) and body.get("stream") is True)
                else True
            )
            if r.status_code >= 400:
                assert r.json()["error"]["message"]
                assert (
                    len(http.get("/v1/sessions").json()["sessions"]) == before
                )  # nothing left behind
    finally:
        logging.getLogger("llm_sessions").removeHandler(errors)
    assert errors.records == []
