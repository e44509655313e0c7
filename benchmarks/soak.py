"""Soak: the mixed traffic held at 70% of its highest sustained throughput for ten minutes.

Targets (issue: load and faults, soak), on the served business of `benchmarks.serving` with
one service worker:
- Zero errors: every request answered 200 (another status, a broken connection or no answer
  within 30 s is an error).
- The p99 latency of the last minute within 20% of the first minute's.
- The service's resident memory (the worker and the `bentoml serve` process above it) grows
  by no more than 10% from the start of the soak to its end.

The highest throughput comes first, closed-loop at 8 and 16 connections as the serving
benchmark measures it (which also warms the service). The soak is then open-loop: the mix is
sent at 70% of that rate over 16 connections whatever the answers, and each latency counts
from the instant its request was due (`benchmarks.load --rate`). Resident memory is sampled
every 5 s, the first sample after the load's one-second warm-up. `--soak-seconds` sets the
length; under four minutes the first and last "minute" are each a quarter of it.
`--customers` does not apply: the service runs on `SERVE_CUSTOMERS` customers, as for the
serving benchmark. The figures, with the per-second counts and the memory samples, go to
`<out>/soak/soak.json`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import psutil

from benchmarks.serving import (
    Server,
    highest_mixed,
    load_result,
    mixed_requests,
    route_requests,
    served_data,
    served_env,
    start_load,
)

SOAK_SECONDS = 600.0
LOAD_SHARE = 0.70
P99_GROWTH_TARGET = 0.20
RSS_GROWTH_TARGET = 0.10
SOAK_CONNECTIONS = 16
RSS_EVERY_S = 5.0
PROGRESS_EVERY_S = 60.0


def resident_bytes(pid: int) -> int:
    """The resident memory of process `pid` and every process below it."""
    parent = psutil.Process(pid)
    total = 0
    for process in [parent, *parent.children(recursive=True)]:
        # A worker that exits between the listing and the reading holds no memory.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


class MemorySampler:
    """Samples the resident memory of a process tree every `every_s` seconds in a thread,
    from `every_s` after entering, and once more on leaving; prints a line every
    `PROGRESS_EVERY_S`."""

    def __init__(self, pid: int, every_s: float, seconds: float) -> None:
        self.pid = pid
        self.every_s = every_s
        self.seconds = seconds
        self.samples: list[tuple[float, int]] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        shown = 0.0
        while not self._stop.wait(self.every_s):
            elapsed_s = time.monotonic() - self._started
            self.samples.append((round(elapsed_s, 1), resident_bytes(self.pid)))
            if elapsed_s - shown >= PROGRESS_EVERY_S:
                shown = elapsed_s
                print(
                    f"  soak {elapsed_s:.0f}/{self.seconds:.0f} s, service resident memory "
                    f"{self.samples[-1][1] / 2**20:.0f} MiB",
                    flush=True,
                )

    def __enter__(self) -> MemorySampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        # The last sample is the end of the soak, however its length divides by `every_s`.
        self.samples.append((round(time.monotonic() - self._started, 1), resident_bytes(self.pid)))


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def soak_figures(highest: dict, held: dict, samples: list[tuple[float, int]]) -> dict:
    """The soak's figures and whether each meets its target."""
    first_p99_ms, last_p99_ms = held["window_p99_ms"][0], held["window_p99_ms"][-1]
    p99_ratio = last_p99_ms / first_p99_ms if first_p99_ms and last_p99_ms else None
    start_bytes, end_bytes = samples[0][1], samples[-1][1]
    rss_growth = end_bytes / start_bytes - 1
    return {
        "highest_rps": highest["rps"],
        "highest_connections": highest["connections"],
        "target_rps": held["target_rps"],
        "achieved_rps": held["rps"],
        "seconds": held["seconds"],
        "window_s": held["window_s"],
        "requests": held["requests"],
        "errors": held["errors"],
        "p50_ms": held["p50_ms"],
        "p99_ms": held["p99_ms"],
        "first_p99_ms": first_p99_ms,
        "last_p99_ms": last_p99_ms,
        "p99_ratio": p99_ratio,
        "rss_start_bytes": start_bytes,
        "rss_end_bytes": end_bytes,
        "rss_peak_bytes": max(rss for _, rss in samples),
        "rss_growth": rss_growth,
        "client_cpu": held["client_cpu"],
        "pass": {
            "errors": held["errors"] == 0,
            "p99": p99_ratio is not None and p99_ratio <= 1 + P99_GROWTH_TARGET,
            "rss": rss_growth <= RSS_GROWTH_TARGET,
        },
        "window_p99_ms": held["window_p99_ms"],
        "per_second_requests": held["per_second_requests"],
        "per_second_errors": held["per_second_errors"],
        "rss_samples": [{"s": elapsed_s, "bytes": rss} for elapsed_s, rss in samples],
    }


