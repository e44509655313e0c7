"""A small HTTP/1.1 load generator, run as its own process: `python -m benchmarks.load`.

Keep-alive connections on asyncio streams, each sending one request after the other (closed
loop); prints one JSON line with requests/s, latency percentiles in milliseconds and the
share of a core the generator itself used. Lighter on the CPU than an HTTP client library, so
on a 2-core machine the server keeps most of it; `client_cpu` says how much it did not.

Given several requests (`--request PATH BODY`, repeated), each connection cycles through
them, starting at its own place in the list: a mix of traffic in the list's proportions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np


async def _connection(
    host: str, port: int, requests: list[bytes], start: int, stop: float, out: list[float]
):
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    turn = start
    try:
        while clock() < stop:
            started = clock()
            writer.write(requests[turn % len(requests)])
            turn += 1
            length = 0
            status = await reader.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {status!r}")
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.append(clock() - started)
    finally:
        writer.close()


def _request(host: str, path: str, body: bytes, key: str | None) -> bytes:
    authorization = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{authorization}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def run(
    url: str,
    requests: list[tuple[str, bytes]],
    connections: int,
    seconds: float,
    key: str | None = None,
) -> dict:
    """Load the `(path, body)` requests for `seconds` (after a one-second warm-up) on
    `connections` connections, with the API key `key` where given."""
    host, port = url.removeprefix("http://").split(":")
    encoded = [_request(host, path, body, key) for path, body in requests]
    await _connection(host, int(port), encoded, 0, time.perf_counter() + 1.0, [])
    latencies: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    stop = started + seconds
    await asyncio.gather(
        *[_connection(host, int(port), encoded, n, stop, latencies) for n in range(connections)]
    )
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {
        "paths": sorted({path for path, _ in requests}),
        "connections": connections,
        "requests": len(ms),
        "rps": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        # The generator's own CPU, in cores: near 1 means it, not the server, may be the limit.
        "client_cpu": (time.process_time() - cpu_started) / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("url", help="http://host:port")
    parser.add_argument(
        "--request",
        nargs=2,
        action="append",
        metavar=("PATH", "BODY"),
        required=True,
        help="a route and its JSON body; repeat for a mix",
    )
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    # The key comes from the environment, not the command line, where others could read it.
    key = os.environ.get("AFTERSALE_KEY")
    requests = [(path, body.encode()) for path, body in args.request]
    result = asyncio.run(run(args.url, requests, args.connections, args.seconds, key))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
