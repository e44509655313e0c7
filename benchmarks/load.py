"""A small HTTP/1.1 load generator, run as its own process: `python -m benchmarks.load`.

Keep-alive connections on asyncio streams, each sending one request after the other (closed
loop); prints one JSON line with requests/s, latency percentiles in milliseconds and the
share of a core the generator itself used. Lighter on the CPU than an HTTP client library, so
on a 2-core machine the server keeps most of it; `client_cpu` says how much it did not.

Given several requests (`--request PATH BODY`, repeated), each connection cycles through
them, starting at its own place in the list: a mix of traffic in the list's proportions.

With `--rate R` the load is open-loop instead: requests are sent at R per second in all,
spread evenly over the connections, whatever the answers. Each latency is counted from the
instant its request was due, so an answer that comes late delays the next send of its
connection and is counted against the schedule rather than hidden by it. Errors (an answer
other than 200, a broken connection, no answer within `--timeout`) are counted, not raised,
and the connection is opened again. The JSON line then also has the requests and errors of
each second and the p99 of each `--window` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """The status line of one answer, after reading its headers and body off the stream."""
    status = await reader.readline()
    if not status:
        raise ConnectionError("connection closed")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


@dataclass
class Window:
    """When the closed-loop connections count their requests (`measure_from`, once every
    connection is open) and when they stop."""

    measure_from: float = math.inf
    stop: float = math.inf


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    start: int,
    window: Window,
    out: list[float],
    opened: asyncio.Event | None = None,
):
    """Send one request after the other until `window.stop`, appending to `out` the
    latency of each sent from `window.measure_from` on; set `opened` at the first answer."""
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    turn = start
    try:
        while clock() < window.stop:
            started = clock()
            writer.write(requests[turn % len(requests)])
            turn += 1
            status = await _read_answer(reader)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {status!r}")
            if opened is not None:
                opened.set()
            if started >= window.measure_from:
                out.append(clock() - started)
    finally:
        writer.close()


async def _paced_connection(
    host: str,
    port: int,
    requests: list[bytes],
    start: int,
    due_ts: float,
    interval_s: float,
    stop: float,
    timeout_s: float,
    out: list[tuple[float, float, bool]],
):
    """Send one request every `interval_s` from `due_ts` until `stop`, appending each one's
    (due instant, latency from it, answered 200) to `out`."""
    clock = time.perf_counter
    turn = start
    reader = writer = None
    while due_ts < stop:
        if (wait := due_ts - clock()) > 0:
            await asyncio.sleep(wait)
        request = requests[turn % len(requests)]
        turn += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status = await asyncio.wait_for(_read_answer(reader), timeout_s)
            ok = status.startswith(b"HTTP/1.1 200")
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            ok = False
            if writer is not None:
                writer.close()
            reader = writer = None
        out.append((due_ts, clock() - due_ts, ok))
        due_ts += interval_s
    if writer is not None:
        writer.close()


async def _open(
    host: str, port: int, requests: list[bytes], start: int, window: Window, out: list[float]
) -> asyncio.Task:
    """A `_connection` running as a task, once it has been answered once; raises what it
    raised if it failed before."""
    opened = asyncio.Event()
    loop = asyncio.create_task(_connection(host, port, requests, start, window, out, opened))
    first = asyncio.create_task(opened.wait())
    await asyncio.wait({loop, first}, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        first.cancel()
        loop.result()
    return loop


async def _warm_up(host: str, port: int, requests: list[bytes]) -> None:
    """One connection sending for a second, its latencies not counted."""
    await _connection(host, port, requests, 0, Window(stop=time.perf_counter() + 1.0), [])


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
    await _warm_up(host, int(port), encoded)
    latencies: list[float] = []
    # The connections open one after another, each once the one before has been answered,
    # while those before keep sending: as clients arrive at a busy service. Opened all at
    # once, they may all be accepted by the same one of several service workers (which
    # share one listening socket), and the others would serve none.
    window = Window()
    loops = [
        await _open(host, int(port), encoded, n, window, latencies) for n in range(connections)
    ]
    started = window.measure_from = time.perf_counter()
    cpu_started = time.process_time()
    window.stop = started + seconds
    await asyncio.gather(*loops)
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


async def run_paced(
    url: str,
    requests: list[tuple[str, bytes]],
    rate: float,
    connections: int,
    seconds: float,
    window_s: float = 60.0,
    timeout_s: float = 30.0,
    key: str | None = None,
) -> dict:
    """Send the `(path, body)` requests at `rate` per second in all for `seconds` (after a
    one-second closed-loop warm-up), spread over `connections` connections."""
    host, port = url.removeprefix("http://").split(":")
    encoded = [_request(host, path, body, key) for path, body in requests]
    await _warm_up(host, int(port), encoded)
    records: list[tuple[float, float, bool]] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    stop = started + seconds
    interval_s = connections / rate
    # Each connection starts at its own phase of the interval: sends arrive evenly spaced.
    await asyncio.gather(
        *[
            _paced_connection(
                host,
                int(port),
                encoded,
                n,
                started + n * interval_s / connections,
                interval_s,
                stop,
                timeout_s,
                records,
            )
            for n in range(connections)
        ]
    )
    elapsed = time.perf_counter() - started
    due = np.asarray([record[0] for record in records]) - started
    ms = np.asarray([record[1] for record in records]) * 1e3
    ok = np.asarray([record[2] for record in records], dtype=bool)
    # A send due in the last instant of the run belongs to its last second and window.
    seconds_count = max(int(np.ceil(seconds)), 1)
    windows_count = max(int(np.ceil(seconds / window_s)), 1)
    second = np.clip(due.astype(int), 0, seconds_count - 1)
    window = np.clip((due // window_s).astype(int), 0, windows_count - 1)
    window_p99_ms = [
        float(np.percentile(ms[ok & (window == n)], 99)) if np.any(ok & (window == n)) else None
        for n in range(windows_count)
    ]
    answered = ms[ok]
    return {
        "paths": sorted({path for path, _ in requests}),
        "connections": connections,
        "target_rps": rate,
        "seconds": seconds,
        "requests": len(ms),
        "errors": int((~ok).sum()),
        "rps": len(ms) / elapsed,
        "p50_ms": float(np.percentile(answered, 50)) if len(answered) else None,
        "p99_ms": float(np.percentile(answered, 99)) if len(answered) else None,
        "window_s": window_s,
        "window_p99_ms": window_p99_ms,
        "per_second_requests": np.bincount(second, minlength=seconds_count).tolist(),
        "per_second_errors": np.bincount(second[~ok], minlength=seconds_count).tolist(),
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
    parser.add_argument(
        "--rate", type=float, help="requests per second in all: open-loop instead of closed"
    )
    parser.add_argument("--window", type=float, default=60.0, help="seconds per p99 (open loop)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for an answer (open loop)"
    )
    args = parser.parse_args(argv)
    # The key comes from the environment, not the command line, where others could read it.
    key = os.environ.get("AFTERSALE_KEY")
    requests = [(path, body.encode()) for path, body in args.request]
    if args.rate:
        result = asyncio.run(
            run_paced(
                args.url,
                requests,
                args.rate,
                args.connections,
                args.seconds,
                args.window,
                args.timeout,
                key,
            )
        )
    else:
        result = asyncio.run(run(args.url, requests, args.connections, args.seconds, key))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
