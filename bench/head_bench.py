"""A header flood against the gateway, with its request-head bound and without it.

    python bench/head_bench.py [--mb N]

Serves the gateway (in this process, under uvicorn, in front of the stand-in) first with
uvicorn's own httptools protocol, then with `BoundedHttpToolsProtocol`, and sends each one
request whose single header is N MB (default 64). Reported: the answer's status line and
the CPU seconds this process spent until the answer came (the gateway's thread does the
parsing), and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import time
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from gateway_helpers import gateway_with_standin
from llm_sessions.server import run
from llm_sessions.server.protocol import BoundedHttpToolsProtocol


def flood(megabytes: int) -> tuple[bytes, float]:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: "
    head += b"a" * (megabytes << 20) + b"\r\n\r\n"
    with gateway_with_standin() as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        started = time.process_time()
        answer = b""
        with socket.create_connection((host, int(port)), timeout=300) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head)
            with contextlib.suppress(OSError):
                answer = sock.recv(100)
        return answer.split(b"\r\n")[0], time.process_time() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64, help="the header's size in MB")
    args = ap.parse_args()
    results = {}
    for name, protocol in (("unbounded", HttpToolsProtocol), ("bounded", BoundedHttpToolsProtocol)):
        run.BoundedHttpToolsProtocol = protocol  # type: ignore[misc]  # what running() serves with
        results[name] = flood(args.mb)
        print(f"{name:10} {results[name][0].decode()!r:50} CPU {results[name][1]:.3f} s")
    ratio = results["unbounded"][1] / max(results["bounded"][1], 1e-6)
    print(f"unbounded / bounded CPU: {ratio:.0f}x")


if __name__ == "__main__":
    main()
