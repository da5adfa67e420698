"""Under a cap, every request's worst case is priced: an explicit model without a price
(any id the upstream would accept) is refused with a 400 naming `pricing`, before a
session or an upstream sees it, on every API; without a cap it is served."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_helpers import gateway_with_standin

HI = [{"role": "user", "content": "hi"}]
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": HI}),
    "messages": ("/v1/messages", {"max_tokens": 20, "messages": HI}),
    "responses": ("/v1/responses", {"input": "hi"}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", list(BODIES))
def test_an_unpriced_explicit_model_is_refused_under_a_cap(api: str, stream: bool) -> None:
    path, body = BODIES[api]
    with gateway_with_standin(max_session_cost_usd=1.0) as gw, gw.http() as http:
        reply = http.post(
            path, json={**body, "model": "x/unpriced", "stream": stream},
            headers={"x-session-id": "s"},
        )  # fmt: skip
        listed = http.get("/v1/sessions").json()["sessions"]
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "pricing" in error["message"]
    assert gw.standin.received == []
    assert listed == []


def test_without_a_cap_an_unpriced_model_is_served() -> None:
    path, body = BODIES["chat"]
    with gateway_with_standin() as gw, gw.http() as http:
        reply = http.post(path, json={**body, "model": "x/unpriced"})
    assert reply.status_code == 200
