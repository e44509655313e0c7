"""A small HTTP/1.1 load generator, run as its own process: `python -m benchmarks.load`.

Keep-alive connections on asyncio streams, each sending one request after the other (closed
loop); prints one JSON line with requests/s and latency percentiles in milliseconds. Lighter
on the CPU than an HTTP client library, so on a 2-core machine the server keeps most of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np


async def _connection(host: str, port: int, request: bytes, stop: float, out: list[float]):
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    try:
        while clock() < stop:
            started = clock()
            writer.write(request)
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


async def run(
    url: str, path: str, body: bytes, connections: int, seconds: float, key: str | None = None
) -> dict:
    """Load `path` for `seconds` (after a one-second warm-up) on `connections` connections,
    with the API key `key` where given."""
    host, port = url.removeprefix("http://").split(":")
    authorization = f"Authorization: Bearer {key}\r\n" if key else ""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{authorization}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    await _connection(host, int(port), request, time.perf_counter() + 1.0, [])
    latencies: list[float] = []
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *[_connection(host, int(port), request, stop, latencies) for _ in range(connections)]
    )
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {
        "path": path,
        "connections": connections,
        "requests": len(ms),
        "rps": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("url", help="http://host:port")
    parser.add_argument("path")
    parser.add_argument("body", help="JSON request body")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    # The key comes from the environment, not the command line, where others could read it.
    key = os.environ.get("AFTERSALE_KEY")
    result = asyncio.run(
        run(args.url, args.path, args.body.encode(), args.connections, args.seconds, key)
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
