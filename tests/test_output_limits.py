"""Under a cap, the output a request reserves is the output it may generate: a request
that sets no limit is forwarded with the reserved one, in its API's own field; a limit the
client set is forwarded as it is; without a cap nothing is added."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_helpers import gateway_with_standin

HI = [{"role": "user", "content": "hi"}]
# (path, body without a limit, the field the API limits output with)
APIS: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat": ("/v1/chat/completions", {"model": "auto", "messages": HI}, "max_completion_tokens"),
    "responses": ("/v1/responses", {"model": "auto", "input": "hi"}, "max_output_tokens"),
}
LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", list(APIS))
def test_the_reserved_output_limit_is_forwarded(api: str, stream: bool, store_url: str) -> None:
    path, body, field = APIS[api]
    with (
        gateway_with_standin(store_url=store_url, max_session_cost_usd=10.0,
                             default_max_tokens=321) as gw,
        gw.http() as http,
    ):  # fmt: skip
        assert http.post(path, json={**body, "stream": stream}).status_code == 200
        assert http.post(path, json={**body, "stream": stream, field: 50}).status_code == 200
    unset, given = gw.standin.received
    assert {k: unset.get(k) for k in LIMITS if k in unset} == {field: 321}
    assert {k: given.get(k) for k in LIMITS if k in given} == {field: 50}


@pytest.mark.parametrize("api", list(APIS))
def test_without_a_cap_no_limit_is_added(api: str) -> None:
    path, body, _ = APIS[api]
    with gateway_with_standin(default_max_tokens=321) as gw, gw.http() as http:
        assert http.post(path, json=body).status_code == 200
    assert not [k for k in LIMITS if k in gw.standin.received[0]]


def test_a_chat_request_limited_by_max_tokens_keeps_it() -> None:
    path, body, _ = APIS["chat"]
    with (
        gateway_with_standin(max_session_cost_usd=10.0, default_max_tokens=321) as gw,
        gw.http() as http,
    ):
        assert http.post(path, json={**body, "max_tokens": 40}).status_code == 200
    sent = gw.standin.received[0]
    assert (sent["max_tokens"], "max_completion_tokens" in sent) == (40, False)
