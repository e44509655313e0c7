"""A throwaway redis-server on a free loopback port, for tests and benchmarks of the Redis
online store. Production points `AFTERSALE_REDIS_CONNECTION` at a managed server instead."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def throwaway_redis(start_timeout_s: float = 10.0) -> Iterator[str | None]:
    """Start `redis-server` without persistence; yield "127.0.0.1:PORT", or None when the
    binary is not installed. The server is stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"redis-server did not listen on port {port}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
