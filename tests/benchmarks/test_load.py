"""The load generator opens its connections one after another, each once the one before has
been answered, while those before keep sending, and counts only what every open connection
sends; and two server processes on one listening socket, as a service's workers share it,
both serve its load."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import socket
import time

from benchmarks.load import run

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _answer_each(reader, writer, on_request) -> None:
    """Answer every request of one connection, calling `on_request()` before each answer."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        on_request()
        writer.write(ANSWER)
        await writer.drain()


def test_connections_open_in_turn_and_all_of_them_are_measured() -> None:
    opened: list[float] = []
    answered: dict[int, list[float]] = {}

    async def main() -> dict:
        async def handle(reader, writer) -> None:
            number = len(opened)
            opened.append(time.perf_counter())
            answered[number] = []
            try:
                await _answer_each(
                    reader, writer, lambda: answered[number].append(time.perf_counter())
                )
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await run(f"http://127.0.0.1:{port}", [("/x", b"{}")], 4, 0.5)

    result = asyncio.run(main())
    # The warm-up's connection first, then the measured four, each opened after the one
    # before it had its first answer.
    measured = list(range(1, 5))
    assert len(opened) == 5
    for before, after in itertools.pairwise(measured):
        assert opened[after] > answered[before][0]
    # Counted: what was sent once the last one was open, by every one of them.
    last_open = opened[4]
    after_open = [sum(t > last_open for t in answered[n]) for n in measured]
    assert min(after_open) > 0
    assert 0 < result["requests"] <= sum(after_open)
    assert result["connections"] == 4


def _serve(sock: socket.socket, served: multiprocessing.Queue) -> None:
    """One server process on the shared socket, a service's worker: each answer takes it
    2 ms of CPU, and its pid goes to the queue."""

    def work() -> None:
        until = time.perf_counter() + 0.002
        while time.perf_counter() < until:
            pass
        served.put(os.getpid())

    async def main() -> None:
        async def handle(reader, writer) -> None:
            try:
                await _answer_each(reader, writer, work)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def test_two_processes_sharing_a_socket_both_serve_the_load() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    context = multiprocessing.get_context("fork")
    served = context.Queue()
    workers = [context.Process(target=_serve, args=(sock, served), daemon=True) for _ in (1, 2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        asyncio.run(run(f"http://127.0.0.1:{port}", [("/x", b"{}")], 8, 1.0))
        pids = set()
        while not served.empty():
            pids.add(served.get())
    finally:
        for worker in workers:
            worker.kill()
        sock.close()
    assert pids == {w.pid for w in workers}