def _print_figures(figures: dict) -> None:
    mib = 2**20
    window = f"{figures['window_s']:.0f} s"
    ratio = figures["p99_ratio"]
    passed = figures["pass"]
    print(f"  {'figure':<38} {'value':>22}  target")
    rows = [
        ("highest mixed throughput (closed loop)", f"{figures['highest_rps']:.0f} req/s", ""),
        (f"target rate ({LOAD_SHARE:.0%})", f"{figures['target_rps']:.0f} req/s", ""),
        ("achieved rate", f"{figures['achieved_rps']:.0f} req/s", ""),
        ("requests sent", f"{figures['requests']:,}", ""),
        ("errors", f"{figures['errors']:,}", f"0 {_mark(passed['errors'])}"),
        (f"p99, first {window}", f"{figures['first_p99_ms']:.2f} ms", ""),
        (f"p99, last {window}", f"{figures['last_p99_ms']:.2f} ms", ""),
        (
            "p99 last / first",
            f"{ratio:.2f}" if ratio is not None else "n/a",
            f"<= {1 + P99_GROWTH_TARGET:.2f} {_mark(passed['p99'])}",
        ),
        ("resident memory at start", f"{figures['rss_start_bytes'] / mib:.0f} MiB", ""),
        ("resident memory at end", f"{figures['rss_end_bytes'] / mib:.0f} MiB", ""),
        (
            "resident memory growth",
            f"{figures['rss_growth']:+.1%}",
            f"<= {RSS_GROWTH_TARGET:.0%} {_mark(passed['rss'])}",
        ),
    ]
    for label, value, target in rows:
        print(f"  {label:<38} {value:>22}  {target}")
    print(f"  load generator CPU: {figures['client_cpu']:.0%} of a core")


def bench_soak(customers: int, out: Path, seconds: float = SOAK_SECONDS) -> None:
    window_s = min(60.0, seconds / 4)
    print(
        f"\n## soak: mixed traffic at {LOAD_SHARE:.0%} of its highest throughput for "
        f"{seconds:.0f} s (one worker; first and last {window_s:.0f} s compared)"
    )
    folder = served_data(out)
    env, as_of = served_env(folder)
    ask = route_requests(folder, as_of)
    with Server("serving.service:Aftersale", "aftersale", env) as served:
        mix = mixed_requests(ask, served.url)
        highest = highest_mixed(served, mix)
        rate = LOAD_SHARE * highest["rps"]
        print(
            f"  highest throughput {highest['rps']:.0f} req/s at {highest['connections']} "
            f"connections; holding {rate:.0f} req/s"
        )
        options = ("--rate", f"{rate:.1f}", "--connections", str(SOAK_CONNECTIONS))
        options += ("--seconds", str(seconds), "--window", str(window_s))
        load = start_load(served.url, mix, *options)
        with MemorySampler(served.process.pid, RSS_EVERY_S, seconds) as sampler:
            held = load_result(load)
    figures = soak_figures(highest, held, sampler.samples)
    _print_figures(figures)
    folder = out / "soak"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "soak.json"
    path.write_text(json.dumps(figures, indent=1))
    print(f"  figures: {path}")
