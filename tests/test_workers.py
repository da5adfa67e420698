"""`llm-sessions serve --workers N`: N processes on one port, sharing sessions through Redis;
refused on the memory store; a graceful restart (SIGHUP) keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway_helpers import ONE_MODEL_PRICE, ONE_MODEL_TOML, wait_until_up
from llm_sessions import token_usage
from llm_sessions.server.run import running
from llm_sessions.server.standin import StandIn

from redis_server import free_port


def workers_of(parent: int) -> set[int]:
    """The serving processes under uvicorn's supervisor `parent` (not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@contextmanager
def serve(
    tmp_path: Path, store: str, workers: int, standin: StandIn | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`llm-sessions serve --workers N` in front of `standin` (a new one by default)."""
    standin = standin or StandIn()
    with running(standin.app()) as upstream:
        config = tmp_path / "gateway.toml"
        config.write_text(ONE_MODEL_TOML.format(upstream=upstream, store=store, extra=""))
        port = free_port()
        log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_sessions", "serve", "--config", str(config),
             "--port", str(port), "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OPENAI_API_KEY": "sk-x"},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/health", proc)
            deadline = time.monotonic() + 30
            while len(workers_of(proc.pid)) < workers:  # every worker up, not just the first
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                time.sleep(0.05)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def test_more_than_one_worker_on_the_memory_store_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_sessions", "serve", "--workers", "2", "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "server.workers = 2 needs a Redis store" in done.stderr


def _chat(http: httpx.Client, session: str, i: int) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": f"turn {i}"}]}
    return http.post("/v1/chat/completions", json=body, headers={"x-session-id": session})


def test_workers_share_the_port_and_the_sessions(tmp_path: Path, redis_url: str) -> None:
    """Two workers each serve part of 300 requests on 6 sessions; every session's cost is
    exactly the sum of its answers' usage, whichever worker served each."""
    with serve(tmp_path, redis_url, 2) as (url, proc):
        pids = workers_of(proc.pid)
        before = {pid: cpu_ticks(pid) for pid in pids}

        def one(i: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as http:  # a connection each
                return _chat(http, f"s{i % 6}", i)

        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(one, range(300)))
        assert [r.status_code for r in replies] == [200] * 300
        worked = {pid for pid in pids if cpu_ticks(pid) - before[pid] >= 10}
        assert worked == pids, "a worker served nothing"  # 10 ticks: 0.1 s of CPU each
        with httpx.Client(base_url=url, timeout=30) as http:
            for s in range(6):
                session = http.get(f"/v1/sessions/s{s}").json()
                mine = [r for i, r in enumerate(replies) if i % 6 == s]
                assert session["request_count"] == len(mine) == 50
                billed = sum(
                    ONE_MODEL_PRICE.usage_micros(token_usage(r.json()["usage"])) for r in mine
                )
                assert session["session_cost_micros"] == billed


def test_a_graceful_restart_keeps_serving(tmp_path: Path, redis_url: str) -> None:
    """SIGHUP replaces each worker in turn, the new one serving before the old one stops:
    the official SDK's requests sent all along, on keep-alive connections, are all
    answered, and each reached the upstream once. (An idle keep-alive connection the old
    worker closes as a request goes out on it is the HTTP/1.1 race every server has: the
    request was never read, and the SDKs send it again, as they do by default.)"""
    standin = StandIn()
    with serve(tmp_path, redis_url, 2, standin) as (url, proc):
        old = workers_of(proc.pid)
        stop = threading.Event()
        outcomes: list[str] = []

        def load() -> None:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-w", timeout=30)
            with client:
                i = 0
                while not stop.is_set():
                    try:
                        client.chat.completions.create(
                            model="auto", messages=[{"role": "user", "content": f"r{i}"}],
                            extra_headers={"x-session-id": "restart"},
                        )  # fmt: skip
                        outcomes.append("ok")
                    except openai.OpenAIError as exc:
                        outcomes.append(type(exc).__name__)
                    i += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not (len(workers_of(proc.pid)) == 2 and not workers_of(proc.pid) & old):
            assert time.monotonic() < deadline, "the workers were not replaced"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=url) as http:
            session = http.get("/v1/sessions/restart", headers={"authorization": "Bearer sk-w"})
    assert len(outcomes) > 50
    assert set(outcomes) == {"ok"}, [o for o in outcomes if o != "ok"][:5]
    assert len(standin.received) == len(outcomes)  # none served twice
    assert session.json()["request_count"] == len(outcomes)


@pytest.mark.parametrize("kind", ["redis-cluster", "redis-sentinel"])
def test_workers_on_a_cluster_or_behind_sentinel(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind.replace('-', '_')}_url")
    with serve(tmp_path, url, 2) as (gateway, _), httpx.Client(base_url=gateway) as http:
        replies = [_chat(http, "shared", i) for i in range(20)]
        session = http.get("/v1/sessions/shared").json()
    assert [r.status_code for r in replies] == [200] * 20
    assert session["request_count"] == 20


def test_workers_take_only_settings_they_can_read_again(tmp_path: Path) -> None:
    """Each worker reads the config and command line again: settings made otherwise would
    be silently replaced by those, so `serve` refuses them (before it prints anything)."""
    from dataclasses import replace

    from llm_sessions.server.run import serve
    from llm_sessions.server.settings import load_settings

    path = tmp_path / "gateway.toml"
    path.write_text('[store]\nurl = "redis://127.0.0.1:1/0"\n[server]\nworkers = 2\n')
    read = load_settings(path, port=9999)
    with pytest.raises(ValueError, match="workers > 1"):
        serve(replace(read, port=1), config_path=str(path), overrides={"port": 9999})
